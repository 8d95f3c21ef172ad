"""Mean pooling: chosen for sentence-embedding encoders, padding-proof, saved and restored, exported."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import make_rows
from textxfer.transformer import pooling
from textxfer.data.dataset import DataOptions, load_data
from textxfer.errors import TextxferError
from textxfer.transformer.pipeline import FinetuneClassifier


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from conftest import write_csv

    return load_data(DataOptions(data=str(write_csv(tmp_path_factory.mktemp("pool") / "r.csv", make_rows()))))


@pytest.fixture(scope="module")
def mean_model(tmp_path_factory, tiny_bert, data):
    from textxfer.transformer.pipeline import FinetuneConfig

    config = FinetuneConfig(model=str(tiny_bert), strategy="full", epochs=5, learning_rate=3e-3, batch_size=8,
                            eval_batch_size=32, logging_steps=1000, early_stopping=0, warmup=0.0, min_steps=0,
                            pooling="mean", checkpoint_dir=str(tmp_path_factory.mktemp("ck")))
    model = FinetuneClassifier(config)
    from textxfer.transformer.models import load_for_training

    fresh = load_for_training(config.model, _labels())[1]
    before = {n: p.detach().clone() for n, p in fresh.named_parameters() if ".pooler." in f".{n}"}
    model.fit(data.train, data.validation, labels=data.labels)
    model.pooler_before_ = before
    return model


def _labels():
    from textxfer.data.labels import LabelSet

    return LabelSet.from_labels([label for _, label in make_rows()])


def _sentence_folder(tiny_bert, tmp_path, settings: dict | None):
    folder = tmp_path / "sentence-model"
    shutil.copytree(tiny_bert, folder)
    if settings is not None:
        (folder / "1_Pooling").mkdir()
        (folder / "1_Pooling" / "config.json").write_text(json.dumps(settings), encoding="utf-8")
    return folder


@pytest.mark.parametrize("settings,expected", [
    ({"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False}, "mean"),
    ({"pooling_mode_mean_tokens": False, "pooling_mode_cls_token": True}, "cls"),
    (None, "cls"),
])
def test_auto_follows_the_sentence_transformers_pooling_config(tiny_bert, tmp_path, settings, expected):
    from textxfer.transformer.models import load_for_training

    folder = _sentence_folder(tiny_bert, tmp_path, settings)
    model = load_for_training(str(folder), _labels())[1]
    chosen, why = pooling.choose("auto", str(folder), str(folder), model)
    assert chosen == expected and why.startswith(f"pooling {expected}")
    assert pooling.choose("cls", str(folder), str(folder), model) == ("cls", None)


def test_bundled_encoders_are_mean_pooled_and_a_head_without_a_pooled_input_falls_back(tiny_bert):
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    assert pooling.trained_pooling("multilingual-e5-small", "/nonexistent")[0] == "mean"
    assert pooling.trained_pooling("all-minilm-l6-v2", "/nonexistent")[0] == "mean"
    other = DistilBertForSequenceClassification(DistilBertConfig(vocab_size=20, dim=8, n_layers=1, n_heads=2,
                                                                 hidden_dim=8))
    assert not pooling.supports_mean(other)
    assert pooling.choose("auto", "multilingual-e5-small", "/nonexistent", other)[0] == "cls"
    with pytest.raises(TextxferError, match="--pooling mean"):
        pooling.choose("mean", "multilingual-e5-small", "/nonexistent", other)
    with pytest.raises(TextxferError, match="unknown pooling"):
        pooling.choose("max", "x", "/nonexistent", other)


def test_logits_are_the_classifier_on_the_masked_mean_and_padding_changes_nothing(mean_model, data):
    import torch

    texts = data.test.texts[:12]
    batch = mean_model.tokenizer_(texts, padding=True, return_tensors="pt")
    assert (batch["attention_mask"] == 0).any()  # the batch really is padded
    model = mean_model.model_.eval()
    with torch.inference_mode():
        hidden = model.base_model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        expected = model.classifier((hidden * mask).sum(1) / mask.sum(1))
        np.testing.assert_allclose(model(**batch).logits.numpy(), expected.numpy(), atol=1e-6)
        first_token = model.classifier(model.base_model(**batch).pooler_output)
    assert not np.allclose(first_token.numpy(), expected.numpy(), atol=1e-3)  # not the first-token path
    together = mean_model.predict_proba(texts)
    alone = np.vstack([mean_model.predict_proba([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_mean_pooled_model_learns_keeps_the_unused_pooler_frozen_and_round_trips(mean_model, data, tmp_path):
    from textxfer.classifier import load

    accuracy = np.mean(np.asarray(mean_model.predict(data.test.texts)) == np.asarray(data.test.labels))
    assert accuracy >= 0.9
    assert mean_model.fit_stats_["recipe"]["pooling"] == "mean"
    after = dict(mean_model.model_.named_parameters())
    assert mean_model.pooler_before_ and all(torch_equal(after[n], p) for n, p in mean_model.pooler_before_.items())
    mean_model.write(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["textxfer_pooling"] == "mean"
    again = load(tmp_path / "saved")
    assert pooling.of(again.model_) == "mean"
    np.testing.assert_allclose(again.predict_proba(data.test.texts), mean_model.predict_proba(data.test.texts),
                               atol=1e-6)


def torch_equal(a, b) -> bool:
    return bool((a.detach() == b.detach()).all())


def test_onnx_export_of_a_mean_pooled_model_matches(mean_model, data, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from textxfer import classifier
    from textxfer.transformer.export import export_onnx

    mean_model.write(tmp_path / "run")
    exported = export_onnx(tmp_path / "run", tmp_path / "onnx")
    texts = data.test.texts[:20] + [""]
    assert np.abs(classifier.load(exported).predict_proba(texts) - mean_model.predict_proba(texts)).max() <= 1e-5


def test_head_only_fits_the_mean_pooled_features_and_the_cache_keeps_poolings_apart(tmp_path, data, tiny_config):
    from textxfer.transformer import feature_cache, training

    tiny_config.strategy, tiny_config.pooling = "head-only", "mean"
    model = FinetuneClassifier(tiny_config).fit(data.train, data.validation, labels=data.labels)
    features = training.classifier_inputs(model, data.test.texts[:5], model.model_.classifier)
    batch = model.tokenizer_(data.test.texts[:5], padding=True, return_tensors="pt")
    import torch

    with torch.inference_mode():
        hidden = model.model_.base_model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    np.testing.assert_allclose(features, ((hidden * mask).sum(1) / mask.sum(1)).numpy(), atol=1e-5)
    mean_key = feature_cache.key(model, data.test.texts[:5], model.model_.classifier)
    model.model_.config.textxfer_pooling = "cls"
    assert feature_cache.key(model, data.test.texts[:5], model.model_.classifier) != mean_key


def test_roberta_heads_read_the_mean_pooled_vector():
    import torch
    from transformers import RobertaConfig, RobertaForSequenceClassification

    torch.manual_seed(0)
    model = RobertaForSequenceClassification(RobertaConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1,
                                                           num_attention_heads=2, intermediate_size=8,
                                                           num_labels=3)).eval()
    assert pooling.supports_mean(model)
    pooling.install(model, "mean")
    ids = torch.tensor([[0, 5, 6, 7, 2], [0, 8, 2, 1, 1]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    with torch.inference_mode():
        hidden = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
        expected = model.classifier(pooling.masked_mean(hidden, mask).unsqueeze(1))
        out = model(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 2]))
    np.testing.assert_allclose(out.logits.numpy(), expected.numpy(), atol=1e-6)
    assert out.loss is not None and out.loss.item() > 0
    np.testing.assert_allclose(pooling.masked_mean(hidden, mask)[1].numpy(), hidden[1, :3].mean(0).numpy(), atol=1e-6)


def test_auto_on_a_sentence_encoder_with_little_data_fits_a_head_on_mean_pooled_features(tiny_bert, tmp_path, data,
                                                                                         tiny_config, capsys):
    from textxfer.transformer import recipe

    folder = _sentence_folder(tiny_bert, tmp_path, {"pooling_mode_mean_tokens": True})
    tiny_config.model, tiny_config.strategy, tiny_config.max_train_samples = str(folder), "auto", 80
    model = FinetuneClassifier(tiny_config).fit(data.train, None, labels=data.labels)  # no validation: the rule by size
    fit = model.fit_stats_
    assert recipe.CONTRASTIVE_BELOW <= 80 < recipe.HEAD_ONLY_BELOW and fit["recipe"]["pooling"] == "mean" and fit["strategy"] == "head-only"
    assert fit["steps"] == 0 and "head_fit" in fit  # the logistic solver, no Trainer steps
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("recipe: "))
    assert line.startswith("recipe: pooling mean (") and "strategy head-only (feature extraction)" in line
