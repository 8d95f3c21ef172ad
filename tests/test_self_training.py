"""``--unlabelled``: reading the texts, refusing evaluation texts, choosing confident class-balanced pseudo-labels,
and keeping the better model by validation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import make_hard_rows, make_rows, write_csv
from textxfer.cli import main
from textxfer.data.dataset import DataOptions, load_data
from textxfer.data.unlabelled import read_unlabelled, without
from textxfer.errors import TextxferError
from textxfer.evaluation import self_training

FAST = ["--vector-size", "16", "--min-count", "1", "--n-estimators", "30", "--n-jobs", "1"]


def test_a_text_file_is_one_text_per_line_and_a_table_its_text_column(tmp_path):
    path = tmp_path / "u.txt"
    path.write_text("好酒店\n\n  \n差评\n好酒店\n", encoding="utf-8")
    texts = read_unlabelled(str(path))
    assert (texts.texts, texts.rows) == (["好酒店", "差评"], [1, 4])
    assert any("2 empty" in note for note in texts.notes) and any("1 repeated" in note for note in texts.notes)
    table = write_csv(tmp_path / "u.csv", [("a", "x"), ("b", "y")], header=("body", "other"))
    assert read_unlabelled(str(table), text_column="body").texts == ["a", "b"]
    with pytest.raises(TextxferError, match="column 'text'"):
        read_unlabelled(str(table))
    (tmp_path / "empty.txt").write_text("\n\n", encoding="utf-8")
    with pytest.raises(TextxferError, match="no texts found"):
        read_unlabelled(str(tmp_path / "empty.txt"))
    with pytest.raises(TextxferError, match="no such file"):
        read_unlabelled(str(tmp_path / "missing.txt"))


def test_a_validation_or_test_text_among_the_unlabelled_is_refused_naming_both_rows(tmp_path, sample_csv):
    data = load_data(DataOptions(data=str(sample_csv)))
    leaked = data.test.texts[3]
    path = tmp_path / "u.txt"
    path.write_text("全新的一句话\n" + leaked + "\n", encoding="utf-8")
    with pytest.raises(TextxferError) as caught:
        load_data(DataOptions(data=str(sample_csv), unlabelled=str(path)))
    message = str(caught.value)
    assert "row 2's text" in message and f"test row {data.test.rows[3]}" in message and "leak" in message
    assert "\n" not in message
    # training texts are allowed in the file (a study trains on subsets) and left out of each fit
    path.write_text("全新的一句话\n" + data.train.texts[0] + "\n", encoding="utf-8")
    loaded = load_data(DataOptions(data=str(sample_csv), unlabelled=str(path)))
    assert without(loaded.unlabelled, loaded.train.texts) == (["全新的一句话"], 1)


def test_without_a_validation_split_self_training_is_refused(tmp_path, sample_csv):
    path = tmp_path / "u.txt"
    path.write_text("全新的一句话\n", encoding="utf-8")
    with pytest.raises(TextxferError, match="needs a validation split"):
        load_data(DataOptions(data=str(sample_csv), unlabelled=str(path), validation_size=0.0))


def test_pseudo_labels_are_the_confident_half_of_each_class_balanced_and_capped():
    probabilities = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.6, 0.4],  # class 0: 4 texts, top half = rows 0, 1
                              [0.1, 0.9], [0.45, 0.55]])  # class 1: 2 texts, top half = row 4
    indices, classes, record = self_training.select(probabilities)
    assert record["per_class"] == 1 and sorted(indices.tolist()) == [0, 4] and classes.tolist() == [0, 1]
    assert record["lowest_confidence"] == 0.9 and record["predicted_per_class"] == [4, 2]
    many = np.array([[p, 1 - p] for p in np.linspace(0.51, 0.99, 40)] + [[1 - p, p] for p in np.linspace(0.51, 0.99, 40)])
    indices, classes, record = self_training.select(many, cap=5)
    assert record["per_class"] == 5 and np.bincount(classes).tolist() == [5, 5]
    assert many[indices].max(axis=1).min() >= 0.93  # the five most confident of each class
    silent = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0]])  # the third class is never predicted: nothing to balance
    assert self_training.select(silent)[2]["per_class"] == 0


@pytest.fixture(scope="module")
def hard_split(tmp_path_factory):
    """A hard fixture (the baseline does not score 1.0 on it) and unlabelled texts from the same distribution."""
    folder = tmp_path_factory.mktemp("self-training")
    rows = make_hard_rows(1400, seed=11)
    data = write_csv(folder / "data.csv", rows[:400])
    unlabelled = folder / "unlabelled.txt"
    unlabelled.write_text("\n".join(text for text, _ in rows[400:]) + "\n", encoding="utf-8")
    return data, unlabelled


def test_baseline_self_trains_and_reports_the_pseudo_labels_and_both_validation_scores(hard_split, tmp_path, capsys):
    data, unlabelled = hard_split
    output = tmp_path / "run"
    assert main(["baseline", "--data", str(data), "--unlabelled", str(unlabelled), "--output", str(output),
                 "--no-progress", *FAST]) == 0
    out = capsys.readouterr().out
    report = json.loads((output / "report.json").read_text(encoding="utf-8"))
    record = report["self_training"]
    assert record["unlabelled_texts"] == 1000 and record["per_class"] > 50
    assert set(record["pseudo_labels"].values()) == {record["per_class"]}  # balanced over both classes
    before, after = record["validation"]["without"]["macro_f1"], record["validation"]["with"]["macro_f1"]
    assert record["kept"] == ("with" if after > before else "without")
    metrics = json.loads((output / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["validation"]["macro_f1"] == pytest.approx(after if record["kept"] == "with" else before, abs=1e-6)
    assert metrics["test"]["accuracy"] == pytest.approx(record["test"][record["kept"]]["accuracy"], abs=1e-6)
    manifest = json.loads((output / "textxfer.json").read_text(encoding="utf-8"))
    assert manifest["data"]["unlabelled"]["sha256"] == record["sha256"]
    assert "self-training: " in out and "pseudo-labels" in out


def test_pseudo_labels_that_hurt_on_validation_are_not_kept(hard_split, tmp_path, monkeypatch):
    """Flipped pseudo-labels make a worse second model: validation keeps the first, and that one is written."""
    data, unlabelled = hard_split
    choose = self_training.select

    def flipped(probabilities, cap=self_training.PER_CLASS_CAP):
        indices, classes, record = choose(probabilities, cap)
        return indices, 1 - classes, record

    monkeypatch.setattr(self_training, "select", flipped)
    output = tmp_path / "run"
    assert main(["baseline", "--data", str(data), "--unlabelled", str(unlabelled), "--output", str(output),
                 "--no-progress", *FAST]) == 0
    record = json.loads((output / "report.json").read_text(encoding="utf-8"))["self_training"]
    assert record["validation"]["with"]["macro_f1"] < record["validation"]["without"]["macro_f1"] - 0.1
    assert record["kept"] == "without"
    metrics = json.loads((output / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["validation"]["macro_f1"] == pytest.approx(record["validation"]["without"]["macro_f1"], abs=1e-6)


def test_a_run_self_trained_with_other_texts_is_not_a_finished_run(hard_split, tmp_path, sample_csv):
    """compare and study reuse a finished run only if it was self-trained on the same unlabelled file (or none)."""
    from textxfer.baseline.pipeline import BaselineClassifier, BaselineConfig
    from textxfer.evaluation.runner import finished_run, run_prepared

    _, unlabelled = hard_split
    config = BaselineConfig(vector_size=16, min_count=1, n_estimators=20, n_jobs=1)
    plain = load_data(DataOptions(data=str(sample_csv)))
    folder = tmp_path / "plain"
    run_prepared(BaselineClassifier(config), plain, folder, progress=False, log=lambda *_: None)
    assert finished_run(folder, "baseline", config, plain)
    with_texts = load_data(DataOptions(data=str(sample_csv), unlabelled=str(unlabelled)))
    assert not finished_run(folder, "baseline", config, with_texts)
    rows = make_rows(300, seed=5)[240:]
    (tmp_path / "more.txt").write_text("\n".join(t for t, _ in rows if t not in set(plain.validation.texts) | set(plain.test.texts)),
                                       encoding="utf-8")
    other = load_data(DataOptions(data=str(sample_csv), unlabelled=str(tmp_path / "more.txt")))
    folder = tmp_path / "self-trained"
    run_prepared(BaselineClassifier(config), with_texts, folder, progress=False, log=lambda *_: None)
    assert finished_run(folder, "baseline", config, with_texts)
    assert not finished_run(folder, "baseline", config, other) and not finished_run(folder, "baseline", config, plain)
