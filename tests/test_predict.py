"""``classifier.predict``, ``textxfer predict`` (texts, files, stdin, several processes) agree with the model."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from textxfer import classifier
from textxfer.cli import main
from textxfer.errors import TextxferError

from conftest import make_rows

EXTRA_TEXTS = ["", "完全陌生的内容 🙂" * 40, "a,b \"quoted\"\nsecond line"]


@pytest.fixture(scope="module", params=["baseline", "finetune"])
def model_dir(request, trained_models) -> Path:
    return trained_models[request.param]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [text for text, _ in make_rows(60, seed=7)] + EXTRA_TEXTS


def test_predict_matches_the_in_memory_model(model_dir, texts):
    model = classifier.load(model_dir)
    probabilities = model.predict_proba(texts)
    results = classifier.predict(texts, model=model_dir)
    names = list(model.labels.names)
    assert [r.label for r in results] == [names[i] for i in probabilities.argmax(axis=1)]
    for result, row in zip(results, probabilities):
        assert list(result.probabilities) == names  # label order
        assert np.allclose(list(result.probabilities.values()), row, atol=0, rtol=0)
        assert abs(sum(result.probabilities.values()) - 1) < 1e-9
        assert result.score == max(result.probabilities.values())
    single = classifier.predict(texts[3], model=model_dir)  # alone in its batch: same answer up to float rounding
    assert single.label == results[3].label and single.score == pytest.approx(results[3].score, abs=1e-6)
    assert classifier.predict([], model=model) == []
    assert classifier.cached(model_dir) is classifier.cached(str(model_dir))  # loaded once


def test_predict_rejects_non_text_with_a_clear_error(model_dir):
    with pytest.raises(TextxferError, match="input 2: this model reads single texts, got None"):
        classifier.predict(["ok", None], model=model_dir)
    with pytest.raises(TextxferError, match="no such model folder"):
        classifier.predict("x", model=model_dir / "missing")


def test_eight_threads_get_the_sequential_answers(model_dir, texts):
    classifier.clear_cache()
    expected = [classifier.predict(texts[i::3], model=model_dir) for i in range(3)]
    classifier.clear_cache()  # the threads also race to load the model: it must be loaded once
    results, errors, loaded = [None] * 8, [], []

    def work(i):
        try:
            results[i] = classifier.predict(texts[i % 3::3], model=model_dir)
            loaded.append(id(classifier.cached(model_dir)))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(loaded)) == 1
    for i, got in enumerate(results):
        want = expected[i % 3]
        assert [p.label for p in got] == [p.label for p in want]
        assert [p.score for p in got] == pytest.approx([p.score for p in want], abs=1e-9)


def test_cli_texts(model_dir, capsys):
    assert main(["predict", "--model", str(model_dir), "酒店很好很干净", "房间很脏很吵"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    expected = classifier.predict(["酒店很好很干净", "房间很脏很吵"], model=model_dir)
    assert [line.split("\t")[0] for line in lines] == [str(r.label) for r in expected]
    assert [float(line.split("\t")[1]) for line in lines] == pytest.approx([r.score for r in expected], abs=1e-4)


def _write_input(path: Path, texts: list[str]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text", "note"])
        for i, text in enumerate(texts):
            writer.writerow([i, text, f"n{i}"])


@pytest.mark.parametrize("chunk_size", [7, 10_000])
def test_cli_file_keeps_columns_and_order(tmp_path, model_dir, texts, chunk_size):
    source = tmp_path / "in.csv"
    _write_input(source, texts)
    before = source.read_bytes()
    out = tmp_path / "preds.csv"
    assert main(["predict", "--model", str(model_dir), "--input", str(source), "--output", str(out),
                 "--chunk-size", str(chunk_size), "--no-progress"]) == 0
    assert source.read_bytes() == before
    with open(out, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    expected = classifier.predict(texts, model=model_dir)
    names = list(classifier.cached(model_dir).labels.names)
    assert list(rows[0]) == ["id", "text", "note", "label", "score"] + [f"prob_{n}" for n in names]
    assert [r["id"] for r in rows] == [str(i) for i in range(len(texts))]
    assert [r["text"] for r in rows] == texts and [r["note"] for r in rows] == [f"n{i}" for i in range(len(texts))]
    assert [r["label"] for r in rows] == [str(e.label) for e in expected]
    for row, e in zip(rows, expected):
        assert [float(row[f"prob_{n}"]) for n in names] == pytest.approx(list(e.probabilities.values()), abs=1e-5)


def test_cli_jsonl_and_stdin(tmp_path, model_dir, texts):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": t, "label": "x", "n": i}, ensure_ascii=False) + "\n"
                              for i, t in enumerate(texts)), encoding="utf-8")
    out = tmp_path / "preds.jsonl"
    assert main(["predict", "--model", str(model_dir), "--input", str(source), "--output", str(out),
                 "--chunk-size", "5", "--no-progress"]) == 0
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    expected = classifier.predict(texts, model=model_dir)
    # the input already has a 'label' column, so predictions go to predicted_* and nothing is overwritten
    assert [r["label"] for r in records] == ["x"] * len(texts) and [r["n"] for r in records] == list(range(len(texts)))
    assert [r["predicted_label"] for r in records] == [e.label for e in expected]
    assert all(abs(sum(r["predicted_probabilities"].values()) - 1) < 1e-6 for r in records)
    csv_input = tmp_path / "in.csv"
    _write_input(csv_input, texts)
    completed = subprocess.run([sys.executable, "-m", "textxfer.cli", "predict", "--model", str(model_dir),
                                "--input", "-", "--no-progress"], input=csv_input.read_bytes(),
                               capture_output=True, timeout=300)
    assert completed.returncode == 0, completed.stderr.decode()
    rows = list(csv.DictReader(completed.stdout.decode("utf-8").splitlines(keepends=True)))
    assert [r["label"] for r in rows] == [str(e.label) for e in expected]


def test_cli_file_errors_are_one_line(tmp_path, model_dir, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("id,body\n1,hello\n", encoding="utf-8")
    assert main(["predict", "--model", str(model_dir), "--input", str(bad), "--output", str(tmp_path / "o.csv")]) == 2
    message = capsys.readouterr().err.strip()
    assert "bad.csv: no column 'text'" in message and "--text-column" in message and "\n" not in message
    assert not (tmp_path / "o.csv").exists() and not list(tmp_path.glob(".o.csv*"))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "ok"}\n{"text": broken\n', encoding="utf-8")
    assert main(["predict", "--model", str(model_dir), "--input", str(broken), "--output", str(tmp_path / "o.jsonl")]) == 2
    assert "line 2 is not valid JSON" in capsys.readouterr().err
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("text,x\na,1\nb,2,3\n", encoding="utf-8")
    assert main(["predict", "--model", str(model_dir), "--input", str(ragged), "--output", str(tmp_path / "r.csv")]) == 2
    assert "row 2 (line 3) has 3 fields" in capsys.readouterr().err


COUNTED_PREDICT = """
import os, sys
from textxfer.transformer.pipeline import FinetuneClassifier
original = FinetuneClassifier.predict_proba
def counted(self, texts):
    with open(os.path.join(os.environ["COUNT_DIR"], "rank" + os.environ.get("RANK", "0")), "a") as handle:
        handle.write(f"{len(texts)}\\n")
    return original(self, texts)
FinetuneClassifier.predict_proba = counted
from textxfer.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_two_processes_write_the_single_process_output(tmp_path, trained_models, texts):
    model_dir = trained_models["finetune"]
    source = tmp_path / "in.csv"
    _write_input(source, texts * 3)
    single, double = tmp_path / "one.csv", tmp_path / "two.csv"
    assert main(["predict", "--model", str(model_dir), "--input", str(source), "--output", str(single),
                 "--chunk-size", "16", "--no-progress"]) == 0
    counts = tmp_path / "counts"
    counts.mkdir()
    script = tmp_path / "counted_predict.py"  # the CLI, with each process counting the texts it predicts
    script.write_text(COUNTED_PREDICT, encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
           "COUNT_DIR": str(counts)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(script), "predict", "--model", str(model_dir), "--input", str(source),
               "--output", str(double), "--chunk-size", "16", "--no-progress"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        log, _ = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:  # pragma: no cover - a hung rendezvous must not hang the suite
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail("two-process prediction timed out")
    assert process.returncode == 0, log.decode()[-2000:]
    one, two = (list(csv.reader(open(p, encoding="utf-8", newline=""))) for p in (single, double))
    assert len(two) == len(one) == len(texts) * 3 + 1
    assert [row[:4] for row in two] == [row[:4] for row in one]  # every input column, order and label
    assert np.allclose(np.array([row[4:] for row in two[1:]], float), np.array([row[4:] for row in one[1:]], float),
                       atol=1e-5)
    assert not list(tmp_path.glob(".two.csv*"))  # parts folder removed
    # The work was shared: each process predicted some of the rows, and no row twice.
    per_rank = {p.name: sum(int(n) for n in p.read_text().split()) for p in counts.iterdir()}
    assert sorted(per_rank) == ["rank0", "rank1"] and min(per_rank.values()) > 0
    assert sum(per_rank.values()) == len(texts) * 3
