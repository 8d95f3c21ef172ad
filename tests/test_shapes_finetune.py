"""Fine-tuning on multi-label rows and on text pairs: the tiny BERT learns both, thresholds come from validation,
pairs are encoded as the tokenizer would, each strategy handles both, and a saved model keeps its shape."""

from __future__ import annotations

import random

import numpy as np
import pytest

from conftest import NEUTRAL, make_hard_rows, make_multilabel_rows, make_rows, write_csv
from textxfer.classifier import load
from textxfer.core.metrics import score_probabilities
from textxfer.data.dataset import DataOptions, load_data
from textxfer.errors import TextxferError
from textxfer.transformer.pipeline import FinetuneClassifier, FinetuneConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(tiny_bert, **changes) -> FinetuneConfig:
    settings = dict(model=str(tiny_bert), strategy="full", epochs=10, learning_rate=3e-3, batch_size=8,
                    eval_batch_size=32, logging_steps=1000, early_stopping=0, warmup=0.0, min_steps=0)
    return FinetuneConfig(**(settings | changes))


@pytest.fixture(scope="module")
def pair_data(tmp_path_factory):
    """Pairs whose *second* text decides the label (the hard fixture: 8 % of labels flipped); the first text is
    neutral words drawn at random. A model that did not read the second text scores about 0.5."""
    rng = random.Random(1)
    rows = [("，".join(rng.sample(NEUTRAL, 4)) + "。", text, label) for text, label in make_hard_rows(400, seed=3)]
    path = write_csv(tmp_path_factory.mktemp("pairs") / "pairs.csv", rows, header=("first", "second", "label"))
    return load_data(DataOptions(data=str(path), text_column="first", text_pair_column="second", test_size=0.2))


def _test_score(model, data) -> dict:
    probabilities = model.predict_proba(data.test.inputs)
    return score_probabilities(data.labels, data.test.labels, probabilities, model.thresholds)


@pytest.fixture(scope="module")
def multilabel_model(multilabel_data, tiny_bert):
    return FinetuneClassifier(_config(tiny_bert)).fit(multilabel_data.train, multilabel_data.validation)


def test_multi_label_fine_tuning_learns_with_sigmoid_outputs_and_validation_thresholds(multilabel_model,
                                                                                        multilabel_data, tiny_bert):
    model = multilabel_model
    assert model.model_.config.problem_type == "multi_label_classification"
    assert model.thresholds.shape == (3,) and model.thresholds_from == "validation"
    probabilities = model.predict_proba(multilabel_data.test.inputs)
    assert not np.allclose(probabilities.sum(axis=1), 1.0)  # one sigmoid per label, not a softmax
    f1 = _test_score(model, multilabel_data)["micro_f1"]
    assert 0.7 < f1 < 1.0  # 6 % of label decisions are flipped in the fixture
    train = multilabel_data.train
    rng = np.random.default_rng(0)
    scrambled = type(train)(train.texts, [train.labels[i] for i in rng.permutation(len(train))], train.rows,
                            train.origin, train.pairs, train.shape)
    noise = FinetuneClassifier(_config(tiny_bert)).fit(scrambled, multilabel_data.validation)
    assert _test_score(noise, multilabel_data)["micro_f1"] < f1 - 0.1
    assert noise.fit_stats["best_validation_micro_f1"] < model.fit_stats["best_validation_micro_f1"]


def test_mean_pooled_multi_label_models_train_with_binary_cross_entropy(multilabel_data, tiny_bert):
    import torch

    model = FinetuneClassifier(_config(tiny_bert, pooling="mean", epochs=1)).fit(multilabel_data.train,
                                                                                multilabel_data.validation)
    batch = model.tokenizer_(multilabel_data.test.texts[:8], padding=True, return_tensors="pt")
    targets = torch.tensor(model.labels.targets(multilabel_data.test.labels[:8]), dtype=torch.float32)
    output = model.model_.eval()(**batch, labels=targets)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(output.logits, targets)
    assert float(output.loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)


def test_each_multi_label_output_starts_at_its_label_share(multilabel_data, tiny_bert):
    from textxfer.transformer.head_fit import last_linear
    from textxfer.transformer.strategies import head_module

    # One step at a negligible rate: the biases are where training started them.
    model = FinetuneClassifier(_config(tiny_bert, learning_rate=1e-12, max_steps=1)).fit(multilabel_data.train)
    bias = last_linear(head_module(model.model_)).bias.detach().numpy()
    shares = model.labels.targets(multilabel_data.train.labels).mean(axis=0)
    np.testing.assert_allclose(1 / (1 + np.exp(-bias)), shares, atol=1e-4)


def test_a_saved_multi_label_model_predicts_the_same_label_lists(multilabel_model, multilabel_data, tmp_path):
    multilabel_model.save(tmp_path / "m")
    loaded = load(tmp_path / "m")
    texts = multilabel_data.test.texts
    assert loaded.labels.multi_label and loaded.thresholds.tolist() == pytest.approx(multilabel_model.thresholds.tolist(), abs=1e-6)
    np.testing.assert_allclose(loaded.predict_proba(texts), multilabel_model.predict_proba(texts), atol=1e-6)
    predicted = loaded.predict(texts)
    assert predicted == multilabel_model.predict(texts)
    assert any(len(labels) > 1 for labels in predicted) and all(isinstance(labels, list) for labels in predicted)


def test_a_given_threshold_replaces_the_tuned_ones(multilabel_data, tiny_bert):
    model = FinetuneClassifier(_config(tiny_bert, epochs=1, threshold=0.5)).fit(multilabel_data.train,
                                                                               multilabel_data.validation)
    assert model.thresholds.tolist() == [0.5, 0.5, 0.5] and model.thresholds_from == "given"
    with pytest.raises(TextxferError, match="--threshold must be between 0 and 1"):
        FinetuneConfig(threshold=1.5)


def test_head_only_fits_one_regression_per_label_into_the_classifier_layer(multilabel_data, tiny_bert):
    from sklearn.linear_model import LogisticRegression

    from textxfer.transformer.head_fit import last_linear
    from textxfer.transformer.strategies import head_module
    from textxfer.transformer.training import classifier_inputs

    model = FinetuneClassifier(_config(tiny_bert, strategy="head-only")).fit(multilabel_data.train,
                                                                            multilabel_data.validation)
    head = model.fit_stats["head_fit"]
    assert head["per_label"] and "micro-F1" in head["chosen_by"]
    # The layer's sigmoid is each label's own regression, refitted here on the same frozen features with its C.
    linear = last_linear(head_module(model.model_))
    features = lambda texts: classifier_inputs(model, texts, linear)  # noqa: E731
    train_x, test_x = features(multilabel_data.train.texts), features(multilabel_data.test.texts)
    mean, scale = train_x.mean(axis=0), train_x.std(axis=0)
    targets = model.labels.targets(multilabel_data.train.labels)
    expected = np.column_stack([
        LogisticRegression(C=head["C"], max_iter=3000, random_state=42).fit((train_x - mean) / scale, column)
        .predict_proba((test_x - mean) / scale)[:, 1] for column in targets.T])
    # (within lbfgs's tolerance: the two fits stop at slightly different points)
    np.testing.assert_allclose(model.raw_proba(multilabel_data.test.texts), expected, atol=0.01)
    assert _test_score(model, multilabel_data)["micro_f1"] > 0.5


def test_contrastive_pairs_for_multi_label_rows_follow_the_chosen_rule():
    from textxfer.transformer.contrastive import pairs

    indicators = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0], [0, 0, 0], [1, 0, 1]])
    first, second, target = pairs(indicators, 30, seed=0)
    shared = (indicators[first] & indicators[second]).any(axis=1)
    both_empty = ~indicators[first].any(axis=1) & ~indicators[second].any(axis=1)
    assert (shared | both_empty)[target == 1].all()  # a same-side partner shares a label (or both have none)
    assert not shared[target == 0].any()  # an other-side partner shares none
    unlabelled_first = ~indicators[first].any(axis=1)
    assert indicators[second][(target == 0) & unlabelled_first].any(axis=1).all()  # a text without labels: pushed
    # Row 1 ({a, b}) is pulled towards rows 0 ({a}) and 2 ({b}) …
    assert {0, 2} <= set(second[(first == 1) & (target == 1)].tolist())
    # … which the label-set rule pushes away: there only identical sets are pulled together.
    first, second, target = pairs(indicators, 30, seed=0, multilabel_rule="label-set")
    assert (indicators[first] == indicators[second]).all(axis=1)[target == 1].all()
    assert not (indicators[first] == indicators[second]).all(axis=1)[target == 0].any()
    with pytest.raises(TextxferError, match="two different label sets"):
        pairs(np.ones((4, 2), dtype=int), 2, seed=0)


def test_contrastive_and_auto_train_multi_label_models(multilabel_data, tiny_bert):
    model = FinetuneClassifier(_config(tiny_bert, strategy="contrastive", pair_iterations=2)).fit(
        multilabel_data.train, multilabel_data.validation)
    assert model.fit_stats["contrastive"]["pairs"] > len(multilabel_data.train)
    assert model.thresholds_from == "validation" and _test_score(model, multilabel_data)["micro_f1"] > 0.5
    auto = FinetuneClassifier(_config(tiny_bert, strategy="auto", epochs=None, pair_iterations=2)).fit(
        multilabel_data.train, multilabel_data.validation)
    search = auto.fit_stats["recipe"]["search"]
    assert search["metric"] == "micro-F1" and all("micro_f1" in c for c in search["candidates"])
    assert "validation micro-F1 of each candidate" in auto.fit_stats["recipe"]["choices"][0]


def test_class_weighted_multi_label_loss_weighs_positives_by_negatives_over_positives():
    import torch

    from textxfer.transformer.training import _class_weighted_loss

    targets = np.array([[1, 0], [0, 0], [0, 1], [0, 1]])  # label 0: 1 positive of 4 → 3; label 1: 2 of 4 → 1
    loss = _class_weighted_loss(targets, 2)
    logits = torch.tensor([[0.3, -0.2], [1.0, 0.5], [-0.4, 0.1], [0.2, 2.0]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, torch.tensor(targets, dtype=torch.float32), pos_weight=torch.tensor([3.0, 1.0]))
    assert float(loss({"logits": logits}, torch.tensor(targets))) == pytest.approx(float(expected), rel=1e-6)
    unweighted = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor(targets, dtype=torch.float32))
    assert float(expected) != pytest.approx(float(unweighted), rel=1e-3)


def test_pairs_are_encoded_as_the_tokenizer_encodes_them(tiny_bert):
    from transformers import AutoTokenizer

    from textxfer.transformer.encoding import encode

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert))
    rng = random.Random(0)
    texts = [text for text, _ in make_rows(60)]
    for _ in range(200):
        a, b = rng.choice(texts)[: rng.randint(1, 40)], rng.choice(texts)[: rng.randint(1, 40)]
        length = rng.randint(8, 60)
        ours = encode(tokenizer, [(a, b)], length, "truncate")
        theirs = tokenizer(a, b, truncation="longest_first", max_length=length)
        assert ours["input_ids"][0] == theirs["input_ids"] and ours["token_type_ids"][0] == theirs["token_type_ids"]
    # head-tail: 13 tokens between the three special tokens; the second text keeps its 2, the first its first 2
    # (a quarter of 11) and last 9
    kept = tokenizer.decode(encode(tokenizer, [(" ".join("abcdefghij" * 2), "x y")], 16, "head-tail")["input_ids"][0])
    assert kept.replace(" ", "") == "[CLS]abbcdefghij[SEP]xy[SEP]"


def test_pair_fine_tuning_reads_the_second_text(pair_data, tiny_bert, tmp_path):
    model = FinetuneClassifier(_config(tiny_bert)).fit(pair_data.train, pair_data.validation)
    accuracy = _test_score(model, pair_data)["accuracy"]
    assert 0.75 < accuracy < 1.0  # the second text decides; 8 % of labels are flipped
    test = pair_data.test
    rng = np.random.default_rng(0)
    swapped = [(a, test.pairs[j]) for a, j in zip(test.texts, rng.permutation(len(test)))]
    labels = model.labels.encode(test.labels)
    shuffled_accuracy = float(np.mean(model.predict_proba(swapped).argmax(axis=1) == labels))
    assert shuffled_accuracy < accuracy - 0.25  # second texts moved to other rows: the labels no longer follow
    model.save(tmp_path / "pairs")
    loaded = load(tmp_path / "pairs")
    assert loaded.shape.text_pair_column == "second"
    assert loaded.predict([test.inputs[0]]) == model.predict([test.inputs[0]])
    assert loaded.predict(test.inputs[0]) == model.predict([test.inputs[0]])  # one pair alone
    with pytest.raises(TextxferError, match="this model reads text pairs"):
        loaded.predict(["只有一个文本"])


def test_head_only_and_contrastive_read_pairs(pair_data, tiny_bert):
    for strategy in ("head-only", "contrastive"):
        model = FinetuneClassifier(_config(tiny_bert, strategy=strategy, pair_iterations=2)).fit(
            pair_data.train, pair_data.validation)
        assert model.predict_proba(pair_data.test.inputs).shape == (len(pair_data.test), 2)


def test_a_text_model_refuses_pairs(tiny_bert):
    data_rows = make_rows(60)
    from textxfer.data.dataset import TextDataset

    train = TextDataset([t for t, _ in data_rows], [label for _, label in data_rows], list(range(1, 61)), "x")
    model = FinetuneClassifier(_config(tiny_bert, epochs=1)).fit(train)
    with pytest.raises(TextxferError, match="this model reads single texts.*not trained on text pairs"):
        model.predict([("一", "二")])


def test_a_subset_of_multi_label_training_rows_keeps_every_label(multilabel_data):
    from textxfer.transformer.pipeline import _subset

    subset = _subset(multilabel_data.train, 60, seed=0)
    assert len(subset) == 60 and subset.shape == multilabel_data.train.shape
    counts = multilabel_data.labels.targets(subset.labels).sum(axis=0)
    full = multilabel_data.labels.targets(multilabel_data.train.labels).sum(axis=0)
    assert np.all(np.abs(counts - full * 60 / len(multilabel_data.train)) <= 2)


def test_augmenting_pairs_alters_both_texts_and_keeps_the_shape(pair_data):
    from textxfer.data.augment import augment

    grown = augment(pair_data.train, "word-swap", 1, seed=0)
    n = len(pair_data.train)
    assert len(grown) == 2 * n and grown.shape == pair_data.train.shape and len(grown.pairs) == 2 * n
    assert grown.labels[n:] == pair_data.train.labels
    assert sum(a != b for a, b in zip(grown.pairs[n:], pair_data.train.pairs)) > n / 2


def test_the_finetune_command_scores_a_multi_label_run(tmp_path, tiny_bert, capsys):
    import json

    from textxfer.cli import main

    aspects = write_csv(tmp_path / "aspects.csv", make_multilabel_rows(200), header=("text", "tags"))
    assert main(["finetune", "--data", str(aspects), "--label-column", "tags", "--label-separator", "|",
                 "--model", str(tiny_bert), "--strategy", "full", "--epochs", "3", "--learning-rate", "3e-3",
                 "--batch-size", "8", "--min-steps", "0", "--output", str(tmp_path / "ml"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "micro-F1 (tuned thresholds)" in printed and "hamming" in printed
    metrics = json.loads((tmp_path / "ml" / "metrics.json").read_text())
    assert metrics["test"]["multi_label"]
    manifest = json.loads((tmp_path / "ml" / "textxfer.json").read_text())
    assert manifest["task"]["thresholds_from"] == "validation" and len(manifest["task"]["thresholds"]) == 3
