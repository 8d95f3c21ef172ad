"""Hostile input files through every command that reads data: a one-line error or a working run, never a
traceback, and the input bytes never change. The small files live in ``tests/data/bad`` (see its README);
the big ones (a 50 MB text, many tiny rows) are generated into ``tmp_path``.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from textxfer.cli import main

BAD = Path(__file__).parent / "data" / "bad"
FAST = ["--vector-size", "8", "--min-count", "1", "--n-estimators", "5", "--n-jobs", "1", "--epochs", "1"]
OK = None  # the command succeeds

# file → (what `textxfer baseline` does, what `textxfer predict --input` does): OK or key words of the error.
CASES = {
    "empty.csv": (["the file is empty", "header row"], ["the file is empty", "header row"]),
    "header_only.csv": (["has a header but no data rows", "add rows"], OK),
    "semicolon.csv": (["no column 'text'", "looks delimited by ';'", ".csv"], ["no column 'text'", "looks delimited by ';'"]),
    "ragged.csv": (["row 21 (line 22) has 3 fields", "header has 2", "quote fields"],
                   ["row 21 (line 22) has 3 fields", "header has 2", "quote fields"]),
    "quoted_newlines.csv": (OK, OK),
    "bom.csv": (OK, OK),
    "utf16.csv": (OK, OK),  # a UTF-16 byte-order mark is never valid UTF-8, so it is read as UTF-16
    "gbk.csv": (["not valid utf-8 at byte offset 11", "--encoding gbk"], ["not valid utf-8 at byte offset 11", "--encoding gbk"]),
    "nul.csv": (OK, OK),  # NUL is kept as a character of the text
    "line_separators.csv": (OK, OK),  # \u2028, \x0c, \x1c, \x85 inside unquoted fields are text, not line ends
    "line_separators.jsonl": (OK, OK),
    "float_labels.jsonl": (["row 4, column 'label': label 0.5 is a float", "--label-column"], OK),
    "nan_label.jsonl": (["1 row(s) with a missing label in column 'label' (rows 5)", "--drop-invalid"], OK),
    "mixed_labels.jsonl": (OK, OK),  # 0, "0" and 0.0 are one class "0"
    "list_label.jsonl": (["row 6, column 'label': label ['negative'] is a list"], OK),
    "single_class.csv": (["1 class(es) ['positive'] in column 'label'", "at least 2"], OK),
    "one_example_class.csv": (OK, OK),  # the lone 'neutral' row stays in train
    "duplicate_columns.csv": (["duplicate column names ['text']", "rename"], ["duplicate column names ['text']", "rename"]),
    "broken.jsonl": (["line 7 is not valid JSON", "fix or remove"], ["line 7 is not valid JSON", "fix or remove"]),
    "split_source.csv": (OK, OK),  # the data of the split files in splits/
    "object_text.jsonl": (["row 3, column 'text': expected text, got a JSON object", "--text-column"],
                          ["line 3, column 'text': expected text, got a JSON object", "--text-column"]),
    "number_text.jsonl": (["row 8, column 'text': expected text, got a number 12345"],
                          ["line 8, column 'text': expected text, got a number 12345"]),
    "struct_text.parquet": (["row 1, column 'text': expected text, got a JSON object (or struct)"],
                            ["cannot tell the input format from '.parquet'"]),  # predict reads CSV/TSV/JSONL
    "zero_width.csv": (["1 row(s) with an empty, whitespace-only or invisible (zero-width) text", "(rows 5)",
                        "--drop-invalid"], OK),  # predict: an empty text, counted
    "gzip.csv": (["this is a gzip-compressed file, not a text file", "gunzip"],
                 ["this is a gzip-compressed file, not a text file", "gunzip"]),
    "xlsx.csv": (["this is a zip archive (an Excel .xlsx workbook is one)", "Save As → CSV UTF-8"],
                 ["this is a zip archive (an Excel .xlsx workbook is one)", "Save As → CSV UTF-8"]),
    "tsv_with_commas.csv": (["row 1 (line 2) has 2 fields but the header has 1", "looks delimited by '\\t'"],
                            ["row 1 (line 2) has 2 fields but the header has 1", "looks delimited by '\\t'"]),
    "header_case.csv": (["no column 'text'", "Column 'Text' differs from 'text' only in case or surrounding spaces",
                         "--text-column 'Text'"],
                        ["no column 'text'", "Column 'Text' differs from 'text' only in case or surrounding spaces"]),
}

# splits/<file> with --data split_source.csv → what `textxfer baseline --split` does (OK or key words).
SPLIT_CASES = {
    "valid.json": OK,
    "no_sha256.json": ["splits.test.sha256 must be the 64-hex-digit fingerprint", "got None", "without --split"],
    "repeated_row.json": ["lists row 19 of split_source.csv twice", "each row once"],
    "true_row.json": ["splits.test.rows holds True", "whole numbers from 1"],
    "row_in_two_splits.json": ["lists row 14 of split_source.csv in both train and test"],
    "row_zero.json": ["splits.validation.rows holds 0"],
    "row_past_end.json": ["split rows [21] are not valid rows of the file"],
    "rows_not_a_list.json": ["splits.train.rows must be a list of row numbers"],
    "text_column_number.json": ["'text_column' must be a column name, got 5"],
    "changed_source.json": ["its contents changed since the split was made"],
}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err


def check(code: int, err: str, name: str, expected) -> None:
    if expected is OK:
        assert code == 0, err
        assert "Traceback" not in err
        return
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("predict")]
    assert len(lines) == 1 and lines[0].startswith("textxfer: error: "), err
    assert name in lines[0]
    for words in expected:
        assert words in lines[0], (words, lines[0])


def test_corpus_is_complete_and_small():
    files = {p.name for p in BAD.iterdir() if p.suffix in (".csv", ".jsonl", ".parquet")}
    assert files == set(CASES)
    assert {p.name for p in (BAD / "splits").iterdir()} == set(SPLIT_CASES)
    assert all(p.stat().st_size < 10_000 for p in [*BAD.iterdir(), *(BAD / "splits").iterdir()] if p.is_file())
    readme = (BAD / "README.md").read_text(encoding="utf-8")
    assert all(name in readme for name in [*CASES, *SPLIT_CASES])


@pytest.mark.parametrize("flags, message", [
    (["--text-column", "label"], "--text-column and --label-column both name column 'label'"),
    (["--text-column", "label", "--label-column", "text"], "text column 'label' has only 2 distinct value(s)"),
])
def test_text_and_label_column_mix_ups_are_refused(flags, message, tmp_path, capsys):
    code, err = run_cli(["baseline", "--data", str(BAD / "split_source.csv"), *flags, "--output", str(tmp_path / "run"),
                         "--no-progress", *FAST], capsys)
    check(code, err, "split_source.csv", [message, "point --text-column at the texts"])


def test_a_label_column_full_of_texts_is_refused(tmp_path, capsys):
    from conftest import make_rows, write_csv

    rows = make_rows(120)  # --label-column naming a free-text column (here: a reply to each review)
    path = write_csv(tmp_path / "replies.csv", [(text, "回复：" + text) for text, _ in rows], header=("text", "reply"))
    code, err = run_cli(["baseline", "--data", str(path), "--label-column", "reply", "--output", str(tmp_path / "run"),
                         "--no-progress", *FAST], capsys)
    check(code, err, "replies.csv", ["label column 'reply' has 120 distinct values in 120 training rows",
                                     "looks like a text column"])


def test_few_shot_intents_with_one_short_label_per_text_are_not_refused(tmp_path, capsys):
    from conftest import write_csv

    rows = [(f"请帮我处理第{i}类的事情，谢谢", f"intent{i}") for i in range(120)]  # 120 classes, one text each
    path = write_csv(tmp_path / "intents.csv", rows)
    code, err = run_cli(["baseline", "--data", str(path), "--output", str(tmp_path / "run"), "--no-progress",
                         "--test-size", "0", "--validation-size", "0", *FAST], capsys)
    assert code == 0, err


@pytest.mark.parametrize("name", sorted(SPLIT_CASES))
def test_split_files(name, tmp_path, capsys):
    split = BAD / "splits" / name
    before = digest(split)
    code, err = run_cli(["baseline", "--data", str(BAD / "split_source.csv"), "--split", str(split),
                         "--output", str(tmp_path / "run"), "--no-progress", *FAST], capsys)
    check(code, err, "split" if name != "row_past_end.json" and name != "changed_source.json" else "split_source.csv",
          SPLIT_CASES[name])
    assert (tmp_path / "run").exists() == (code == 0) and digest(split) == before
    if code == 0:  # the run used exactly the split's rows
        record = json.loads((tmp_path / "run" / "split.json").read_text(encoding="utf-8"))
        assert [record["splits"][s]["rows"] for s in ("train", "validation", "test")] == \
            [list(range(1, 15)), [15, 16, 17], [18, 19, 20]]


@pytest.mark.parametrize("name", sorted(CASES))
def test_baseline(name, tmp_path, capsys):
    path = BAD / name
    before = digest(path)
    code, err = run_cli(["baseline", "--data", str(path), "--output", str(tmp_path / "run"), "--no-progress", *FAST], capsys)
    check(code, err, name, CASES[name][0])
    assert (tmp_path / "run").exists() == (code == 0)
    assert digest(path) == before


@pytest.mark.parametrize("name", sorted(name for name in CASES if not name.endswith(".parquet") and
                                         "expected text" not in str(CASES[name][1])))
def test_one_reader_gives_one_message(name):
    """Training's table reader and predict's chunk reader parse through one RowReader: a file that cannot be
    parsed is refused by both with the very same line, and one that can gives both the same rows. (A text
    that is not text is refused by predict as it reads, by training when it builds the dataset: left out.)"""
    from textxfer.errors import TextxferError
    from textxfer.serving.predict_files import ChunkReader, file_format
    from textxfer.data.tables import read_source

    path = str(BAD / name)
    answers = []
    for read in (lambda: len(read_source(path)["all"].column("text", "text")),
                 lambda: sum(len(chunk.records) for chunk in ChunkReader(path, file_format(path, None, "input"),
                                                                         "text", 7))):
        try:
            answers.append(read())
        except TextxferError as exc:
            answers.append(str(exc))
    assert answers[0] == answers[1]
    if CASES[name][0] is not OK and CASES[name][1] is not OK:
        assert isinstance(answers[0], str) and name in answers[0]


@pytest.mark.parametrize("kind", ["baseline", "finetune"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_predict(name, kind, tmp_path, capsys, trained_models):
    path = BAD / name
    before = digest(path)
    output = tmp_path / f"out{path.suffix}"
    code, err = run_cli(["predict", "--model", str(trained_models[kind]), "--input", str(path),
                         "--output", str(output), "--no-progress"], capsys)
    check(code, err, name, CASES[name][1])
    assert output.exists() == (code == 0)
    assert not list(tmp_path.glob(".out*"))  # no temporary file left behind
    assert digest(path) == before
    if code == 0 and path.suffix == ".jsonl":
        records = [json.loads(line) for line in output.read_text(encoding="utf-8").split("\n") if line]
        assert len(records) == 20 and all(abs(sum(r["predicted_probabilities"].values()) - 1) < 1e-6 for r in records)  # input has 'label'


@pytest.mark.parametrize("name", ["quoted_newlines.csv", "gbk.csv"])
def test_finetune(name, tmp_path, capsys, tiny_bert):
    path = BAD / name
    before = digest(path)
    code, err = run_cli(["finetune", "--data", str(path), "--output", str(tmp_path / "run"), "--no-progress",
                         "--model", str(tiny_bert), "--strategy", "full", "--epochs", "1", "--batch-size", "8"], capsys)
    check(code, err, name, CASES[name][0])
    assert digest(path) == before


@pytest.mark.parametrize("name", ["ragged.csv", "single_class.csv", "broken.jsonl"])
def test_compare_reports_training_data_errors(name, tmp_path, capsys):
    path = BAD / name
    code, err = run_cli(["compare", "--data", str(path), "--output", str(tmp_path / "cmp"), "--no-progress"], capsys)
    check(code, err, name, CASES[name][0])
    assert not (tmp_path / "cmp").exists()


def test_gbk_works_with_encoding_gbk(tmp_path, capsys, trained_models):
    path = BAD / "gbk.csv"
    code, err = run_cli(["baseline", "--data", str(path), "--encoding", "gbk", "--output", str(tmp_path / "run"),
                         "--no-progress", *FAST], capsys)
    assert code == 0, err
    code, err = run_cli(["predict", "--model", str(trained_models["baseline"]), "--input", str(path), "--encoding", "gbk",
                         "--output", str(tmp_path / "o.csv"), "--no-progress"], capsys)
    assert code == 0, err
    assert "酒店很好" in (tmp_path / "o.csv").read_text(encoding="utf-8")


def test_utf16_also_works_with_encoding_utf16(tmp_path, capsys, trained_models):
    import csv

    path = BAD / "utf16.csv"
    with open(path, encoding="utf-16", newline="") as handle:  # the file as it really reads
        rows = list(csv.DictReader(handle))
    assert len(rows) == 20 and rows[0]["text"].startswith("酒店很好")
    code, err = run_cli(["baseline", "--data", str(path), "--encoding", "utf-16", "--output", str(tmp_path / "run"),
                         "--no-progress", *FAST], capsys)
    assert code == 0, err
    run = tmp_path / "run"
    saved = lambda name: json.loads((run / name).read_text(encoding="utf-8"))  # noqa: E731
    assert saved("textxfer.json")["labels"]["names"] == ["negative", "positive"]
    assert sum(saved("report.json")["data"]["counts"].values()) == len(rows)
    assert "酒店" in saved("vocab.json")  # the baseline's words: the texts were decoded, not mojibake
    code, err = run_cli(["predict", "--model", str(trained_models["baseline"]), "--input", str(path), "--encoding",
                         "utf-16", "--output", str(tmp_path / "o.csv"), "--no-progress"], capsys)
    assert code == 0, err
    with open(tmp_path / "o.csv", encoding="utf-8", newline="") as handle:  # predictions are written as UTF-8
        written = list(csv.DictReader(handle))
    assert [(r["text"], r["label"]) for r in written] == [(r["text"], r["label"]) for r in rows]
    assert {r["predicted_label"] for r in written} <= {"negative", "positive"}


def test_predict_names_the_file_offset_of_a_bad_byte_far_into_the_file(tmp_path, capsys, trained_models):
    """The streaming reader decodes in blocks; the message still gives the offset in the file."""
    path = tmp_path / "late_gbk.csv"
    head = ("text\n" + "fine row\n" * 5000).encode()
    path.write_bytes(head + "很好\n".encode("gbk"))
    code, err = run_cli(["predict", "--model", str(trained_models["baseline"]), "--input", str(path),
                         "--output", str(tmp_path / "o.csv"), "--no-progress"], capsys)
    check(code, err, "late_gbk.csv", [f"not valid utf-8 at byte offset {len(head)}", "--encoding gbk"])


HUGE_TEXT_SCRIPT = textwrap.dedent("""
    import json, resource, sys, time
    from textxfer import classifier
    started = time.perf_counter()
    model = classifier.load(sys.argv[1])
    text = open(sys.argv[2], encoding="utf-8").read()
    result = classifier.predict(text, model=model)
    print(json.dumps({"score": result.score, "sum": sum(result.probabilities.values()),
                      "seconds": time.perf_counter() - started,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""")


# textxfer.transformer.encoding.encode tokenizes only the ends of a text that it can keep (before that fix a 50 MB text
# took more than 9 GB of RAM with the transformer and was still growing).
@pytest.mark.slow
@pytest.mark.parametrize("kind, megabytes", [("baseline", 50), ("finetune", 50)])
def test_a_huge_text_is_predicted_without_crashing(kind, megabytes, tmp_path, trained_models):
    """One 50 MB text: the baseline reads the head and tail 50,000 characters, the transformer keeps head+tail
    tokens; peak memory stays bounded."""
    path = tmp_path / "huge.txt"
    path.write_text("酒店很好，房间干净。" * (megabytes * 2**20 // 30), encoding="utf-8")
    assert path.stat().st_size >= megabytes * 10**6
    completed = subprocess.run([sys.executable, "-c", HUGE_TEXT_SCRIPT, str(trained_models[kind]), str(path)],
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    print(kind, result)
    assert abs(result["sum"] - 1) < 1e-6 and 0 <= result["score"] <= 1
    # Bounded: the baseline keeps the first and last 50,000 characters (peak 2.0 GB before that cap), the
    # transformer tokenizes only the ends it keeps (9 GB before). The 50 MB text itself is about 0.1 GB.
    assert result["peak_rss_mib"] < 1200, result


@pytest.mark.slow
def test_many_tiny_rows_stream_with_bounded_memory(trained_models):
    """100,000 rows here (1,000,000 with scripts/bench_bad_input.py): predict's peak RSS does not grow with
    the input; the training loader holds every row."""
    sys.path.insert(0, str(Path(__file__).parent.parent / "scripts"))
    from bench_bad_input import bench

    results = bench(100_000, str(trained_models["baseline"]))
    print(results)
    assert results["predicted_rows"] == 100_000
    assert results["predict"]["peak_rss_mib"] < results["predict_small"]["peak_rss_mib"] + 100
