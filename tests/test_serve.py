"""``textxfer serve`` over real HTTP on a loopback port, with a tiny model."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from textxfer import classifier

from conftest import ROOT, free_port, make_rows, serve_subprocess

@contextmanager
def running_server(model: Path, *extra: str):
    """A ``textxfer serve`` subprocess; yields ``(base_url, process)`` once /health answers."""
    with serve_subprocess(model, *extra) as (url, process, ready):
        ready()
        yield url, process


@pytest.fixture(scope="module")
def server(trained_models):
    with running_server(trained_models["finetune"], "--max-texts", "8", "--max-text-chars", "500",
                        "--max-explain-texts", "2") as (url, _):
        yield url


TEXTS = [text for text, _ in make_rows(20, seed=3)] + ["", "🙂 مرحبا e\u0301 \u202e"]


def test_predict_matches_the_python_api(server, trained_models):
    expected = classifier.predict(TEXTS[:8], model=trained_models["finetune"])
    response = httpx.post(f"{server}/predict", json={"texts": TEXTS[:8]})
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    assert [p["label"] for p in predictions] == [e.label for e in expected]
    for got, want in zip(predictions, expected):
        assert list(got["probabilities"]) == [str(k) for k in want.probabilities]
        assert list(got["probabilities"].values()) == pytest.approx(list(want.probabilities.values()), abs=1e-6)
        assert got["score"] == pytest.approx(want.score, abs=1e-6)
        assert abs(sum(got["probabilities"].values()) - 1) < 1e-6
    one = httpx.post(f"{server}/predict", json={"text": TEXTS[0]}).json()["predictions"]
    assert len(one) == 1 and one[0]["label"] == expected[0].label


def test_explain_matches_the_python_api_and_has_its_own_limit(server, trained_models):
    texts = TEXTS[:2]
    expected = classifier.explain(texts, model=trained_models["finetune"])
    response = httpx.post(f"{server}/explain", json={"texts": texts}, timeout=120)
    assert response.status_code == 200
    got = response.json()["explanations"]
    assert [g["label"] for g in got] == [e.label for e in expected]
    for g, e in zip(got, expected):
        assert g["method"] == "integrated-gradients" == e.method
        assert [w["word"] for w in g["words"]] == [w.text for w in e.words]
        assert [w["contribution"] for w in g["words"]] == pytest.approx(e.contributions, abs=1e-5)
        assert all(w["word"] == e.input[w["start"]:w["end"]] for w in g["words"])
    too_many = httpx.post(f"{server}/explain", json={"texts": TEXTS[:3]}, timeout=60)
    assert too_many.status_code == 413 and "3 texts to explain in one request; the limit is 2" in too_many.json()["error"]
    assert httpx.post(f"{server}/explain", json={"texts": []}).status_code == 422


def test_health_model_and_docs(server):
    assert httpx.get(f"{server}/health").json()["status"] == "ok"
    info = httpx.get(f"{server}/model").json()
    assert info["kind"] == "finetune" and info["labels"] == ["negative", "positive"]
    assert 0 <= info["metrics"]["test"]["accuracy"] <= 1
    assert httpx.get(f"{server}/docs").status_code == 200
    schema = httpx.get(f"{server}/openapi.json").json()
    assert "/predict" in schema["paths"] and "texts" in json.dumps(schema["paths"]["/predict"])
    page = httpx.get(f"{server}/")
    assert page.status_code == 200 and 'id="predict"' in page.text


BAD_REQUESTS = [
    ("malformed JSON", b'{"texts": ["a",', 422, "not valid JSON"),
    ("not an object", b'["a", "b"]', 422, "JSON object"),
    ("texts not a list", json.dumps({"texts": "abc"}).encode(), 422, "texts"),
    ("a number in texts", json.dumps({"texts": ["ok", 5]}).encode(), 422, "texts.1"),
    ("text not a string", json.dumps({"text": 5}).encode(), 422, "text"),
    ("null texts", json.dumps({"texts": None}).encode(), 422, "exactly one"),
    ("both fields", json.dumps({"texts": ["a"], "text": "b"}).encode(), 422, "exactly one"),
    ("unknown field", json.dumps({"texts": ["a"], "lang": "zh"}).encode(), 422, "lang"),
    ("empty list", json.dumps({"texts": []}).encode(), 422, "empty"),
    ("too many texts", json.dumps({"texts": ["a"] * 9}).encode(), 413, "limit is 8"),
    ("too long text", json.dumps({"texts": ["x" * 501]}).encode(), 413, "limit is 500"),
    ("body too large", json.dumps({"texts": ["x" * 3_000_000]}).encode(), 413, "bytes"),
    ("not UTF-8", b'{"texts": ["\xff\xfe"]}', 422, "not valid JSON"),
    ("nested 40,000 deep", b'{"texts": ' + b"[" * 40_000 + b"]" * 40_000 + b"}", 422, "nested too deeply"),
]


@pytest.mark.parametrize("name,body,status,message", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_requests_get_a_clear_4xx_and_the_server_keeps_serving(server, name, body, status, message):
    response = httpx.post(f"{server}/predict", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error and "\n" not in error
    assert httpx.post(f"{server}/predict", json={"text": "还行"}).status_code == 200


def test_wrong_method_and_path_are_json_errors(server):
    assert httpx.get(f"{server}/predict").status_code == 405
    missing = httpx.get(f"{server}/nope")
    assert missing.status_code == 404 and "error" in missing.json()


def batch_counters(server: str) -> tuple[int, int]:
    """``(batches, texts)`` the server has predicted so far (its batcher's running totals)."""
    health = httpx.get(f"{server}/health").json()
    return health["batches"], health["texts"]


def test_concurrent_requests_get_the_sequential_answers(server):
    before = batch_counters(server)
    sequential = [httpx.post(f"{server}/predict", json={"text": t}).json()["predictions"][0] for t in TEXTS]
    between = batch_counters(server)
    # One request at a time, each is a batch of its own: the counters measure exactly these requests.
    assert (between[0] - before[0], between[1] - before[1]) == (len(TEXTS), len(TEXTS))
    with httpx.Client() as client, ThreadPoolExecutor(16) as pool:
        concurrent = list(pool.map(lambda t: client.post(f"{server}/predict", json={"text": t}).json()["predictions"][0],
                                   TEXTS * 4))
    after = batch_counters(server)
    for i, got in enumerate(concurrent):
        want = sequential[i % len(TEXTS)]
        assert got["label"] == want["label"]
        assert list(got["probabilities"].values()) == pytest.approx(list(want["probabilities"].values()), abs=1e-6)
    batches, texts = after[0] - between[0], after[1] - between[1]
    # Every request carries one text, so fewer batches than texts means that some batch combined
    # several of THESE concurrent requests (not a larger batch left over from an earlier test).
    assert texts == len(TEXTS) * 4
    assert batches < texts, f"{texts} concurrent one-text requests were predicted in {batches} batches: none combined"


class ServerLog:
    """Reads a server's output in the background so that a test can wait for a line (with a timeout)."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        for raw in stream:
            with self._changed:
                self.lines.append(raw.decode(errors="replace").rstrip())
                self._changed.notify_all()

    def wait_for(self, text: str, timeout: float = 60) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: any(text in line for line in self.lines), timeout):
                pytest.fail(f"the server never logged {text!r}; its output:\n" + "\n".join(self.lines[-30:]))


def read_until(conn: socket.socket, marker: bytes | None) -> bytes:
    """Bytes from ``conn`` up to and including ``marker`` (``None``: until the server closes)."""
    data = b""
    while marker is None or marker not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_sigterm_lets_in_flight_requests_finish(trained_models):
    texts = ["很好", "很差"]
    body = json.dumps({"texts": texts}).encode()
    with running_server(trained_models["baseline"], "--log-level", "info") as (url, process):
        log = ServerLog(process.stdout)
        with socket.create_connection(("127.0.0.1", urlsplit(url).port), timeout=60) as conn:
            # With "Expect: 100-continue" the server answers "100 Continue" only once /predict runs and
            # asks for the body: the request is in flight inside the app before SIGTERM, no guessed sleep.
            conn.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % len(body))
            interim = read_until(conn, b"\r\n\r\n")
            assert interim.startswith(b"HTTP/1.1 100 "), interim
            process.send_signal(signal.SIGTERM)
            # The server has begun its graceful shutdown and is draining this still open request...
            log.wait_for("Waiting for connections to close")
            # ...which gets its body only now, and must still get its full answer.
            conn.sendall(body)
            head, _, payload = read_until(conn, None).partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head
        expected = classifier.predict(texts, model=trained_models["baseline"])
        predictions = json.loads(payload)["predictions"]
        assert [p["label"] for p in predictions] == [e.label for e in expected]
        for got, want in zip(predictions, expected):
            assert list(got["probabilities"].values()) == pytest.approx(list(want.probabilities.values()), abs=1e-6)
        # uvicorn shuts down gracefully, then re-raises the signal so the exit status reports it
        assert process.wait(timeout=60) in (0, -signal.SIGTERM)


@pytest.mark.parametrize("flag, value, message", [
    ("--batch-window-ms", "-1", "--batch-window-ms must be between 0 and 10000 milliseconds, got -1.0"),
    ("--batch-window-ms", "nan", "--batch-window-ms must be between 0 and 10000"),
    ("--max-batch-size", "0", "--max-batch-size must be a whole number of at least 1, got 0"),
    ("--max-texts", "-3", "--max-texts must be a whole number of at least 1"),
    ("--workers", "0", "--workers must be at least 1"),
])
def test_bad_server_settings_are_one_line(trained_models, capsys, flag, value, message):
    from textxfer.cli import main

    assert main(["serve", "--model", str(trained_models["baseline"]), flag, value]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err


def test_bad_model_folder_is_one_line(tmp_path):
    completed = subprocess.run([sys.executable, "-m", "textxfer.cli", "serve", "--model", str(tmp_path / "none"),
                                "--port", str(free_port())], capture_output=True, text=True, timeout=120,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines()[-1].startswith("textxfer: error:") and "no such model folder" in completed.stderr
