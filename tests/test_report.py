"""The comparison report: McNemar against hand-worked values, the Markdown/PNG files, the disagreements CSV."""

from __future__ import annotations

import csv
import math
from fractions import Fraction

import pytest
from scipy.stats import binomtest, chi2

from textxfer.evaluation import report
from textxfer.errors import TextxferError


def paired(both: int, a_only: int, b_only: int, neither: int) -> tuple[list[bool], list[bool]]:
    """Correctness lists with the given counts of each (a, b) outcome."""
    cells = [(True, True)] * both + [(True, False)] * a_only + [(False, True)] * b_only + [(False, False)] * neither
    return [a for a, _ in cells], [b for _, b in cells]


def test_mcnemar_exact_binomial():
    result = report.mcnemar(*paired(50, 10, 2, 5))
    expected = float(2 * Fraction(1 + 12 + 66, 4096))  # 2 · P(X ≤ 2 | n = 12, p = ½), by hand
    assert result["p_value"] == pytest.approx(expected, rel=1e-12)
    assert result["p_value"] == pytest.approx(binomtest(2, 12, 0.5).pvalue, rel=1e-12)  # and by SciPy
    assert result["method"] == "exact binomial"
    assert result["statistic"] == 2.0
    assert result["significant"] is True and result["better"] == "a"
    assert (result["n"], result["both_correct"], result["a_only_correct"], result["b_only_correct"],
            result["both_wrong"]) == (67, 50, 10, 2, 5)


def test_mcnemar_chi_square():
    result = report.mcnemar(*paired(100, 10, 30, 7), alpha=0.01)
    stat = (abs(30 - 10) - 1) ** 2 / 40
    assert result["statistic"] == pytest.approx(9.025)
    assert result["statistic"] == pytest.approx(stat)
    # chi-square with 1 df: sf(x) = erfc(sqrt(x / 2))
    assert result["p_value"] == pytest.approx(math.erfc(math.sqrt(stat / 2)), rel=1e-9)
    assert result["p_value"] == pytest.approx(0.002663, abs=1e-6)
    assert result["method"] == "chi-square (continuity-corrected)"
    assert result["significant"] is True and result["better"] == "b" and result["alpha"] == 0.01


@pytest.mark.parametrize("discordant", [10, 15])  # 20 discordant pairs → exact, 30 → chi-square
def test_mcnemar_equal_counts_not_significant(discordant):
    result = report.mcnemar(*paired(40, discordant, discordant, 3))
    assert result["p_value"] == pytest.approx(1.0)
    assert result["significant"] is False and result["better"] is None


def test_mcnemar_no_discordant_pairs_and_length_check():
    result = report.mcnemar([True, False, True], [True, False, True])
    assert (result["p_value"], result["statistic"], result["significant"], result["better"]) == (1.0, 0.0, False, None)
    with pytest.raises(ValueError):
        report.mcnemar([True, False], [True])


def test_mcnemar_is_json_types():
    result = report.mcnemar(*paired(3, 40, 1, 0))
    assert all(type(v) in (int, float, str, bool, type(None)) for v in result.values())
    assert report._p(result["p_value"]) == f"{result['p_value']:.3g}"
    assert report._p(0.0) == "<1e-300"


def model(description, folder, cm, labels, f1s, train, speed, size):
    """A model entry of a comparison dict with a consistent confusion matrix."""
    n = sum(map(sum, cm))
    per_class = {}
    for i, name in enumerate(labels):
        tp, support, predicted = cm[i][i], sum(cm[i]), sum(r[i] for r in cm)
        per_class[name] = {"precision": tp / predicted, "recall": tp / support, "f1": f1s[i], "support": support}
    metrics = {"n": n, "accuracy": sum(cm[i][i] for i in range(len(cm))) / n, "macro_f1": sum(f1s) / len(f1s),
               "weighted_f1": 0.5, "per_class": per_class, "labels": labels, "confusion_matrix": cm}
    return {"description": description, "folder": folder, "metrics": metrics, "train_seconds": train,
            "predict_texts_per_second": speed, "size_bytes": size}


@pytest.fixture
def comparison():
    labels = ["负面", "正面"]
    correct_a, correct_b = paired(700, 60, 150, 90)
    return {
        "labels": labels, "test_rows": 1000,
        "split": {"file": "split.json", "test_sha256": "0123456789abcdef" * 4},
        "models": {
            "baseline": model("word2vec + RandomForest", "baseline", [[380, 120], [120, 380]], labels,
                              [0.76, 0.7612], 31.24, 11900.0, 12 * 2**20 + 2**19),
            "finetune": model("fine-tuned bert-base-chinese", "finetune", [[425, 75], [75, 425]], labels,
                              [0.85, 0.8556], None, 42.5, 390 * 2**20),
        },
        "mcnemar": report.mcnemar(correct_a, correct_b),
        "disagreements": {"file": "disagreements.csv", "rows": 300},
        "settings": {"finetune": {"model": "bert-base-chinese", "epochs": 3}, "baseline": {"trees": 200}},
    }


def test_write_report(tmp_path, comparison, recwarn):
    files = report.write_report(comparison, tmp_path / "out")
    assert files == {"markdown": "comparison.md", "confusion_png": "confusion_matrices.png",
                     "costs_png": "metrics_costs.png"}
    for name in ("confusion_matrices.png", "metrics_costs.png"):
        data = (tmp_path / "out" / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    assert not [w for w in recwarn if "Glyph" in str(w.message)]
    md = (tmp_path / "out" / "comparison.md").read_text(encoding="utf-8")
    for line in [
        "Test split: 1,000 texts from `split.json` (test sha256 `0123456789ab…`); labels: 负面, 正面.",
        "- **baseline**: word2vec + RandomForest (`baseline`)",
        "|  | baseline | finetune | finetune − baseline |",
        "| accuracy | 0.7600 | 0.8500 | +0.0900 |",
        "| macro-F1 | 0.7606 | 0.8528 | +0.0922 |",
        "| weighted-F1 | 0.5000 | 0.5000 | +0.0000 |",
        "| F1[负面] | 0.7600 | 0.8500 | +0.0900 |",
        "| F1[正面] | 0.7612 | 0.8556 | +0.0944 |",
        "| training time (s) | 31.2 | n/a |  |",
        "| predict texts/s | 11,900 | 42.5 |  |",
        "| size on disk (MiB) | 12.5 | 390.0 |  |",
        "finetune is right where baseline is wrong on 150 texts, the reverse on 60; chi-square "
        f"(continuity-corrected) p = {chi2.sf((150 - 60 - 1) ** 2 / 210, 1):.3g} → the difference is significant at "
        "α = 0.05: finetune is better.",
        "Both right on 700, both wrong on 90, of 1,000 texts; statistic = 37.72.",
        "### finetune — fine-tuned bert-base-chinese",
        "| 负面 | 0.8500 | 0.8500 | 0.8500 | 500 |",
        "![confusion matrices](confusion_matrices.png)",
        "![metrics and costs](metrics_costs.png)",
        "[disagreements.csv](disagreements.csv): 300 test texts where the models disagree or both are wrong.",
        '- finetune: `{"epochs": 3, "model": "bert-base-chinese"}`',
    ]:
        assert line in md.splitlines(), line


def test_not_significant_sentence_and_terminal_table(comparison):
    comparison["mcnemar"] = report.mcnemar(*paired(10, 3, 5, 2))
    assert report.mcnemar_sentence(comparison) == (
        "finetune is right where baseline is wrong on 5 texts, the reverse on 3; exact binomial p = 0.727 "
        "→ the difference is not significant at α = 0.05.")
    table = report.comparison_table(comparison).splitlines()
    assert table[0].split() == ["baseline", "finetune", "finetune", "−", "baseline"]
    assert table[1].split() == ["accuracy", "0.7600", "0.8500", "+0.0900"]
    assert table[4].split() == ["F1[负面]", "0.7600", "0.8500", "+0.0900"]
    assert table[6].split() == ["training", "time", "(s)", "31.2", "n/a"]
    # right-aligned columns end at the same terminal column, CJK counted as two columns wide
    assert len({report._width(line) for line in table[:-3]}) == 1


@pytest.fixture
def without_neutral_rows(comparison):
    """``comparison`` with a third class, 中性, that the test split has no row of, recorded as the shared scorer
    records such a class (both models predict it for some texts: its precision is a defined 0; recall and F1 0/0)."""
    comparison["labels"] = ["中性", "负面", "正面"]
    baseline, finetune = (comparison["models"][n]["metrics"] for n in ("baseline", "finetune"))
    for metrics, predicted in ((baseline, 20), (finetune, 5)):
        metrics["labels"] = comparison["labels"]
        metrics["per_class"] = {"中性": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0},
                                **metrics["per_class"]}
        metrics["classes_without_rows"] = ["中性"]
        matrix = metrics["confusion_matrix"]
        matrix[0][0] -= predicted  # true 负面 texts predicted 中性 instead
        metrics["confusion_matrix"] = [[0, 0, 0], [predicted, *matrix[0]], [0, *matrix[1]]]
    return comparison


def test_a_class_without_test_rows_has_no_f1_in_the_tables(without_neutral_rows, tmp_path):
    table = report.comparison_table(without_neutral_rows).splitlines()
    assert [cell.strip() for cell in table[4].split("  ") if cell.strip()] == \
        ["F1[中性]", "n/a (no rows)", "n/a (no rows)", "n/a"]
    assert table[5].split() == ["F1[负面]", "0.7600", "0.8500", "+0.0900"]  # the classes with rows as before
    assert len({report._width(line) for line in table[:-3]}) == 1  # still aligned
    report.write_report(without_neutral_rows, tmp_path)
    md = (tmp_path / "comparison.md").read_text(encoding="utf-8").splitlines()
    for line in ["| F1[中性] | n/a (no rows) | n/a (no rows) | n/a |",
                 "| F1[负面] | 0.7600 | 0.8500 | +0.0900 |",
                 "| 中性 | 0.0000 | n/a (no rows) | n/a (no rows) | 0 |",  # per-class tables: recall and F1
                 "| 负面 | 0.8500 | 0.8500 | 0.8500 | 500 |"]:
        assert line in md, line
    assert md.count("| 中性 | 0.0000 | n/a (no rows) | n/a (no rows) | 0 |") == 2  # both models' tables


def test_write_report_unwritable_folder(tmp_path, comparison):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(TextxferError, match="cannot write"):
        report.write_report(comparison, blocker / "out")


def test_write_disagreements(tmp_path):
    texts = ["good, \"very\" good\nsecond line", "bad", "ok", "meh", "fine", "awful"]
    truth = ["pos", "neg", "pos", "neg", "pos", "neg"]
    predictions = {"baseline": ["neg", "neg", "pos", "pos", "neg", "neg"],
                   "finetune": ["pos", "neg", "neg", "pos", "neg", "neg"]}
    probabilities = {"baseline": [0.6, 0.9, 0.55, 0.7, 0.51, 0.8],
                     "finetune": [0.95, 0.99, 0.6, 0.8, 0.7, 0.97]}
    path = tmp_path / "disagreements.csv"
    written = report.write_disagreements(path, texts, truth, predictions, probabilities,
                                         rows=[10, 11, 12, 13, 14, 15])
    assert written == 4
    with open(path, encoding="utf-8", newline="") as handle:
        got = list(csv.reader(handle))
    assert got == [
        ["row", "text", "true_label", "baseline_label", "baseline_score", "finetune_label", "finetune_score", "case"],
        ["10", "good, \"very\" good\nsecond line", "pos", "neg", "0.6000", "pos", "0.9500", "disagree: finetune right"],
        ["12", "ok", "pos", "pos", "0.5500", "neg", "0.6000", "disagree: baseline right"],
        ["13", "meh", "neg", "pos", "0.7000", "pos", "0.8000", "both wrong"],
        ["14", "fine", "pos", "neg", "0.5100", "neg", "0.7000", "both wrong"],
    ]
    assert not path.read_bytes().startswith(b"\xef\xbb\xbf")
    # without probabilities or row numbers: empty scores, index as row
    assert report.write_disagreements(path, texts[:2], truth[:2], {k: v[:2] for k, v in predictions.items()}) == 1
    with open(path, encoding="utf-8", newline="") as handle:
        assert list(csv.reader(handle))[1] == ["0", texts[0], "pos", "neg", "", "pos", "", "disagree: finetune right"]
    with pytest.raises(ValueError):
        report.write_disagreements(path, texts, truth[:5], predictions)


def test_confusion_titles_fit_inside_the_figure(tmp_path, comparison):
    long = "fine-tuned transformer: multilingual-e5-small-with-a-very-long-local-folder-name"
    comparison["models"]["finetune"]["description"] = long
    fig = report.plot_confusion_matrices(comparison, tmp_path / "cm.png")
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    titles = [ax.title for ax in fig.axes if ax.get_title()]
    assert len(titles) == 2
    for title in titles:
        extent = title.get_window_extent(renderer)
        assert box.x0 <= extent.x0 and extent.x1 <= box.x1 and extent.y1 <= box.y1, title.get_text()
    lines = titles[1].get_text().splitlines()
    assert len(lines) >= 3 and lines[-1] == "accuracy 0.8500"
    assert "".join(lines[:-1]).replace(" ", "") == f"finetune: {long}".replace(" ", "")  # wrapped, nothing cut


def test_cost_panels_with_far_apart_values_use_a_log_axis_so_every_bar_shows(tmp_path, comparison):
    fig = report.plot_metrics_costs(comparison, tmp_path / "costs.png")
    panels = {ax.get_title(): ax for ax in fig.axes}
    speed = panels["predict texts/s, log scale"]  # 11,900 vs 42.5: 280 times apart
    assert speed.get_yscale() == "log"
    renderer = fig.canvas.get_renderer()
    axis_height = speed.get_window_extent(renderer).height
    heights = [bar.get_window_extent(renderer).height for bar in speed.patches]
    assert len(heights) == 2 and min(heights) > 0.15 * axis_height  # the slow model's bar is plainly visible
    size = panels["size on disk (MiB), log scale"]  # 12.5 vs 390 MiB: 31 times apart
    assert size.get_yscale() == "log"
    assert panels["training time (s)"].get_yscale() == "linear"  # one known value: nothing to compare
    comparison["models"]["finetune"]["predict_texts_per_second"] = 5000.0
    fig = report.plot_metrics_costs(comparison, tmp_path / "costs.png")
    assert {ax.get_title(): ax for ax in fig.axes}["predict texts/s"].get_yscale() == "linear"
