"""--strategy contrastive: SetFit-style pairs, the cosine loss, and a body tuned through the Trainer that
pulls same-label texts together before the head is fitted."""

from __future__ import annotations

import numpy as np
import pytest

from textxfer.transformer import contrastive, recipe
from textxfer.data.dataset import DataOptions, load_data
from textxfer.errors import TextxferError
from textxfer.transformer.pipeline import FinetuneClassifier


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from conftest import make_rows, write_csv

    return load_data(DataOptions(data=str(write_csv(tmp_path_factory.mktemp("ct") / "r.csv", make_rows()))))


def test_pairs_give_each_text_a_same_label_and_an_other_label_partner_per_iteration():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    first, second, target = contrastive.pairs(labels, iterations=7, seed=3)
    assert len(first) == len(second) == len(target) == 2 * 7 * len(labels)
    assert np.array_equal(np.bincount(first), np.full(len(labels), 14))
    assert np.array_equal(labels[first] == labels[second], target == 1.0)
    assert target.sum() == 7 * len(labels)
    again = contrastive.pairs(labels, iterations=7, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip((first, second, target), again))
    assert not np.array_equal(contrastive.pairs(labels, iterations=7, seed=4)[1], second)
    with pytest.raises(TextxferError, match="at least two classes"):
        contrastive.pairs(np.array([1, 1, 1]), iterations=2, seed=0)


def test_a_class_with_one_text_pairs_it_with_itself():
    first, second, target = contrastive.pairs(np.array([0, 1, 1, 1]), iterations=3, seed=0)
    alone = (first == 0) & (target == 1.0)
    assert alone.sum() == 3 and np.all(second[alone] == 0)


def test_pair_encoder_loss_is_the_squared_error_of_the_masked_mean_cosine(tiny_bert):
    import torch
    from transformers import AutoModelForSequenceClassification

    from textxfer.transformer import pooling

    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert), num_labels=2)
    pooling.install(model, "mean")
    encoder = contrastive.PairEncoder(model).eval()
    torch.manual_seed(0)
    ids = torch.randint(5, 30, (4, 6))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0  # a padded first text
    mask[3, 2:] = 0  # and a padded partner
    labels = torch.tensor([1.0, 0.0])
    with torch.no_grad():
        out = encoder(input_ids=ids, attention_mask=mask, labels=labels)
        hidden = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
    embedded = [hidden[i, : int(mask[i].sum())].mean(0) for i in range(4)]
    cosine = torch.stack([torch.nn.functional.cosine_similarity(embedded[i], embedded[i + 2], dim=0) for i in range(2)])
    torch.testing.assert_close(out["logits"], cosine, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["loss"], ((cosine - labels) ** 2).mean(), atol=1e-5, rtol=1e-5)


def _pair_loss(classifier, texts, y) -> float:
    """The contrastive objective on fresh pairs of ``texts``: mean squared error of the cosine of their
    pooled features (what the head reads) against 1 for the same label, 0 otherwise."""
    from textxfer.transformer.training import classifier_inputs

    x = classifier_inputs(classifier, texts, classifier.model_.classifier)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    first, second, target = contrastive.pairs(y, iterations=3, seed=99)
    return float(np.mean((np.sum(x[first] * x[second], axis=1) - target) ** 2))


def test_contrastive_tunes_the_body_apart_by_label_then_fits_the_head(tmp_path, data, tiny_config):
    import torch

    from textxfer.classifier import load

    tiny_config.strategy, tiny_config.pooling, tiny_config.pair_iterations = "contrastive", "mean", 4
    tiny_config.pair_learning_rate, tiny_config.logging_steps = 1e-3, 48
    texts, y = data.test.texts, np.array(data.labels.encode(data.test.labels))  # texts the pairs never held
    model = FinetuneClassifier(tiny_config).fit(data.train, data.validation, labels=data.labels)
    reference = FinetuneClassifier(tiny_config.__class__(**{**tiny_config.__dict__, "strategy": "head-only"}))
    reference.fit(data.train, data.validation, labels=data.labels)  # same start, no pair stage
    tuned, frozen = model.model_.state_dict(), reference.model_.state_dict()
    assert torch.equal(tuned["bert.embeddings.word_embeddings.weight"], frozen["bert.embeddings.word_embeddings.weight"])
    assert not torch.equal(tuned["bert.encoder.layer.1.output.dense.weight"],
                           frozen["bert.encoder.layer.1.output.dense.weight"])
    assert _pair_loss(model, texts, y) < 0.8 * _pair_loss(reference, texts, y)  # same-label texts pulled together
    stats = model.fit_stats_
    pairs = 2 * 4 * len(data.train)
    assert stats["strategy"] == "contrastive" and stats["contrastive"]["pairs"] == pairs
    assert stats["steps"] == stats["recipe"]["planned_steps"] == -(-pairs // tiny_config.batch_size)
    assert stats["contrastive"]["last_logged_loss"] < stats["contrastive"]["first_logged_loss"]
    assert stats["head_fit"]["C"] > 0 and not any(p.requires_grad for p in model.model_.parameters())
    model.write(tmp_path / "m", {})
    np.testing.assert_allclose(load(tmp_path / "m").predict_proba(data.test.texts),
                               model.predict_proba(data.test.texts), atol=1e-6)


def test_the_recipe_counts_the_pair_steps(tiny_config):
    tiny_config.strategy, tiny_config.batch_size, tiny_config.pair_iterations = "contrastive", 16, 20
    planned = recipe.plan(tiny_config, 32, pooling="mean")
    assert planned["strategy"] == "contrastive" and planned["planned_steps"] == 80 and planned["epochs"] == 0.0
    assert recipe.plan(tiny_config, 32, world_size=2, pooling="mean")["planned_steps"] == 40
    with pytest.raises(TextxferError, match="pair_iterations"):
        tiny_config.__class__(pair_iterations=0)


def test_pair_batches_are_grouped_by_length_to_cut_padding(tiny_config, monkeypatch):
    from textxfer.transformer import pooling
    from textxfer.data.labels import LabelSet
    from textxfer.transformer.models import load_for_training
    from textxfer.transformer.strategies import apply_strategy

    widths: list[int] = []
    original = contrastive._collator

    def spying(tokenizer, encoded):
        collate = original(tokenizer, encoded)

        def wrapped(rows):
            batch = collate(rows)
            widths.append(batch["input_ids"].numel())
            return batch

        return wrapped

    monkeypatch.setattr(contrastive, "_collator", spying)
    rng = np.random.default_rng(0)
    texts = ["好" * int(n) for n in rng.integers(2, 50, size=48)]  # lengths from 2 to 49 tokens
    y = np.arange(48) % 2
    padded = {}
    for grouped in (False, True):
        tiny_config.group_by_length, tiny_config.pair_iterations = grouped, 4
        classifier = FinetuneClassifier(tiny_config)
        classifier.tokenizer_, classifier.model_, _ = load_for_training(tiny_config.model, LabelSet(["0", "1"]))
        pooling.install(classifier.model_, "mean")
        apply_strategy(classifier.model_, "contrastive")
        classifier.max_length_, classifier.text_prefix_ = 64, ""
        widths.clear()
        contrastive.tune_body(classifier, texts, y, progress=False, device={"use_cpu": True})
        assert len(widths) == -(-2 * 4 * 48 // tiny_config.batch_size)
        padded[grouped] = sum(widths)
    assert padded[True] < 0.8 * padded[False]
