"""The shared data layer: formats, columns, splits and their reuse, hygiene, error messages."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import pytest

from conftest import make_rows, write_csv
from textxfer.data.dataset import DataOptions, load_data
from textxfer.errors import TextxferError
from textxfer.data.splits import write_split_file


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_automatic_split_is_stratified_seeded_and_leaves_input_untouched(reviews_csv):
    before = digest(reviews_csv)
    first = load_data(DataOptions(data=str(reviews_csv)))
    second = load_data(DataOptions(data=str(reviews_csv)))
    assert (len(first.train), len(first.validation), len(first.test)) == (192, 24, 24)
    assert Counter(first.test.labels) == {"positive": 12, "negative": 12}
    assert first.split_record == second.split_record
    other_seed = load_data(DataOptions(data=str(reviews_csv), seed=7))
    assert other_seed.test.rows != first.test.rows
    all_rows = first.train.rows + first.validation.rows + first.test.rows
    assert sorted(all_rows) == list(range(1, 241))
    assert digest(reviews_csv) == before


@pytest.mark.parametrize("fmt", ["tsv", "jsonl", "json", "parquet", "saved"])
def test_every_format_gives_the_same_rows(tmp_path, rows, fmt):
    import datasets

    records = [{"text": t, "label": l} for t, l in rows]
    if fmt == "tsv":
        path = write_csv(tmp_path / "d.tsv", rows, delimiter="\t")
    elif fmt == "jsonl":
        path = tmp_path / "d.jsonl"
        path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records), encoding="utf-8")
    elif fmt == "json":
        path = tmp_path / "d.json"
        path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    elif fmt == "parquet":
        path = tmp_path / "d.parquet"
        datasets.Dataset.from_list(records).to_parquet(str(path))
    else:
        path = tmp_path / "saved"
        datasets.Dataset.from_list(records).save_to_disk(str(path))
    reference = load_data(DataOptions(data=str(write_csv(tmp_path / "d.csv", rows))))
    loaded = load_data(DataOptions(data=str(path)))
    assert loaded.test.texts == reference.test.texts
    assert loaded.train.labels == reference.train.labels


def test_saved_dataset_dict_uses_its_own_splits(tmp_path, rows):
    import datasets

    def part(chunk):
        return datasets.Dataset.from_list([{"text": t, "label": l} for t, l in chunk])

    folder = tmp_path / "dd"
    datasets.DatasetDict({"train": part(rows[:200]), "test": part(rows[200:])}).save_to_disk(str(folder))
    data = load_data(DataOptions(data=str(folder)))
    assert data.test.texts == [t for t, _ in rows[200:]]
    assert len(data.validation) == 20 and len(data.train) == 180  # validation carved from train


def test_wrong_column_lists_the_columns(reviews_csv):
    with pytest.raises(TextxferError) as error:
        load_data(DataOptions(data=str(reviews_csv), text_column="review"))
    message = str(error.value)
    assert "reviews.csv" in message and "'review'" in message and "['text', 'label']" in message
    assert "--text-column" in message


def test_integer_labels_and_custom_columns(tmp_path, rows):
    path = write_csv(tmp_path / "c.csv", [(t, int(l == "positive")) for t, l in rows], header=("review", "y"))
    data = load_data(DataOptions(data=str(path), text_column="review", label_column="y"))
    assert data.labels.names == ("0", "1") and data.labels.kind == "int"


def test_split_is_saved_and_reused_exactly(tmp_path, reviews_csv):
    data = load_data(DataOptions(data=str(reviews_csv)))
    split_file = tmp_path / "split.json"
    write_split_file(split_file, data.split_record)
    record = json.loads(split_file.read_text())
    assert record["splits"]["test"]["rows"] == data.test.rows
    assert record["splits"]["test"]["sha256"] == digest(reviews_csv)
    reused = load_data(DataOptions(split=str(split_file), seed=99, test_size=0.3))
    assert reused.test.rows == data.test.rows and reused.train.texts == data.train.texts


def test_split_of_a_changed_file_is_refused(tmp_path, reviews_csv, rows):
    data = load_data(DataOptions(data=str(reviews_csv)))
    split_file = tmp_path / "split.json"
    write_split_file(split_file, data.split_record)
    write_csv(reviews_csv, rows[:-1])
    with pytest.raises(TextxferError, match="contents changed since the split was made"):
        load_data(DataOptions(split=str(split_file)))


def test_split_column_and_separate_files(tmp_path, rows):
    names = ["train"] * 200 + ["dev"] * 20 + ["test"] * 20
    path = write_csv(tmp_path / "s.csv", [(t, l, s) for (t, l), s in zip(rows, names)], header=("text", "label", "split"))
    data = load_data(DataOptions(data=str(path)))
    assert (len(data.train), len(data.validation), len(data.test)) == (200, 20, 20)
    assert data.split_record["method"] == "column"
    train = write_csv(tmp_path / "train.csv", rows[:200])
    test = write_csv(tmp_path / "test.csv", rows[200:])
    files = load_data(DataOptions(train=str(train), test=str(test)))
    assert files.test.texts == [t for t, _ in rows[200:]]
    assert len(files.validation) == 20 and len(files.train) == 180


def test_unknown_split_value_names_row_and_value(tmp_path, rows):
    path = write_csv(tmp_path / "s.csv", [(t, l, "train") for t, l in rows[:5]] + [(rows[5][0], rows[5][1], "holdout")],
                     header=("text", "label", "split"))
    with pytest.raises(TextxferError, match=r"row 6, column 'split': unknown split 'holdout'"):
        load_data(DataOptions(data=str(path)))


def test_labels_missing_from_training_are_named_with_counts(tmp_path, rows):
    train = write_csv(tmp_path / "train.csv", rows[:100])
    test = write_csv(tmp_path / "test.csv", rows[100:110] + [("全新的评论一", "neutral"), ("全新的评论二", "neutral")])
    with pytest.raises(TextxferError, match=r"never occur in training: 'neutral' ×2"):
        load_data(DataOptions(train=str(train), test=str(test)))


def test_empty_texts_and_missing_labels(tmp_path, rows):
    bad = list(rows)
    bad[3] = ("   ", "positive")
    bad[9] = (bad[9][0], "")
    path = write_csv(tmp_path / "bad.csv", bad)
    with pytest.raises(TextxferError) as error:
        load_data(DataOptions(data=str(path)))
    assert "bad.csv: 1 row(s) with an empty, whitespace-only or invisible (zero-width) text in column 'text' (rows 4)" in str(error.value)
    assert "--drop-invalid" in str(error.value)
    data = load_data(DataOptions(data=str(path), drop_invalid=True))
    assert data.counts["dropped_invalid"] == 2
    assert any("missing label" in note and "rows 10" in note for note in data.notes)
    assert 4 not in data.train.rows + data.validation.rows + data.test.rows


def test_leakage_is_removed_from_evaluation_and_reported(tmp_path, rows):
    train = write_csv(tmp_path / "train.csv", rows[:200])
    test = write_csv(tmp_path / "test.csv", rows[200:] + rows[:3])
    data = load_data(DataOptions(train=str(train), test=str(test)))
    assert len(data.test) == 40
    assert data.counts["leaked_test"] == 3
    assert any("leakage" in note and "rows 41, 42, 43" in note for note in data.notes)


def test_automatic_split_keeps_duplicates_together_and_reports_conflicts(tmp_path, rows):
    doubled = list(rows) + [rows[0], rows[1], (rows[2][0], "negative")]
    data = load_data(DataOptions(data=str(write_csv(tmp_path / "d.csv", doubled))))
    assert "leaked_test" not in data.counts and "leaked_validation" not in data.counts
    assert data.counts["conflicting_texts"] == 1
    assert any("conflicting labels (rows 3, 243)" in note for note in data.notes)


def test_non_utf8_names_file_and_offset(tmp_path, rows):
    path = tmp_path / "gbk.csv"
    path.write_bytes("text,label\n".encode() + "很好的酒店,positive\n".encode("gbk"))
    with pytest.raises(TextxferError, match=r"gbk.csv: not valid utf-8 at byte offset 11 .*--encoding"):
        load_data(DataOptions(data=str(path)))
    many = tmp_path / "many.csv"
    many.write_bytes("\n".join(["text,label"] + [f"{t},{l}" for t, l in rows]).encode("gbk"))
    assert len(load_data(DataOptions(data=str(many), encoding="gbk")).train) == 192


def test_utf16_without_a_byte_order_mark_reads_as_little_endian_in_training_and_predict(tmp_path, rows):
    from textxfer.serving.predict_files import ChunkReader

    path = tmp_path / "le.csv"
    path.write_bytes("\n".join(["text,label"] + [f"{t},{l}" for t, l in rows]).encode("utf-16-le"))  # no BOM
    data = load_data(DataOptions(data=str(path), encoding="utf-16"))
    assert sorted(data.train.texts + data.validation.texts + data.test.texts) == sorted(t for t, _ in rows)
    chunks = list(ChunkReader(str(path), "csv", "text", 1000, encoding="utf-16"))
    assert chunks[0].texts == [t for t, _ in rows]
    odd = tmp_path / "odd.csv"
    odd.write_bytes("text,label\n好,p\n".encode("utf-16-le") + b"\x00")  # a dangling half character
    with pytest.raises(TextxferError, match=r"odd.csv: not valid utf-16 .*--encoding"):
        load_data(DataOptions(data=str(odd), encoding="utf-16"))


def test_ragged_rows_and_broken_jsonl_name_the_place(tmp_path, rows):
    ragged = tmp_path / "r.csv"
    ragged.write_text("text,label\n好,positive\n差,negative,extra\n", encoding="utf-8")
    with pytest.raises(TextxferError, match=r"r.csv: row 2 \(line 3\) has 3 fields"):
        load_data(DataOptions(data=str(ragged)))
    broken = tmp_path / "b.jsonl"
    broken.write_text('{"text": "好", "label": "p"}\n{"text": oops}\n', encoding="utf-8")
    with pytest.raises(TextxferError, match=r"b.jsonl: line 2 is not valid JSON"):
        load_data(DataOptions(data=str(broken)))


def test_float_label_is_refused_with_row(tmp_path):
    path = tmp_path / "f.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": 0.5}\n', encoding="utf-8")
    with pytest.raises(TextxferError, match=r"row 2, column 'label': label 0.5 is a float"):
        load_data(DataOptions(data=str(path)))


def test_missing_file_and_no_data(tmp_path):
    with pytest.raises(TextxferError, match="no such file"):
        load_data(DataOptions(data=str(tmp_path / "nope.csv")))
    with pytest.raises(TextxferError, match="no data given"):
        load_data(DataOptions())
    with pytest.raises(TextxferError, match="either --data or --train"):
        DataOptions(data="a.csv", train="b.csv")


def test_every_row_lands_in_exactly_one_split_with_its_own_text_and_label(tmp_path):
    rows = make_rows(500, seed=3)
    data = load_data(DataOptions(data=str(write_csv(tmp_path / "r.csv", rows))))
    parts = (data.train, data.validation, data.test)
    numbers = [n for part in parts for n in part.rows]
    assert sorted(numbers) == list(range(1, 501)) and [len(p) for p in parts] == [400, 50, 50]
    for part in parts:  # row n is the n-th data row of the file, text and label together
        assert all(rows[n - 1] == (text, label) for n, text, label in zip(part.rows, part.texts, part.labels))


def test_hub_name_offline_gives_an_actionable_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(TextxferError, match=r"nobody/no-such-dataset: not a local file or folder, and loading it as a Hugging Face hub dataset failed"):
        load_data(DataOptions(data="nobody/no-such-dataset"))


def test_evaluation_splits_missing_a_class_or_thin_in_one_get_a_note(tmp_path):
    rows = make_rows(80, seed=4)
    positives = [r for r in rows if r[1] == "positive"]
    negatives = [r for r in rows if r[1] == "negative"]
    train = write_csv(tmp_path / "train.csv", positives[:20] + negatives[:20])
    test = write_csv(tmp_path / "test.csv", positives[20:32])  # no negative row at all
    validation = write_csv(tmp_path / "validation.csv", positives[32:37] + negatives[20:23])
    data = load_data(DataOptions(train=str(train), validation=str(validation), test=str(test)))
    notes = " | ".join(data.notes)
    assert "test has no rows of class(es) ['negative']" in notes and "macro-F1 averages the other classes only" in notes
    assert "validation has fewer than 10 rows of some classes ('negative' 3, 'positive' 5, of 8 rows)" in notes
    assert "test has fewer than" not in notes  # 12 positives are enough
    balanced = load_data(DataOptions(data=str(write_csv(tmp_path / "all.csv", make_rows(400)))))
    assert not [n for n in balanced.notes if "rows of class" in n or "fewer than" in n]
