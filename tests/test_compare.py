"""``textxfer compare``: every artifact is written and its figures match a direct evaluation."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from textxfer import classifier
from textxfer.cli import main
from textxfer.data import DataOptions, load_data
from textxfer.metrics import score
from textxfer.report import mcnemar

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compared(tmp_path_factory, sample_csv, tiny_bert):
    """One ``textxfer compare`` run that trains both pipelines with fixture-sized settings."""
    output = tmp_path_factory.mktemp("compare") / "out"
    argv = ["compare", "--data", str(sample_csv), "--output", str(output), "--no-progress",
            "--baseline-vector-size", "16", "--baseline-min-count", "1", "--baseline-n-estimators", "20",
            "--baseline-n-jobs", "1", "--finetune-model", str(tiny_bert), "--finetune-strategy", "full",
            "--finetune-epochs", "5", "--finetune-learning-rate", "3e-3", "--finetune-batch-size", "8",
            "--finetune-early-stopping", "0", "--finetune-warmup", "0"]
    assert main(argv) == 0
    return output


def test_compare_writes_every_artifact(compared, capsys):
    names = {p.name for p in compared.iterdir()}
    assert {"comparison.json", "comparison.md", "confusion_matrices.png", "metrics_costs.png",
            "disagreements.csv", "split.json", "baseline", "finetune"} <= names
    assert not [n for n in names if n.startswith(".")]  # no temporary or checkpoint folders left
    for png in ("confusion_matrices.png", "metrics_costs.png"):
        assert (compared / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    comparison = json.loads((compared / "comparison.json").read_text(encoding="utf-8"))
    markdown = (compared / "comparison.md").read_text(encoding="utf-8")
    for name, entry in comparison["models"].items():
        assert f"{entry['metrics']['accuracy']:.4f}" in markdown
        assert entry["size_bytes"] > 0 and entry["predict_texts_per_second"] > 0 and entry["train_seconds"] > 0
    assert "McNemar" in markdown and "disagreements.csv" in markdown


def test_figures_match_a_direct_evaluation(compared, sample_csv):
    comparison = json.loads((compared / "comparison.json").read_text(encoding="utf-8"))
    data = load_data(DataOptions(split=str(compared / "split.json")))
    references = np.asarray(data.labels.encode(data.test.labels))
    correct = {}
    for name in ("baseline", "finetune"):
        model = classifier.load(compared / name)
        predicted = model.predict_proba(data.test.texts).argmax(axis=1)
        direct = score(references, predicted, data.labels)
        assert comparison["models"][name]["metrics"] == direct
        saved = json.loads((compared / name / "metrics.json").read_text(encoding="utf-8"))
        assert saved["test"] == direct  # the runner's own figures agree too
        correct[name] = predicted == references
    assert comparison["mcnemar"] == mcnemar(correct["baseline"], correct["finetune"])
    with open(compared / "disagreements.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    # disagree or both wrong == not both right (both right implies agreement)
    flagged = [i for i in range(len(references)) if not (correct["baseline"][i] and correct["finetune"][i])]
    assert len(rows) == comparison["disagreements"]["rows"] == len(flagged)
    assert [r["text"] for r in rows] == [data.test.texts[i] for i in flagged]


def test_compare_scores_given_run_folders_without_training(tmp_path, compared, capsys):
    output = tmp_path / "again"
    assert main(["compare", "--baseline-run", str(compared / "baseline"), "--finetune-run", str(compared / "finetune"),
                 "--output", str(output), "--no-progress"]) == 0
    first = json.loads((compared / "comparison.json").read_text(encoding="utf-8"))
    second = json.loads((output / "comparison.json").read_text(encoding="utf-8"))
    for name in ("baseline", "finetune"):
        assert second["models"][name]["metrics"] == first["models"][name]["metrics"]
        assert second["models"][name]["train_seconds"] == first["models"][name]["train_seconds"]
    assert not (output / "baseline").exists()  # loaded, not retrained
    assert "accuracy" in capsys.readouterr().out


def test_compare_refuses_a_model_trained_on_another_split(tmp_path, compared, sample_csv, capsys):
    assert main(["compare", "--data", str(sample_csv), "--seed", "7", "--baseline-run", str(compared / "baseline"),
                 "--finetune-run", str(compared / "finetune"), "--output", str(tmp_path / "x")]) == 2
    assert "trained on a different split" in capsys.readouterr().err


def test_compare_script_is_the_same_command(tmp_path, compared):
    output = tmp_path / "script"
    completed = subprocess.run([sys.executable, str(ROOT / "scripts" / "compare.py"), "--baseline-run",
                                str(compared / "baseline"), "--finetune-run", str(compared / "finetune"),
                                "--output", str(output), "--no-progress"], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert (output / "comparison.md").is_file()


def test_a_compare_that_fails_mid_run_keeps_the_earlier_output(tmp_path, compared, sample_csv, tiny_bert, capsys):
    target = tmp_path / "kept"
    shutil.copytree(compared, target)  # an earlier, complete comparison
    snapshot = lambda: {str(p.relative_to(target)): p.read_bytes() for p in sorted(target.rglob("*")) if p.is_file()}  # noqa: E731
    before = snapshot()
    # Same settings, except a fine-tuning schedule that fails inside training (reduce-on-plateau without
    # evaluations): the baseline is scored from the earlier run, the fine-tuned model is loaded and set up,
    # then the run fails — after compare has done real work.
    argv = ["compare", "--data", str(sample_csv), "--output", str(target), "--no-progress",
            "--baseline-vector-size", "16", "--baseline-min-count", "1", "--baseline-n-estimators", "20",
            "--baseline-n-jobs", "1", "--finetune-model", str(tiny_bert), "--finetune-strategy", "full",
            "--finetune-epochs", "5", "--finetune-learning-rate", "3e-3", "--finetune-batch-size", "8",
            "--finetune-early-stopping", "0", "--finetune-warmup", "0",
            "--finetune-lr-scheduler", "reduce-on-plateau", "--finetune-eval-strategy", "no"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "baseline: scoring" in captured.out and "finetune: training" in captured.out  # it got that far
    assert "reduce-on-plateau" in captured.err
    assert snapshot() == before  # every earlier file, byte for byte
