"""Property-based tests: the loaders give back exactly what was written, never fail with anything but a
``TextxferError``, and predictions are always proper probability distributions."""

from __future__ import annotations

import csv
import io
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from textxfer import classifier
from textxfer.data.dataset import DataOptions, load_data
from textxfer.errors import TextxferError
from textxfer.data.tables import read_source

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Text a file can hold: any code point but lone surrogates (not encodable as UTF-8).
file_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
# Text the Python API may be given: emoji, RTL, combining marks, control characters, line separators.
tricky = st.sampled_from(["🙂", "👍🏽", "👨‍👩‍👧", "مرحبا", "שלום", "\u200f", "\u202e", "e\u0301", "\u0303" * 5,
                          "\0", "\x07", "\x1b[31m", "\r", "\n", "\u2028", "\x85", "\ufeff", "\ufffd", "很好", "糟糕", " "])
api_text = st.lists(st.one_of(tricky, file_text), max_size=8).map("".join)


def tmp_file(name: str) -> Path:
    return Path(tempfile.mkdtemp()) / name


@SETTINGS
@given(st.lists(st.tuples(file_text, file_text), min_size=1, max_size=8), st.sampled_from([",", "\t"]))
def test_delimited_files_read_back_exactly(rows, delimiter):
    path = tmp_file("d.csv" if delimiter == "," else "d.tsv")
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter)
    writer.writerow(["text", "label"])
    writer.writerows(rows)
    path.write_bytes(buffer.getvalue().encode("utf-8"))
    columns = read_source(str(path))["all"].columns
    assert columns == {"text": [t for t, _ in rows], "label": [l for _, l in rows]}


label_values = st.one_of(st.integers(-10**30, 10**30), file_text, st.floats(allow_nan=True, allow_infinity=True),
                         st.booleans(), st.none(), st.lists(st.integers(), max_size=2))


@SETTINGS
@given(st.lists(st.tuples(file_text, label_values), min_size=1, max_size=8))
def test_jsonl_reads_back_exactly(records):
    path = tmp_file("d.jsonl")
    lines = [json.dumps({"text": t, "label": l}, ensure_ascii=False) for t, l in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    columns = read_source(str(path))["all"].columns
    assert columns["text"] == [t for t, _ in records]
    for got, (_, want) in zip(columns["label"], records):
        assert got == want or (isinstance(want, float) and math.isnan(want) and math.isnan(got))


@SETTINGS
@given(st.lists(st.tuples(st.one_of(file_text, st.integers(), st.none()), label_values), max_size=12),
       st.sampled_from(["jsonl", "csv"]), st.booleans())
def test_load_data_fails_only_with_a_textxfer_error(records, fmt, drop_invalid):
    path = tmp_file(f"d.{fmt}")
    if fmt == "jsonl":
        path.write_text("".join(json.dumps({"text": t, "label": l}, ensure_ascii=False) + "\n" for t, l in records),
                        encoding="utf-8")
    else:
        buffer = io.StringIO()
        csv.writer(buffer).writerows([["text", "label"], *[[t, l] for t, l in records]])
        path.write_text(buffer.getvalue(), encoding="utf-8")
    before = path.read_bytes()
    try:
        data = load_data(DataOptions(data=str(path), drop_invalid=drop_invalid))
    except TextxferError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)  # one line, naming the file
    else:
        assert len(data.labels) >= 2
        assert sorted(data.train.rows + data.validation.rows + data.test.rows) == sorted(set(
            data.train.rows + data.validation.rows + data.test.rows))
    assert path.read_bytes() == before


@SETTINGS
@given(st.binary(max_size=300), st.sampled_from(["csv", "tsv", "jsonl", "json"]),
       st.sampled_from(["utf-8", "gbk", "utf-16", "latin-1"]))
def test_arbitrary_bytes_fail_only_with_a_textxfer_error(data, fmt, encoding):
    path = tmp_file(f"d.{fmt}")
    path.write_bytes(data)
    try:
        load_data(DataOptions(data=str(path), encoding=encoding))
    except TextxferError:
        pass
    assert path.read_bytes() == data


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_deeply_nested_json_is_a_clear_error(tmp_path, fmt):
    path = tmp_path / f"deep.{fmt}"
    path.write_text('{"text": ' + "[" * 100_000 + "]" * 100_000 + ', "label": 1}\n', encoding="utf-8")
    with pytest.raises(TextxferError, match="nested too deeply"):
        read_source(str(path))
    if fmt == "jsonl":
        from textxfer.serving.predict_files import ChunkReader

        with pytest.raises(TextxferError, match="deep.jsonl: line 1: JSON nested too deeply"):
            list(ChunkReader(str(path), "jsonl", "text", 10))


def assert_distributions(model, texts):
    results = classifier.predict(texts, model=model)
    assert len(results) == len(texts)
    for result in results:
        values = np.array(list(result.probabilities.values()))
        assert np.isfinite(values).all() and (values >= 0).all() and (values <= 1).all()
        assert abs(values.sum() - 1) < 1e-6
        assert result.score == max(result.probabilities.values())


@pytest.fixture(scope="module", params=["baseline", "finetune"])
def model(request, trained_models):
    return classifier.load(trained_models[request.param])


@SETTINGS
@given(texts=st.lists(api_text, min_size=1, max_size=6))
def test_predict_gives_probability_distributions_for_any_text(model, texts):
    assert_distributions(model, texts)


# Lone surrogates are valid in a Python str but not in UTF-8: they are replaced by U+FFFD before tokenizing.
@SETTINGS
@given(texts=st.lists(st.tuples(api_text, st.integers(0xD800, 0xDFFF).map(chr), api_text).map("".join),
                      min_size=1, max_size=4))
def test_predict_with_lone_surrogates_gives_distributions(model, texts):
    """Lone surrogates (valid ``str``, not valid UTF-8) never fail a prediction."""
    assert_distributions(model, texts)
