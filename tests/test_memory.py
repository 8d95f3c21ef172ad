"""Bounded memory of training on long texts (textxfer.transformer.memory): the attention dropout that lets the
fused attention run, and token-budgeted passes that are the same optimizer step."""

from __future__ import annotations

import csv
import json
import random
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import ROOT, build_tiny_bert, make_rows
from textxfer.data.dataset import TextDataset
from textxfer.transformer import memory


@pytest.mark.parametrize("batch, typical, longest, expected", [
    (16, 512, 512, (8, 2)),          # fine-tuning 16 texts of 512 tokens: 2 passes of 8 (4,096 tokens each)
    (16, 1024, 1024, (4, 4)),        # a contrastive step of 16 pairs of 512-token texts: 4 passes of 4 pairs
    (16, 160, 160, (16, 1)),         # short texts: one pass, as before
    (12, 1000, 1000, (4, 3)),        # the largest divisor of the batch that fits
    (16, 5000, 5000, (1, 16)),       # one text over the budget still runs, alone
    (16, 110, 273, (16, 1)),         # the sample reviews' fine-tuning: typical 110, max 273 (4,368 ≤ twice the budget)
    (16, 220, 546, (8, 2)),          # their pairs: 16 × 546 = 8,736 would pass twice the budget at the max length
])
def test_a_step_is_split_into_passes_under_the_token_budget(batch, typical, longest, expected):
    assert memory.passes(batch, typical, longest) == expected
    per_pass, count = expected
    line = memory.describe(batch, per_pass, typical)
    assert line is None if count == 1 else f"{count} passes of {per_pass}" in line


def test_passes_are_planned_from_the_texts_90th_percentile_and_the_max_length():
    class Encoder:  # what memory.plan reads of a classifier: its encoded lengths and max length
        max_length_ = 300

        def encode(self, texts):
            return {"input_ids": [[0] * len(t) for t in texts]}

    texts = ["x" * n for n in [40] * 85 + [100] * 10 + [300] * 5]  # 90th percentile 100, max 300
    assert memory.plan(Encoder(), texts, 16) == (16, 1, 100, 300)  # 1,600 typical, 4,800 at the max: one pass
    assert memory.plan(Encoder(), texts, 16, 2) == (8, 2, 200, 600)  # pairs: 16 × 600 = 9,600 > 8,192
    long_texts = ["x" * 300] * 20
    assert memory.plan(Encoder(), long_texts, 16) == (8, 2, 300, 300)  # 16 × 300 = 4,800 > 4,096


def test_attention_dropout_is_set_in_every_attention_layer_and_the_config(tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification

    folder = build_tiny_bert(tmp_path / "bert")
    model = AutoModelForSequenceClassification.from_pretrained(str(folder), num_labels=2)
    attention = [m.dropout for n, m in model.named_modules() if n.endswith("attention.self")]
    hidden = [m for n, m in model.named_modules() if n.endswith("output.dropout")]
    assert len(attention) == 2 and all(d.p == pytest.approx(0.1) for d in attention)
    assert memory.set_attention_dropout(model, None) == pytest.approx(0.1)  # None: the model's own, untouched
    assert all(d.p == pytest.approx(0.1) for d in attention)
    assert memory.set_attention_dropout(model, 0.0) == pytest.approx(0.1)
    assert all(d.p == 0.0 for d in attention) and model.config.attention_probs_dropout_prob == 0.0
    assert hidden and all(d.p == pytest.approx(0.1) for d in hidden)  # the hidden-state dropout is kept
    assert all(isinstance(d, torch.nn.Dropout) for d in attention)


@pytest.fixture(scope="module")
def no_dropout_bert(tmp_path_factory):
    """The tiny BERT without dropout, so that a step split into passes draws no different random masks."""
    return build_tiny_bert(tmp_path_factory.mktemp("bert-no-dropout"), hidden_dropout_prob=0.0,
                           attention_probs_dropout_prob=0.0)


def _fit(model_folder, budget, monkeypatch, **settings):
    from textxfer.transformer.pipeline import FinetuneClassifier, FinetuneConfig

    monkeypatch.setattr(memory, "CPU_TOKENS_PER_PASS", budget)
    rows = make_rows(48, seed=3)
    labels = [label for _, label in rows]
    train = TextDataset([t for t, _ in rows], labels, list(range(len(rows))), "fixture")
    config = FinetuneConfig(model=str(model_folder), epochs=1, learning_rate=3e-3, batch_size=8, logging_steps=1,
                            early_stopping=0, warmup=0.0, min_steps=0, group_by_length=False, seed=5, **settings)
    model = FinetuneClassifier(config).fit(train)
    weights = {n: p.detach().clone() for n, p in model.model_.named_parameters()}
    losses = [entry["loss"] for entry in model.log_history_ if "loss" in entry]
    return model, weights, losses


@pytest.mark.parametrize("strategy, class_weighted", [("full", True), ("contrastive", False)])
def test_passes_train_the_same_step_as_one_batch(no_dropout_bert, monkeypatch, one_torch_thread, strategy, class_weighted):
    """A step of 8 texts (contrastive: 8 pairs) as one pass and as passes of 2 texts (1 pair): the same weights and
    the same logged losses. The class-weighted loss must divide by the step's texts, not each pass's (else the
    logged loss grows with the passes)."""
    settings = {"strategy": strategy, "class_weighted": class_weighted,
                **({"pair_iterations": 2, "pair_learning_rate": 1e-3} if strategy == "contrastive" else {})}
    whole, whole_weights, whole_losses = _fit(no_dropout_bert, 10**6, monkeypatch, **settings)
    split, split_weights, split_losses = _fit(no_dropout_bert, 2 * whole.max_length_, monkeypatch, **settings)
    recipe = " ".join(split.fit_stats_["recipe"]["choices"])
    assert re.search(r"runs as [2-8] passes of [1-4] ", recipe), recipe  # a step of 8 split at least in two
    assert "passes of" not in " ".join(whole.fit_stats_["recipe"]["choices"])
    assert len(whole_losses) == len(split_losses) >= 5
    np.testing.assert_allclose(split_losses, whole_losses, rtol=1e-4)
    # The same steps up to float rounding: each parameter's difference is a small share of how far training moved
    # it (the padding of a pass differs, and AdamW's normalised steps amplify rounding where gradients are near 0:
    # the tiny body's contrastive gradients are; full runs within 1 %, contrastive was seen at 4.5 %).
    from transformers import AutoModelForSequenceClassification

    start = dict(AutoModelForSequenceClassification.from_pretrained(str(no_dropout_bert), num_labels=2).named_parameters())
    # (the body only: the head starts from a draw of its own, and contrastive then fits it by regression)
    moved = {n: float((whole_weights[n] - start[n].detach()).abs().max()) for n in whole_weights if n.startswith("bert.")}
    apart = {n: float((whole_weights[n] - split_weights[n]).abs().max()) for n in moved}
    assert max(moved.values()) > 1e-3  # training moved the body
    share = 0.01 if strategy == "full" else 0.1
    assert not [n for n in moved if apart[n] > share * moved[n] + 1e-7], sorted(
        ((n, apart[n], moved[n]) for n in moved), key=lambda kv: -kv[1] / (kv[2] + 1e-12))[:3]


LONG_RUN = textwrap.dedent("""
    import json, resource, sys
    from textxfer.cli import main
    code = main(sys.argv[1:])
    print(json.dumps({"code": code, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""")


@pytest.mark.slow
def test_a_contrastive_run_on_512_token_texts_stays_under_a_memory_bound(tmp_path):
    """The bundled encoder at its full length: 8 training texts of 512 tokens, one contrastive step of 16 pairs.
    Before the bound one pass held 32 texts × 12 layers of 512 × 512 attention scores (22 GB seen in a study; 7.2 GB
    with the fused attention alone); now passes of 4 pairs with no score matrices: 3.5 GB at 48 texts."""
    rows = list(csv.DictReader(open(ROOT / "sample_data" / "reviews.csv", encoding="utf-8")))
    rng = random.Random(0)
    data = []
    for index in range(16):
        label = ("positive", "negative")[index % 2]
        pool = [r["text"] for r in rows if r["label"] == label]
        text = ""
        while len(text) < 1400:  # about 1,000 tokens: the 512-token cap binds
            text += rng.choice(pool)
        data.append((text, label))
    path = tmp_path / "long.csv"
    with open(path, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([("text", "label"), *data])
    completed = subprocess.run(
        [sys.executable, "-c", LONG_RUN, "finetune", "--data", str(path), "--output", str(tmp_path / "run"),
         "--strategy", "contrastive", "--pair-iterations", "1", "--validation-size", "0.25", "--test-size", "0.25",
         "--no-progress"], capture_output=True, text=True, timeout=600, env={**__import__("os").environ,
                                                                             "HF_HUB_OFFLINE": "1"})
    assert completed.returncode == 0, completed.stderr[-2000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    print(result)
    assert result["code"] == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text(encoding="utf-8"))
    assert report["fit"]["max_length"] == 512
    assert "4 passes of 4" in " ".join(report["fit"]["recipe"]["choices"])  # 16 pairs of 512-token texts
    assert result["peak_rss_mib"] < 4500, result
