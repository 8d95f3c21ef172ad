"""Label problems found while reading the training rows: each names its rows, and training prints it as a warning."""

from __future__ import annotations

from conftest import make_rows, write_csv
from textxfer.data.dataset import DataOptions, load_data
from textxfer.data.label_checks import label_findings


def _planted(tmp_path):
    rows = make_rows(200)
    rows[4] = (rows[4][0], "Positive")  # data row 5: a capital
    rows[9] = (rows[9][0], "negative ")  # data row 10: a space after the label
    rows[99] = ("text", "label")  # data row 100: the header again
    rows[149] = (rows[149][0], "neutral")  # data row 150: a class of one text
    return write_csv(tmp_path / "planted.csv", rows), rows


def test_each_planted_problem_is_found_on_its_rows_and_said_in_one_line(tmp_path):
    path, rows = _planted(tmp_path)
    data = load_data(DataOptions(data=str(path)))
    found = {f.reason: f for f in data.label_findings}
    assert set(found) == {"repeated-header", "label-case", "label-spaces", "thin-class"}
    assert found["repeated-header"].rows == [100]
    assert found["label-case"].rows == [5] and found["label-case"].suggested == {5: "positive"}
    assert "'positive' (" in found["label-case"].message and "and 'Positive' (1 rows)" in found["label-case"].message
    assert found["label-spaces"].rows == [10] and "'negative '" in found["label-spaces"].message
    # the header row's class 'label', 'Positive' and 'neutral' each have one text
    assert found["thin-class"].rows == [5, 100, 150]
    assert all("\n" not in f.message and str(path) in f.message for f in data.label_findings)


def test_a_clean_file_has_no_findings(sample_csv):
    assert load_data(DataOptions(data=str(sample_csv))).label_findings == []


def test_an_id_column_is_one_finding_not_a_thin_class_per_row():
    rows = list(range(1, 101))
    found = label_findings("ids.csv", rows, [f"text {i}" for i in rows], [str(1000 + i) for i in rows], None,
                           "text", "id", multi_label=False)
    assert [f.reason for f in found] == ["id-column"] and "100 different values in 100 rows" in found[0].message
    # 19 classes over 100 rows is a (small) label set, not an id column
    labels = [f"c{i % 19}" for i in rows]
    assert label_findings("ok.csv", rows, [f"t{i}" for i in rows], labels, None, "text", "label", False) == []


def test_multi_label_rows_are_checked_label_by_label():
    rows = [1, 2, 3, 4, 5, 6]
    labels = [("clean", "quiet"), ("Clean",), ("quiet",), ("clean",), ("quiet", "clean"), ("clean",)]
    found = label_findings("tags.csv", rows, ["a", "b", "c", "d", "e", "f"], labels, None, "text", "tags", True)
    case = next(f for f in found if f.reason == "label-case")
    assert case.rows == [2] and case.suggested == {2: "clean"}


def test_training_prints_each_problem_as_a_warning(tmp_path, capsys):
    from textxfer.cli import main

    path, _ = _planted(tmp_path)
    assert main(["baseline", "--data", str(path), "--output", str(tmp_path / "run"), "--no-progress",
                 "--vector-size", "8", "--n-estimators", "5", "--min-count", "1", "--n-jobs", "1"]) == 0
    out = capsys.readouterr().out
    warnings = [line for line in out.splitlines() if line.startswith("WARNING: ")]
    assert len(warnings) == 4 and any("repeat the header" in line for line in warnings)
