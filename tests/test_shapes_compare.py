"""compare and ensembles on multi-label rows and text pairs: per-label probabilities averaged, thresholds of the
average tuned on validation, the paired bootstrap on micro-F1, per-label F1 bars, and shape mismatches refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import make_multilabel_rows, make_pair_rows, write_csv
from textxfer.baseline.pipeline import BaselineClassifier, BaselineConfig
from textxfer.classifier import load
from textxfer.ensemble.pipeline import EnsembleClassifier, EnsembleConfig
from textxfer.ensemble.weights import choose, log_loss, mix
from textxfer.errors import TextxferError
from textxfer.evaluation.report_multilabel import paired_bootstrap

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TINY_FINETUNE = ["--finetune-strategy", "full", "--finetune-epochs", "6", "--finetune-learning-rate", "3e-3",
                 "--finetune-batch-size", "8", "--finetune-min-steps", "0"]
TINY_BASELINE = ["--baseline-vector-size", "16", "--baseline-min-count", "1", "--baseline-n-estimators", "20"]


def _forest(seed: int, **changes) -> BaselineClassifier:
    return BaselineClassifier(BaselineConfig(vector_size=16, epochs=5, min_count=1, n_estimators=20, n_jobs=1, seed=seed,
                                             **changes))


def test_multi_label_mix_averages_each_label_and_log_loss_is_binary():
    a, b = np.array([[0.9, 0.2, 0.6]]), np.array([[0.5, 0.4, 0.0]])
    np.testing.assert_allclose(mix([a, b], [0.75, 0.25], multi_label=True), [[0.8, 0.25, 0.45]])
    y = np.array([[1, 0, 1]])
    expected = -np.mean([np.log(0.9), np.log(0.8), np.log(0.6)])
    assert log_loss(a, y) == pytest.approx(expected)
    # auto weights go to the member whose probabilities fit validation: here b is useless
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=(200, 3))
    good = np.clip(y * 0.8 + 0.1 + rng.normal(0, 0.05, y.shape), 0.01, 0.99)
    weights, record = choose("auto", [good, np.full(y.shape, 0.5)], y)
    assert weights[0] > 0.8 and "micro_f1" in record["validation"]["chosen"]


def test_a_multi_label_ensemble_tunes_thresholds_on_the_average_and_round_trips(multilabel_data, tmp_path):
    members = [_forest(1).fit(multilabel_data.train, multilabel_data.validation),
               _forest(2, label_dimensions=False).fit(multilabel_data.train, multilabel_data.validation)]
    ensemble = EnsembleClassifier(members, EnsembleConfig("equal")).fit(multilabel_data.train, multilabel_data.validation)
    texts = multilabel_data.test.texts
    np.testing.assert_allclose(ensemble.raw_proba(texts),
                               (members[0].predict_proba(texts) + members[1].predict_proba(texts)) / 2)
    assert ensemble.thresholds_from == "validation"
    assert not np.allclose(ensemble.thresholds, members[0].thresholds)  # its own, not a member's
    ensemble.save(tmp_path / "e")
    loaded = load(tmp_path / "e")
    assert loaded.labels.multi_label and loaded.predict(texts) == ensemble.predict(texts)


def test_an_ensemble_refuses_members_of_different_shapes(multilabel_data, tmp_path):
    single = write_csv(tmp_path / "single.csv", [(t, "a" if "clean" in "|".join(l) else "b")
                                                 for t, l in zip(multilabel_data.train.texts, multilabel_data.train.labels)])
    from textxfer.data.dataset import DataOptions, load_data

    data = load_data(DataOptions(data=str(single)))
    members = [_forest(1).fit(multilabel_data.train, multilabel_data.validation), _forest(1).fit(data.train)]
    with pytest.raises(TextxferError, match="member 1 of the ensemble is for multi-label texts, but the data holds "
                                            "single-label texts; member 2 is for single-label texts") as caught:
        EnsembleClassifier(members).fit(multilabel_data.train, multilabel_data.validation)
    assert "\n" not in str(caught.value)


def test_the_paired_bootstrap_finds_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, size=(300, 4))
    good = np.where(rng.random(truth.shape) < 0.9, truth, 1 - truth)
    bad = np.where(rng.random(truth.shape) < 0.7, truth, 1 - truth)
    real = paired_bootstrap(bad, good, truth)
    assert real["significant"] and real["better"] == "b" and real["difference"] > 0
    assert real["interval"][0] > 0 and real["p_value"] < 0.01
    twin = np.where(rng.random(truth.shape) < 0.9, truth, 1 - truth)
    null = paired_bootstrap(good, twin, truth)
    assert not null["significant"] and null["interval"][0] < 0 < null["interval"][1]
    swapped = paired_bootstrap(good, bad, truth)
    assert swapped["better"] == "a" and swapped["difference"] == pytest.approx(-real["difference"])


def test_compare_scores_multi_label_runs_with_per_label_figures(tmp_path, tiny_bert, capsys):
    from textxfer.cli import main

    aspects = write_csv(tmp_path / "aspects.csv", make_multilabel_rows(300), header=("text", "tags"))
    out = tmp_path / "cmp"
    assert main(["compare", "--data", str(aspects), "--label-column", "tags", "--label-separator", "|",
                 "--finetune-model", str(tiny_bert), *TINY_FINETUNE, *TINY_BASELINE, "--output", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "micro-F1" in printed and "Hamming loss" in printed and "F1[noisy]" in printed
    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["multi_label"] and "mcnemar" not in comparison
    assert [(p["a"], p["b"]) for p in comparison["bootstrap_pairs"]] == [
        ("baseline", "finetune"), ("baseline", "ensemble"), ("finetune", "ensemble")]
    for name in ("baseline", "finetune", "ensemble"):
        metrics = comparison["models"][name]["metrics"]
        assert metrics["multi_label"] and 0.3 < metrics["micro_f1"] <= 1.0
    assert len(comparison["models"]["ensemble"]["thresholds"]) == 3
    assert comparison["files"]["per_label_png"] == "per_label_f1.png" and (out / "per_label_f1.png").stat().st_size > 0
    assert not (out / "confusion_matrices.png").exists()
    report = (out / "comparison.md").read_text()
    assert "## Paired bootstrap on micro-F1" in report and "![F1 per label](per_label_f1.png)" in report
    saved = load(out / "baseline").thresholds  # each label's threshold, as the model uses it
    assert comparison["models"]["baseline"]["thresholds"] == pytest.approx(saved.tolist(), abs=1e-6)
    section = report.split("### baseline")[1].split("###")[0]
    assert "| threshold |" in section
    for name, threshold in zip(comparison["labels"], saved):
        assert any(line.startswith(f"| {name} |") and line.endswith(f"| {threshold:.3f} |")
                   for line in section.splitlines()), (name, threshold)
    header = (out / "disagreements.csv").read_text().splitlines()[0]
    assert header.startswith("row,text,true_label,baseline_label")


def test_compare_reads_pairs_and_refuses_a_model_of_another_shape(tmp_path, tiny_bert, capsys):
    from textxfer.cli import main

    pairs = write_csv(tmp_path / "pairs.csv", make_pair_rows(240), header=("first", "second", "label"))
    out = tmp_path / "cmp"
    assert main(["compare", "--data", str(pairs), "--text-column", "first", "--text-pair-column", "second",
                 "--finetune-model", str(tiny_bert), *TINY_FINETUNE, *TINY_BASELINE, "--output", str(out),
                 "--no-progress"]) == 0
    capsys.readouterr()
    comparison = json.loads((out / "comparison.json").read_text())
    assert "multi_label" not in comparison and comparison["mcnemar"]["n"] == comparison["test_rows"]
    assert comparison["models"]["baseline"]["metrics"]["accuracy"] > 0.65  # the pair features see agreement (chance: 0.5)
    header = (out / "disagreements.csv").read_text().splitlines()[0]
    assert header.startswith("row,text,second_text,true_label,")
    # A run trained on the first texts alone (same file, same rows) is not a model of text pairs.
    assert main(["baseline", "--data", str(pairs), "--text-column", "first", "--output", str(tmp_path / "one"),
                 "--no-progress", "--vector-size", "16", "--n-estimators", "20", "--min-count", "1"]) == 0
    capsys.readouterr()
    assert main(["compare", "--data", str(pairs), "--text-column", "first", "--text-pair-column", "second",
                 "--split", str(tmp_path / "one" / "split.json"), "--baseline-run", str(tmp_path / "one"),
                 "--output", str(tmp_path / "cmp2"), "--no-progress"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "single-label texts" in error[0] and "text pairs" in error[0]
