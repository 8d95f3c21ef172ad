"""head-only with the logistic solver: the regression written into the classifier layer, C chosen on
validation, and the feature cache shared by runs of the same model and texts."""

from __future__ import annotations

import numpy as np
import pytest

from textxfer.transformer import head_fit
from textxfer.data.dataset import DataOptions, load_data
from textxfer.transformer.pipeline import FinetuneClassifier


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from conftest import make_rows, write_csv

    return load_data(DataOptions(data=str(write_csv(tmp_path_factory.mktemp("hf") / "r.csv", make_rows()))))


@pytest.mark.parametrize("classes,present", [(2, [0, 1]), (3, [0, 1, 2]), (3, [0, 2])])
def test_linear_weights_reproduce_the_regression(classes, present):
    from scipy.special import softmax
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 5)) * [1, 10, 0.1, 3, 1] + 4
    y = rng.choice(present, size=90)
    mean, scale = x.mean(0), x.std(0)
    model = LogisticRegression(C=0.5, max_iter=2000).fit((x - mean) / scale, y)
    weight, bias = head_fit.linear_weights(model, mean, scale, classes)
    probabilities = softmax(x @ weight.T + bias, axis=1)
    np.testing.assert_allclose(probabilities[:, present], model.predict_proba((x - mean) / scale), atol=1e-9)
    absent = [c for c in range(classes) if c not in present]
    assert probabilities[:, absent].max(initial=0) < 1e-9


def test_c_is_chosen_on_validation_and_ties_go_to_the_stronger_regularisation():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 4))
    y = (x[:, 0] + 0.3 * rng.normal(size=200) > 0).astype(int)
    c, scores, how = head_fit.choose_c(x[:120], y[:120], x[120:], y[120:], 2, False, 0)
    best = max(s["validation_macro_f1"] for s in scores)
    assert how == "validation macro-F1" and len(scores) == len(head_fit.C_GRID)
    assert c == min(s["C"] for s in scores if s["validation_macro_f1"] == best)
    assert best > 0.85  # a separable signal is found
    c_cv, scores_cv, how_cv = head_fit.choose_c(x[:120], y[:120], None, None, 2, False, 0)
    assert "5-fold" in how_cv and c_cv in head_fit.C_GRID and len(scores_cv) == len(head_fit.C_GRID)
    assert head_fit.choose_c(x[:3], np.array([0, 1, 1]), None, None, 2, False, 0)[0] == 1.0


def test_head_only_writes_the_regression_into_the_classifier_layer(tmp_path, data, tiny_config):
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    from textxfer.transformer import training
    from textxfer.classifier import load

    tiny_config.strategy, tiny_config.feature_cache = "head-only", str(tmp_path / "cache")
    model = FinetuneClassifier(tiny_config).fit(data.train, data.validation, labels=data.labels)
    fit = model.fit_stats_["head_fit"]
    assert fit["chosen_by"] == "validation macro-F1" and model.fit_stats_["steps"] == 0
    # Refit independently with scikit-learn on the same frozen features (what the classifier layer receives):
    # standardised by the training texts, L2 logistic regression (lbfgs, max_iter 3000), C chosen as the first
    # best validation macro-F1 over the grid.
    layer = model.model_.classifier
    train_x, validation_x, test_x = (training.classifier_inputs(model, split.texts, layer).astype(np.float64)
                                     for split in (data.train, data.validation, data.test))
    mean, scale = train_x.mean(0), train_x.std(0)
    scale[scale == 0] = 1.0
    standard = lambda x: (x - mean) / scale  # noqa: E731
    y_train, y_validation = (np.asarray(data.labels.encode(split.labels)) for split in (data.train, data.validation))
    f1 = {}
    for c in np.logspace(-4, 2, 13):
        predicted = LogisticRegression(C=c, max_iter=3000, random_state=tiny_config.seed).fit(
            standard(train_x), y_train).predict(standard(validation_x))
        f1[float(c)] = f1_score(y_validation, predicted, average="macro", labels=[0, 1], zero_division=0)
    best_c = next(c for c, v in f1.items() if v == max(f1.values()))
    assert fit["C"] == pytest.approx(best_c)
    assert [s["validation_macro_f1"] for s in fit["grid"]] == pytest.approx(list(f1.values()), abs=1e-6)
    reference = LogisticRegression(C=best_c, max_iter=3000, random_state=tiny_config.seed).fit(standard(train_x), y_train)
    # The model's own predictions are that regression's on the frozen features (up to the float32 layer the
    # standardisation is folded into: ~1e-3 here; the neighbouring grid values of C differ by ~0.1).
    np.testing.assert_allclose(model.raw_proba(data.test.texts), reference.predict_proba(standard(test_x)), atol=3e-3)
    assert model.fit_stats_["best_validation_macro_f1"] == pytest.approx(max(f1.values()), abs=1e-6)
    model.write(tmp_path / "saved")
    again = load(tmp_path / "saved")
    np.testing.assert_allclose(again.predict_proba(data.test.texts), model.predict_proba(data.test.texts), atol=1e-6)
    assert isinstance(model.model_.classifier, torch.nn.Linear)


def test_the_feature_cache_is_reused_only_for_the_same_texts_and_model(tmp_path, data, tiny_config, monkeypatch):
    from textxfer.transformer import feature_cache

    tiny_config.strategy, tiny_config.feature_cache = "head-only", str(tmp_path / "cache")
    tiny_config.calibration = "none"  # no pass over validation after training: every encoding seen is the cache's
    first = FinetuneClassifier(tiny_config).fit(data.train, data.validation, labels=data.labels)
    files = sorted((tmp_path / "cache").glob("*.safetensors"))
    assert len(files) == 2  # training and validation features
    encoded = []
    original = FinetuneClassifier.batches
    monkeypatch.setattr(FinetuneClassifier, "batches", lambda self, texts: encoded.append(len(texts)) or original(self, texts))
    second = FinetuneClassifier(tiny_config).fit(data.train, data.validation, labels=data.labels)
    assert encoded == []  # both read from the cache
    np.testing.assert_array_equal(second.model_.classifier.weight.detach().numpy(),
                                  first.model_.classifier.weight.detach().numpy())
    files[0].write_bytes(b"cut off")  # a damaged entry is recomputed, not trusted
    FinetuneClassifier(tiny_config).fit(data.train, data.validation, labels=data.labels)
    assert len(encoded) == 1
    shorter = data.train.texts[:-1]
    assert feature_cache.key(first, shorter, first.model_.classifier) != feature_cache.key(
        first, data.train.texts, first.model_.classifier)
    same = feature_cache.key(first, data.train.texts, first.model_.classifier)
    first.precision_ = "bf16"  # features computed in bf16 on a GPU are another entry
    assert feature_cache.key(first, data.train.texts, first.model_.classifier) != same
