"""The degenerate-model guard: the check on hand-made scores, and a planted one-class model through run and compare."""

from __future__ import annotations

import json

import numpy as np
import pytest

from textxfer.cli import main
from textxfer.data.dataset import DataOptions, load_data
from textxfer.evaluation.guard import check_model, warning_line
from textxfer.data.labels import LabelSet
from textxfer.core.metrics import score
from textxfer.baseline.pipeline import BaselineClassifier
from textxfer.evaluation.runner import run_prepared

LABELS = LabelSet(("negative", "positive"))


def scores(true: list[int], predicted: list[int]) -> dict:
    return score(np.asarray(true), np.asarray(predicted), LABELS)


def train_labels(negative: int, positive: int) -> list[str]:
    return ["negative"] * negative + ["positive"] * positive


def test_one_class_for_every_text_is_degenerate():
    true = [0] * 42 + [1] * 58
    check = check_model(scores(true, [1] * 100), train_labels(42, 58), LABELS)
    assert check["degenerate"] is True
    assert check["reasons"][0] == "it predicts 'positive' for every validation text (its true share is 58%)"
    assert "not above the" in check["reasons"][1] and check["majority_class"] == "positive"
    assert check["predicted_shares"] == {"negative": 0.0, "positive": 1.0}
    assert check["true_shares"] == {"negative": 0.42, "positive": 0.58}
    # the constant majority answer: F1 0 for negative, 2·0.58/1.58 for positive, averaged
    assert check["majority_macro_f1"] == pytest.approx((2 * 0.58 / 1.58) / 2)
    line = warning_line(check, "finetune", "finetune")
    assert line.startswith("WARNING: finetune is degenerate: it predicts 'positive' for every validation text")
    assert "\n" not in line and "--min-steps" in line


def test_nearly_one_class_is_degenerate_but_a_useful_skewed_model_is_not():
    true = [0] * 42 + [1] * 58
    nearly = [1] * 40 + [0] * 2 + [1] * 58  # 98% positive, true share 58%
    check = check_model(scores(true, nearly), train_labels(42, 58), LABELS)
    assert check["degenerate"] and check["reasons"][0].startswith("it predicts 'positive' for 98% of the validation")
    good = [0] * 38 + [1] * 4 + [1] * 55 + [0] * 3
    fine = check_model(scores(true, good), train_labels(42, 58), LABELS)
    assert fine["degenerate"] is False and fine["reasons"] == [] and warning_line(fine) is None
    # a data set that really is 97% one class: predicting it for 98% of texts is not a collapse by itself
    skewed_true = [0] * 3 + [1] * 97
    skewed = [0] * 2 + [1] * 98
    assert check_model(scores(skewed_true, skewed), train_labels(3, 97), LABELS)["degenerate"] is False


def test_macro_f1_not_above_the_majority_answer_is_degenerate():
    true = [0] * 50 + [1] * 50
    inverted = [1] * 50 + [0] * 50  # both classes predicted, every answer wrong
    check = check_model(scores(true, inverted), train_labels(50, 50), LABELS)
    assert check["macro_f1"] == pytest.approx(0.0)
    assert check["degenerate"] and check["reasons"] == [
        f"its validation macro-F1 0.0000 is not above the {check['majority_macro_f1']:.4f} of always answering "
        "the majority class 'negative'"]
    mostly_wrong = [1] * 45 + [0] * 5 + [0] * 30 + [1] * 20  # macro-F1 0.233: below the majority answer's 0.333
    assert check_model(scores(true, mostly_wrong), train_labels(50, 50), LABELS)["degenerate"] is True
    coin = [0, 1] * 50  # chance level (macro-F1 0.5) is above the majority answer (0.333): not flagged
    assert check_model(scores(true, coin), train_labels(50, 50), LABELS)["degenerate"] is False


def test_small_or_one_class_splits_are_judged_only_for_a_single_predicted_class():
    few = check_model(scores([0, 0, 1, 1, 1], [1, 1, 0, 1, 1]), train_labels(2, 3), LABELS)
    assert few["degenerate"] is False  # 5 texts: F1 against the majority answer is noise
    assert check_model(scores([0, 0, 1, 1, 1], [1] * 5), train_labels(2, 3), LABELS)["degenerate"] is True
    assert check_model(scores([1] * 30, [1] * 30), train_labels(2, 3), LABELS)["degenerate"] is False


class OneClassBaseline(BaselineClassifier):
    """A planted degenerate model: a real baseline that answers 'positive' for every text."""

    def raw_proba(self, texts):
        column = self.labels.names.index("positive")
        out = np.zeros((len(texts), len(self.labels)))
        out[:, column] = 1.0
        return out


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory, sample_csv):
    from textxfer.baseline.pipeline import BaselineConfig

    data = load_data(DataOptions(data=str(sample_csv)))
    folder = tmp_path_factory.mktemp("planted") / "baseline"
    lines: list[str] = []
    config = BaselineConfig(vector_size=16, epochs=5, min_count=1, n_estimators=20, n_jobs=1)
    run_prepared(OneClassBaseline(config), data, folder, progress=False, log=lines.append)
    return folder, lines


def test_a_planted_one_class_model_is_saved_but_never_silently(planted_run, trained_models):
    folder, lines = planted_run
    warnings = [line for line in lines if line.startswith("WARNING")]
    assert len(warnings) == 1 and warnings[0].startswith("WARNING: this model is degenerate: it predicts 'positive'")
    assert not any("are empty" in line for line in lines)  # the split was scored: no "nothing was scored" note
    check = json.loads((folder / "report.json").read_text(encoding="utf-8"))["model_check"]
    assert check["degenerate"] is True and check["split"] == "validation"
    assert check["predicted_shares"]["positive"] == 1.0
    normal = json.loads((trained_models["baseline"] / "report.json").read_text(encoding="utf-8"))["model_check"]
    assert normal["degenerate"] is False and normal["macro_f1"] > normal["majority_macro_f1"]


def test_compare_flags_a_degenerate_run_folder(tmp_path, planted_run, trained_models, capsys):
    folder, _ = planted_run
    output = tmp_path / "cmp"
    assert main(["compare", "--baseline-run", str(folder), "--finetune-run", str(trained_models["finetune"]),
                 "--output", str(output), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "WARNING: baseline is degenerate: it predicts 'positive' for every validation text" in printed
    assert "finetune is degenerate" not in printed
    comparison = json.loads((output / "comparison.json").read_text(encoding="utf-8"))
    assert comparison["models"]["baseline"]["model_check"]["degenerate"] is True
    assert comparison["models"]["finetune"]["model_check"]["degenerate"] is False
    markdown = (output / "comparison.md").read_text(encoding="utf-8")
    assert "> **Warning: baseline is degenerate** — it predicts 'positive' for every validation text" in markdown


def test_a_healthy_run_logs_its_table_and_nothing_else(tmp_path, sample_csv, fast_config):
    data = load_data(DataOptions(data=str(sample_csv)))
    lines: list[str] = []
    result = run_prepared(BaselineClassifier(fast_config), data, tmp_path / "ok", progress=False, log=lines.append)
    assert result.report["model_check"]["degenerate"] is False
    assert len(lines) == 2 and lines[0].split()[:3] == ["split", "n", "accuracy"]
    assert lines[1].startswith("calibration: ")  # the table, then the calibration line; no warning
