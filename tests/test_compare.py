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
from textxfer.data.dataset import DataOptions, load_data
from textxfer.core.metrics import score
from textxfer.evaluation.report import mcnemar

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
    assert {"comparison.json", "comparison.md", "confusion_matrices.png", "metrics_costs.png", "reliability.png",
            "disagreements.csv", "split.json", "baseline", "finetune"} <= names
    assert not [n for n in names if n.startswith(".")]  # no temporary or checkpoint folders left
    for png in ("confusion_matrices.png", "metrics_costs.png", "reliability.png"):
        assert (compared / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    comparison = json.loads((compared / "comparison.json").read_text(encoding="utf-8"))
    markdown = (compared / "comparison.md").read_text(encoding="utf-8")
    for name, entry in comparison["models"].items():
        assert f"{entry['metrics']['accuracy']:.4f}" in markdown
        assert entry["size_bytes"] > 0 and entry["predict_texts_per_second"] > 0 and entry["train_seconds"] > 0
    assert "McNemar" in markdown and "disagreements.csv" in markdown
    # training against validation loss per evaluation, from the run's Trainer log
    curve = comparison["models"]["finetune"]["loss_curve"]
    report = json.loads((compared / "finetune" / "report.json").read_text(encoding="utf-8"))
    log = json.loads((compared / "finetune" / "trainer_log.json").read_text(encoding="utf-8"))
    evaluations = [e for e in log if "eval_loss" in e]
    assert curve == report["fit"]["loss_curve"] and len(evaluations) >= 2
    assert [(p["step"], p["validation_loss"]) for p in curve["evaluations"]] == \
        [(e["step"], e["eval_loss"]) for e in evaluations]
    last = curve["evaluations"][-1]
    assert "## Training and validation loss" in markdown and \
        f"| {last['step']} | {last['epoch']:.2f} | {last['training_loss']:.4f} | {last['validation_loss']:.4f} |" in markdown
    assert "loss_curve" not in comparison["models"]["baseline"]


def test_calibration_figures_are_the_models_own_before_and_after_their_temperature(compared):
    from textxfer.core.calibration import figures, reliability_bins

    comparison = json.loads((compared / "comparison.json").read_text(encoding="utf-8"))
    markdown = (compared / "comparison.md").read_text(encoding="utf-8")
    data = load_data(DataOptions(split=str(compared / "split.json")))
    y = data.labels.targets(data.test.labels)
    assert "## Calibration" in markdown and "](reliability.png)" in markdown
    assert comparison["files"]["reliability_png"] == "reliability.png"
    for name in ("baseline", "finetune"):
        model = classifier.load(compared / name)
        entry = comparison["models"][name]["calibration"]
        raw, calibrated = model.raw_proba(data.test.texts), model.predict_proba(data.test.texts)
        assert entry["temperature"] == model.temperature and entry["method"] == "temperature"
        assert entry["test"]["before"] == pytest.approx(figures(raw, y), abs=1e-6)
        assert entry["test"]["after"] == pytest.approx(figures(calibrated, y), abs=1e-6)
        assert entry["validation"] == model.calibration["validation"]  # what the temperature was fitted on
        assert [b["n"] for b in entry["reliability"]["after"]] == [b["n"] for b in reliability_bins(calibrated, y)]
        after = entry["test"]["after"]
        assert f"{entry['test']['before']['ece']:.4f} → {after['ece']:.4f}" in markdown
    eces = [f"{m['calibration']['test']['after']['ece']:.4f}" for m in comparison["models"].values()]
    assert "| test ECE (calibrated) | " + " | ".join(eces) + " | " in markdown  # in the main table too


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
    correct["ensemble"] = np.asarray(comparison_predictions(compared, data)) == references
    pairs = {(p.pop("a"), p.pop("b")): p for p in comparison["mcnemar_pairs"]}
    assert list(pairs) == [("baseline", "finetune"), ("baseline", "ensemble"), ("finetune", "ensemble")]
    for (a, b), test in pairs.items():
        assert test == mcnemar(correct[a], correct[b])
    with open(compared / "disagreements.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    # disagree or all wrong == not all right (all right implies agreement)
    flagged = [i for i in range(len(references)) if not all(c[i] for c in correct.values())]
    assert len(rows) == comparison["disagreements"]["rows"] == len(flagged)
    assert [r["text"] for r in rows] == [data.test.texts[i] for i in flagged]


def comparison_predictions(compared: Path, data) -> list[int]:
    """The ensemble column's predicted class ids, read back from disagreements.csv (rows all right are not there)."""
    comparison = json.loads((compared / "comparison.json").read_text(encoding="utf-8"))
    names = comparison["labels"]
    with open(compared / "disagreements.csv", encoding="utf-8", newline="") as handle:
        listed = {int(r["row"]): names.index(r["ensemble_label"]) for r in csv.DictReader(handle)}
    truth = data.labels.encode(data.test.labels)
    return [listed.get(row, y) for row, y in zip(data.test.rows, truth)]


def test_the_ensemble_column_is_chosen_on_validation_and_is_what_textxfer_ensemble_builds(compared, tmp_path, capsys):
    from test_ensemble import grid_log_losses

    comparison = json.loads((compared / "comparison.json").read_text(encoding="utf-8"))
    assert list(comparison["models"]) == ["baseline", "finetune", "ensemble"]
    entry = comparison["models"]["ensemble"]
    data = load_data(DataOptions(split=str(compared / "split.json")))
    members = [classifier.load(compared / name) for name in ("baseline", "finetune")]
    # the weights are the lowest validation log loss on the 1/20 grid, worked out here in plain numpy …
    y_validation = np.asarray(data.labels.encode(data.validation.labels))
    validation = [m.predict_proba(data.validation.texts) for m in members]
    w, losses = grid_log_losses(validation[0], validation[1], y_validation)
    best = int(np.argmin(losses))
    weights = [float(w[best]), float(1 - w[best])]
    assert list(entry["weights"]) == ["baseline", "finetune"]
    assert list(entry["weights"].values()) == pytest.approx(weights, abs=1e-9)
    selection = entry["selection"]["validation"]
    assert selection["n"] == len(data.validation)
    assert selection["chosen"]["log_loss"] == pytest.approx(losses[best], abs=1e-6)
    assert selection["equal_weights"]["log_loss"] == pytest.approx(losses[10], abs=1e-6)
    # … and the column scores that mixture of the members' test probabilities
    references = np.asarray(data.labels.encode(data.test.labels))
    test = [m.predict_proba(data.test.texts) for m in members]
    mixed = (weights[0] * test[0] + weights[1] * test[1]).argmax(axis=1)
    assert entry["metrics"] == score(references, mixed, data.labels)
    assert comparison_predictions(compared, data) == mixed.tolist()
    # the saved-model route gives the same weights and the same test predictions
    assert entry["build_command"].startswith(f"textxfer ensemble --runs {compared / 'baseline'} {compared / 'finetune'}")
    built = tmp_path / "ensemble"
    assert main(["ensemble", "--runs", str(compared / "baseline"), str(compared / "finetune"), "--output", str(built),
                 "--no-progress"]) == 0
    assert json.loads((built / "textxfer.json").read_text(encoding="utf-8"))["config"]["chosen_weights"] == \
        list(entry["weights"].values())
    saved = json.loads((built / "predictions.json").read_text(encoding="utf-8"))["splits"]["test"]
    assert saved["predicted"] == mixed.tolist() and saved["rows"] == data.test.rows
    assert json.loads((built / "metrics.json").read_text(encoding="utf-8"))["test"] == entry["metrics"]
    # the saved ensemble's temperature is the column's, so its calibrated test figures are the column's too
    from textxfer.core.calibration import figures

    saved_model = classifier.load(built)
    assert saved_model.temperature == entry["calibration"]["temperature"]
    assert figures(saved_model.predict_proba(data.test.texts), references) == pytest.approx(
        entry["calibration"]["test"]["after"], abs=1e-6)
    markdown = (compared / "comparison.md").read_text(encoding="utf-8")
    assert "ensemble − finetune" in markdown and "Ensemble weights" in markdown and "### ensemble against finetune" in markdown
    capsys.readouterr()


def test_no_ensemble_leaves_two_columns(tmp_path, compared, capsys):
    output = tmp_path / "two"
    assert main(["compare", "--baseline-run", str(compared / "baseline"), "--finetune-run", str(compared / "finetune"),
                 "--output", str(output), "--no-progress", "--no-ensemble"]) == 0
    comparison = json.loads((output / "comparison.json").read_text(encoding="utf-8"))
    assert list(comparison["models"]) == ["baseline", "finetune"] and len(comparison["mcnemar_pairs"]) == 1
    assert "ensemble" not in (output / "comparison.md").read_text(encoding="utf-8")
    with open(output / "disagreements.csv", encoding="utf-8", newline="") as handle:
        assert "ensemble_label" not in next(csv.reader(handle))
    capsys.readouterr()


def test_compare_scores_given_run_folders_without_training(tmp_path, compared, capsys):
    output = tmp_path / "again"
    assert main(["compare", "--baseline-run", str(compared / "baseline"), "--finetune-run", str(compared / "finetune"),
                 "--output", str(output), "--no-progress"]) == 0
    first = json.loads((compared / "comparison.json").read_text(encoding="utf-8"))
    second = json.loads((output / "comparison.json").read_text(encoding="utf-8"))
    for name in ("baseline", "finetune", "ensemble"):
        assert second["models"][name]["metrics"] == first["models"][name]["metrics"]
    for name in ("baseline", "finetune"):
        assert second["models"][name]["train_seconds"] == first["models"][name]["train_seconds"]
    assert second["models"]["ensemble"]["weights"] == first["models"]["ensemble"]["weights"]  # validation predicted here
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


class Member:
    """A stand-in compare member of the data's labels and shape that must not be asked to predict (compare has its
    probabilities already)."""

    kind, base_model = "baseline", None

    def __init__(self, data):
        self.labels, self.shape = data.labels, data.train.shape

    def predict_proba(self, texts):
        raise AssertionError("compare has this member's probabilities; it must not predict again")


def test_without_a_validation_split_the_ensemble_column_has_equal_weights_and_says_so(sample_csv, tmp_path):
    from textxfer.evaluation.compare_ensemble import ensemble_entry
    from textxfer.ensemble.weights import mix

    data = load_data(DataOptions(data=str(sample_csv), validation_size=0.0))
    assert len(data.validation) == 0

    rng = np.random.default_rng(0)
    tests = [rng.dirichlet([1, 1], len(data.test)) for _ in range(2)]
    members = {name: {"model": Member(data), "test": p, "validation": None,
                      "entry": {"folder": tmp_path / name, "train_seconds": 1.0, "predict_texts_per_second": 100.0,
                                "size_bytes": 10}}
               for name, p in zip(("baseline", "finetune"), tests)}
    entry = ensemble_entry(members, data, tmp_path)
    assert entry["weights"] == {"baseline": 0.5, "finetune": 0.5} and "no validation split" in entry["selection"]["note"]
    assert "equal weights: no validation split" in entry["description"]
    assert (entry["predictions"] == mix(tests, [0.5, 0.5]).argmax(axis=1)).all()
    assert entry["model_check"]["split"] == "test"
    assert entry["calibration"]["method"] == "none" and entry["calibration"]["why"] == ("no validation split to fit a "
                                                                                        "temperature on")
    assert entry["predict_texts_per_second"] == 50.0 and entry["size_bytes"] == 20 and entry["train_seconds"] >= 2.0


def test_the_ensemble_column_takes_the_known_best_weights_on_validation_not_test(sample_csv, tmp_path):
    from textxfer.evaluation.compare_ensemble import ensemble_entry

    # Stand-in members whose splits pull opposite ways. Validation: the baseline alone is right (with all its
    # probability) on a quarter of the texts, the fine-tuned model alone on the rest, so the log loss
    # -(¼·log w_baseline + ¾·log w_finetune) is least at (0.25, 0.75) (worked on paper). On test the
    # shares are swapped: those weights are right on a quarter of the test texts; chosen on test they
    # would be (0.75, 0.25) and right on three quarters.
    data = load_data(DataOptions(data=str(sample_csv)))
    probabilities = {"baseline": {}, "finetune": {}}
    for split in ("validation", "test"):
        y = np.asarray(data.labels.encode(getattr(data, split).labels))
        one_hot = np.eye(2)[y]
        baseline_right = (np.arange(len(y)) % 4 == 0) if split == "validation" else (np.arange(len(y)) % 4 != 0)
        probabilities["baseline"][split] = np.where(baseline_right[:, None], one_hot, 1 - one_hot)
        probabilities["finetune"][split] = np.where(baseline_right[:, None], 1 - one_hot, one_hot)
    members = {name: {"model": Member(data), "test": p["test"], "validation": p["validation"],
                      "entry": {"folder": tmp_path / name, "train_seconds": 1.0, "predict_texts_per_second": 100.0,
                                "size_bytes": 10}}
               for name, p in probabilities.items()}
    entry = ensemble_entry(members, data, tmp_path)
    assert entry["weights"] == {"baseline": 0.25, "finetune": 0.75}
    assert entry["selection"]["validation"]["n"] == len(data.validation)
    assert entry["selection"]["validation"]["chosen"]["log_loss"] == pytest.approx(
        -(0.25 * np.log(0.25) + 0.75 * np.log(0.75)), abs=1e-6)
    baseline_right = np.arange(len(data.test)) % 4 != 0
    assert entry["metrics"]["accuracy"] == pytest.approx(np.mean(~baseline_right))
    assert entry["model_check"]["split"] == "validation"


def test_disagreements_md_explains_each_models_reading_of_the_rows_they_disagree_on(compared, tmp_path):
    from textxfer.evaluation import report_explain

    comparison = json.loads((compared / "comparison.json").read_text(encoding="utf-8"))
    explained = comparison["disagreements"]["explained"]
    assert (compared / "disagreements.md").is_file() and "](disagreements.md)" in \
        (compared / "comparison.md").read_text(encoding="utf-8")
    data = load_data(DataOptions(split=str(compared / "split.json")))
    models = {name: classifier.load(compared / name) for name in ("baseline", "finetune")}
    predicted = {name: m.predict_proba(data.test.texts).argmax(axis=1) for name, m in models.items()}
    assert explained["disagreeing"] == int((predicted["baseline"] != predicted["finetune"]).sum())
    # the fixture's two models agree everywhere: plant two disagreements to see what is written for them
    planted = dict(predicted, finetune=predicted["finetune"].copy())
    planted["finetune"][[3, 7]] = 1 - planted["finetune"][[3, 7]]
    record = report_explain.write(tmp_path / "d.md", models, data.test, data.test.labels, planted, limit=1)
    assert record == {"file": "disagreements.md", "disagreeing": 2, "explained": 1, "method": "occlusion"}
    text = (tmp_path / "d.md").read_text(encoding="utf-8")
    assert f"## Test row {data.test.rows[3]} (true label: {data.test.labels[3]})" in text
    assert f"Test row {data.test.rows[7]}" not in text  # over the limit
    for name, model in models.items():
        [why] = model.explain([data.test.texts[3]], method="occlusion")
        assert f"- **{name}** says **{why.label}** ({why.score:.3f}) — for: {why.listed(1, report_explain.SHOWN_WORDS)}" in text
