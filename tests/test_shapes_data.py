"""Task shapes in the data layer: multi-label rows, text pairs and time-ordered splits — reading, splitting,
reusing a split, and the bad inputs (one line each)."""

from __future__ import annotations

import csv
import json
import random
from collections import Counter

import numpy as np
import pytest

from textxfer.core.config import add_arguments, collect, from_dict
from textxfer.data.dataset import DataOptions, load_data
from textxfer.data.labels import LabelSet
from textxfer.data.splits import read_split_file, write_split_file
from textxfer.errors import TextxferError

GENRES = ("action", "comedy", "drama", "horror", "musical")


def _films(n=300, seed=0):
    """Rows with 0–3 genres each; 'musical' is rare (about 1 row in 15), so a split that ignores labels often
    leaves a split short of it."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        genres = sorted(rng.sample(GENRES[:4], rng.choice([0, 1, 1, 2, 2, 3])) + (["musical"] if i % 15 == 0 else []))
        rows.append({"text": f"film {i} about {' '.join(genres) or 'nothing'}", "tags": "|".join(genres),
                     "year": 1990 + (i * 7) % 31, "answer": f"reply {i % 40}",
                     **{g: int(g in genres) for g in GENRES}})
    return rows


def _write(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture
def films_csv(tmp_path):
    return _write(tmp_path / "films.csv", _films())


def test_the_three_multi_label_inputs_read_the_same_label_sets(tmp_path, films_csv):
    rows = _films()
    jsonl = tmp_path / "films.jsonl"
    jsonl.write_text("\n".join(json.dumps({"text": r["text"], "label": r["tags"].split("|") if r["tags"] else []})
                               for r in rows), encoding="utf-8")
    by_separator = load_data(DataOptions(data=str(films_csv), label_column="tags", label_separator="|"))
    by_json_list = load_data(DataOptions(data=str(jsonl)))  # a JSON list makes the task multi-label by itself
    by_columns = load_data(DataOptions(data=str(films_csv), label_columns=list(GENRES)))
    for data in (by_separator, by_json_list, by_columns):
        assert data.labels == LabelSet(tuple(sorted(GENRES)), "str", multi_label=True)
        assert data.train.shape.multi_label and not data.train.shape.pair
        truth = {r["text"]: tuple(sorted(r["tags"].split("|"))) if r["tags"] else () for r in rows}
        assert all(truth[text] == labels for text, labels in zip(data.train.texts, data.train.labels))
    assert by_separator.split_record["splits"] == by_columns.split_record["splits"]
    unlabelled = sum(1 for r in rows if not r["tags"])
    assert any("rows have no label" in note for note in by_separator.notes)
    counted = sum(v for k, v in by_separator.counts.items() if k.endswith("rows_without_labels"))
    assert counted == unlabelled > 0


def test_indicators_put_each_label_in_its_column():
    labels = LabelSet(("a", "b", "c"), multi_label=True)
    assert labels.indicators([("a", "c"), (), ("b",)]).tolist() == [[1, 0, 1], [0, 0, 0], [0, 1, 0]]
    with pytest.raises(TextxferError, match="'z'"):
        labels.indicators([("z",)])
    assert LabelSet.from_dict(labels.to_dict()) == labels
    assert "multi_label" not in LabelSet(("a", "b")).to_dict()  # single-label manifests stay as they were


def test_multi_label_split_is_iteratively_stratified_and_keeps_rare_labels_in_every_split(tmp_path):
    rows = _films(600)
    path = _write(tmp_path / "films.csv", rows)
    data = load_data(DataOptions(data=str(path), label_column="tags", label_separator="|", validation_size=0.2,
                                 test_size=0.2))
    assert data.split_record["shape"]["label_separator"] == "|"
    overall = LabelSet(tuple(sorted(GENRES)), multi_label=True).indicators(
        [tuple(r["tags"].split("|")) if r["tags"] else () for r in rows]).mean(axis=0)
    for split in (data.validation, data.test):
        count = data.labels.indicators(split.labels).sum(axis=0)
        # Iterative stratification keeps every label's count within one row of its exact share of the split (a
        # random draw misses by 5-11 rows here; stratifying on whole label combinations misses by more than 1).
        assert np.abs(count - overall * len(split)).max() <= 1, (count, overall * len(split))
    assert len(data.test) == 120 and len(data.validation) == 120


def test_identical_texts_stay_in_one_split_and_a_reused_split_gives_the_same_rows(tmp_path):
    rows = _films(200)
    for r in rows[100:140]:  # 40 rows repeat an earlier text with its labels
        twin = rows[r["year"] % 100]
        r["text"], r["tags"] = twin["text"], twin["tags"]
    path = _write(tmp_path / "films.csv", rows)
    data = load_data(DataOptions(data=str(path), label_column="tags", label_separator="|"))
    split_of = {}
    for name, split in data.splits().items():
        for text in split.texts:
            assert split_of.setdefault(text, name) == name
    write_split_file(tmp_path / "split.json", data.split_record)
    again = load_data(DataOptions(split=str(tmp_path / "split.json")))
    assert again.test.rows == data.test.rows and again.test.labels == data.test.labels
    assert again.labels == data.labels


@pytest.mark.parametrize("change, message", [
    (lambda rows: None, "no cell of label column 'tags' contains the separator ';', but .* contain '\\|'"),
    (lambda rows: [r.update(tags="") for r in rows], "no training row has a label in column 'tags'"),
    (lambda rows: rows[5].update(tags="action|western"), "used by one row only: 'western' \\(row 6\\)"),
    (lambda rows: [r.update(tags="drama") for r in rows], "use only label 'drama'"),
])
def test_bad_multi_label_columns_are_one_line(tmp_path, change, message):
    rows = _films(100)
    change(rows)
    path = _write(tmp_path / "films.csv", rows)
    separator = ";" if "';'" in message else "|"
    with pytest.raises(TextxferError, match=message) as caught:
        load_data(DataOptions(data=str(path), label_column="tags", label_separator=separator))
    assert "\n" not in str(caught.value)


def test_a_label_column_that_is_not_zero_or_one_names_row_column_and_value(tmp_path):
    rows = _films(50)
    rows[7]["comedy"] = "maybe"
    path = _write(tmp_path / "films.csv", rows)
    with pytest.raises(TextxferError, match="row 8, column 'comedy': 'maybe' is not 0 or 1"):
        load_data(DataOptions(data=str(path), label_columns=list(GENRES)))


def test_label_columns_parse_from_the_command_line():
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser, DataOptions, "data")
    options = from_dict(DataOptions, collect(parser.parse_args(["--label-columns", "action", "drama"]), DataOptions))
    assert options.label_columns == ["action", "drama"] and options.shape.multi_label
    with pytest.raises(TextxferError, match="one 0/1 column is a single yes/no label"):
        DataOptions(label_columns=["action"]).shape


def test_text_pairs_are_read_as_pairs_and_leakage_is_judged_on_the_pair(tmp_path):
    rows = [{"question": f"question {i % 60}", "answer": f"answer {i}", "label": ["yes", "no"][i % 2]} for i in range(240)]
    path = _write(tmp_path / "pairs.csv", rows)
    data = load_data(DataOptions(data=str(path), text_column="question", text_pair_column="answer"))
    assert data.train.shape.pair and not data.train.shape.multi_label
    assert all(isinstance(x, tuple) and x[1].startswith("answer") for x in data.train.inputs)
    # The same question with another answer is another input: no leakage note, and both splits keep their rows.
    assert not any("leakage" in note for note in data.notes)
    assert len(data.train) + len(data.validation) + len(data.test) == 240
    assert data.split_record["shape"]["text_pair_column"] == "answer"
    write_split_file(tmp_path / "split.json", data.split_record)
    again = load_data(DataOptions(split=str(tmp_path / "split.json")))
    assert again.test.inputs == data.test.inputs


def test_pair_bad_inputs_are_one_line_each(tmp_path):
    rows = [{"question": f"q {i}", "answer": f"a {i}", "label": ["yes", "no"][i % 2]} for i in range(60)]
    rows[9]["answer"] = "  "
    path = _write(tmp_path / "pairs.csv", rows)
    with pytest.raises(TextxferError, match="1 row\\(s\\) with an empty second text in column 'answer' \\(rows 10\\)"):
        load_data(DataOptions(data=str(path), text_column="question", text_pair_column="answer"))
    dropped = load_data(DataOptions(data=str(path), text_column="question", text_pair_column="answer", drop_invalid=True))
    assert 10 not in dropped.train.rows + dropped.validation.rows + dropped.test.rows
    train = _write(tmp_path / "train.csv", rows[10:])
    test = _write(tmp_path / "test.csv", [{"question": r["question"], "label": r["label"]} for r in rows[:9]])
    with pytest.raises(TextxferError, match="test.csv.*'answer'"):
        load_data(DataOptions(train=str(train), test=str(test), text_column="question", text_pair_column="answer"))
    with pytest.raises(TextxferError, match="--text-pair-column 'question' is also the text or label column"):
        load_data(DataOptions(data=str(path), text_column="question", text_pair_column="question"))


def test_time_column_puts_the_latest_rows_in_test_and_the_ones_before_in_validation(tmp_path):
    rows = [{"text": f"text {i}", "label": ["a", "b"][i % 2], "when": f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}"}
            for i in range(200)]
    random.Random(3).shuffle(rows)
    path = _write(tmp_path / "dated.csv", rows)
    data = load_data(DataOptions(data=str(path), time_column="when"))
    when = {i + 1: r["when"] for i, r in enumerate(rows)}
    train, validation, test = ([when[row] for row in split.rows] for split in (data.train, data.validation, data.test))
    assert (len(validation), len(test)) == (20, 20)
    assert max(train) <= min(validation) and max(validation) <= min(test)
    assert data.split_record["method"] == "time" and data.split_record["time_column"] == "when"
    write_split_file(tmp_path / "split.json", data.split_record)
    reused = load_data(DataOptions(split=str(tmp_path / "split.json")))
    assert reused.test.rows == data.test.rows and reused.split_record["time_column"] == "when"
    numbers = _write(tmp_path / "numbered.csv", [dict(r, when=i) for i, r in enumerate(rows)])
    by_number = load_data(DataOptions(data=str(numbers), time_column="when"))
    assert sorted(by_number.test.rows) == list(range(181, 201))


@pytest.mark.parametrize("value, message", [
    ("last spring", "row 5, column 'when': 'last spring' is not a time"),
    ("7", "row 5, column 'when': '7' is a number, but earlier rows hold dates"),
    ("", "row 5, column 'when': no time given"),
])
def test_unparseable_time_values_name_the_row(tmp_path, value, message):
    rows = [{"text": f"text {i}", "label": ["a", "b"][i % 2], "when": f"2024-01-{1 + i % 28:02d}"} for i in range(40)]
    rows[4]["when"] = value
    path = _write(tmp_path / "dated.csv", rows)
    with pytest.raises(TextxferError, match=message):
        load_data(DataOptions(data=str(path), time_column="when"))


def test_single_label_split_records_are_unchanged(reviews_csv):
    record = load_data(DataOptions(data=str(reviews_csv))).split_record
    assert "shape" not in record and "time_column" not in record
    assert record["method"] == "random"


def test_a_malformed_shape_in_split_json_is_refused(tmp_path, films_csv):
    data = load_data(DataOptions(data=str(films_csv), label_column="tags", label_separator="|"))
    record = dict(data.split_record, shape="multi")
    write_split_file(tmp_path / "split.json", record)
    with pytest.raises(TextxferError, match="malformed task shape"):
        read_split_file(tmp_path / "split.json")


def test_label_counts_in_thin_class_notes_count_each_label_of_a_multi_label_row(films_csv):
    data = load_data(DataOptions(data=str(films_csv), label_column="tags", label_separator="|"))
    counts = Counter(label for names in data.test.labels for label in names)
    note = next(n for n in data.notes if n.startswith("test has fewer than 10 rows"))
    assert f"'musical' {counts['musical']}" in note


@pytest.mark.parametrize("options, why", [
    ({"label_column": "tags", "label_separator": "|"}, "one confident class per text, not a set of labels"),
    ({"text_pair_column": "answer", "label_column": "action"}, "one text per row, not pairs"),
])
def test_unlabelled_texts_are_refused_for_the_new_shapes_with_the_reason(films_csv, tmp_path, options, why):
    unlabelled = tmp_path / "more.txt"
    unlabelled.write_text("\n".join(f"another film {i}" for i in range(50)) + "\n", encoding="utf-8")
    with pytest.raises(TextxferError, match="self-training on .* is not supported") as caught:
        load_data(DataOptions(data=str(films_csv), unlabelled=str(unlabelled), **options))
    assert why in str(caught.value) and "\n" not in str(caught.value)
