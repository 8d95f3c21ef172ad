"""The web page of ``textxfer serve`` in a real headless Chromium (Playwright), against a real server process.

Skipped when Playwright or a Chromium binary is missing (``make test`` tries to install Debian's
``chromium``; Playwright's own browser download is not needed).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

SKIP_NO_BROWSER = "no Chromium: install it with `apt-get install chromium` (Debian) to run the browser test"
TEXT = "房间，很好，干净，服务，满意，早餐"
MAX_TEXT_CHARS = 2000  # the served limit; a longer text is refused with 413


def chromium_binary() -> str | None:
    """Path of a system Chromium, or None."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(process: subprocess.Popen, port: int, log: Path, timeout: float = 60.0) -> None:
    """Return once ``GET /health`` answers ``{"status": "ok"}``; fail with the server's log otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with code {process.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/health")
            response = connection.getresponse()
            ok = response.status == 200 and json.loads(response.read()).get("status") == "ok"
            connection.close()
            if ok:
                return
        except (OSError, http.client.HTTPException, ValueError):
            pass
        time.sleep(0.1)
    pytest.fail(f"server not healthy after {timeout:.0f} s:\n{log.read_text(errors='replace')[-3000:]}")


@contextmanager
def served_page(folder: Path, log_folder: Path):
    """A Chromium page on ``textxfer serve --model folder`` (a real server process); skips without a browser."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("no Playwright: install the dev extra (pip install -e '.[dev]') to run the browser test")
    binary = chromium_binary()
    if binary is None:
        pytest.skip(SKIP_NO_BROWSER)

    port = free_port()
    log = log_folder / "server.log"
    script = Path(sys.executable).parent / "textxfer"
    command = [str(script)] if script.exists() else [sys.executable, "-c", "from textxfer.cli import main; main()"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    command += ["serve", "--model", str(folder), "--port", str(port), "--max-text-chars", str(MAX_TEXT_CHARS),
                "--log-level", "warning"]
    with open(log, "wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
    try:
        with sync_playwright() as playwright:
            try:  # launched while the server loads its model
                browser = playwright.chromium.launch(executable_path=binary, headless=True, args=["--no-sandbox"])
            except Exception as exc:  # a binary that cannot start here (missing libraries, ...)
                pytest.skip(f"{SKIP_NO_BROWSER} (found {binary}, but it did not start: {str(exc).splitlines()[0]})")
            try:
                wait_healthy(process, port, log)
                page = browser.new_page()
                page.set_default_timeout(15_000)
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(f"http://127.0.0.1:{port}/")
                page.wait_for_function("document.getElementById('model').textContent.indexOf('labels') >= 0")
                yield page
                assert not errors, f"JavaScript errors on the page: {errors}"
            finally:
                browser.close()
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def browser_page(trained_models, tmp_path_factory):
    """``(page, base_url, model_folder)``: a served tiny fine-tuned model and a Chromium page on it."""
    folder = trained_models["finetune"]
    with served_page(folder, tmp_path_factory.mktemp("serve-browser")) as page:
        yield page, page.url.rstrip("/"), folder


def predict_in_page(page, text: str) -> None:
    """Type ``text`` and click Predict, waiting for the server's answer."""
    page.fill("#text", text)
    with page.expect_response(lambda response: response.url.endswith("/predict")):
        page.click("#predict")


def check_result(page, text: str, folder: Path) -> None:
    """The page shows the label ``classifier.predict`` gives, and one bar per class summing to 1."""
    from playwright.sync_api import expect

    from textxfer.classifier import predict

    expected = predict(text, model=folder)
    expect(page.locator("#label")).to_be_visible()
    expect(page.locator("#label")).to_have_text(str(expected.label))
    expect(page.locator("#error")).to_be_hidden()  # empty, or no stale error shown
    bars = page.locator(".bar")
    expect(bars).to_have_count(len(expected.probabilities))
    shown = {bar.get_attribute("data-label"): float(bar.get_attribute("data-probability")) for bar in bars.all()}
    assert set(shown) == {str(label) for label in expected.probabilities}
    assert sum(shown.values()) == pytest.approx(1.0, abs=1e-6)
    for label, probability in expected.probabilities.items():
        assert shown[str(label)] == pytest.approx(probability, abs=1e-4)


def test_page_predicts_like_the_python_api(browser_page):
    page, _, folder = browser_page
    predict_in_page(page, TEXT)
    check_result(page, TEXT, folder)


def check_error_then_recovery(page, folder: Path) -> None:
    """An error message is shown, the result is not, and the next prediction works and clears the error."""
    from playwright.sync_api import expect

    error = page.locator("#error")
    expect(error).to_be_visible()  # an empty element is not "visible": this waits for a message
    assert error.inner_text().strip()
    expect(page.locator("#predict")).to_be_enabled()

    other = "前台，很差，失望，酒店，价格，我们"
    predict_in_page(page, other)
    check_result(page, other, folder)


def test_page_shows_the_server_error_and_keeps_working(browser_page):
    from playwright.sync_api import expect

    page, _, folder = browser_page
    predict_in_page(page, "好" * (MAX_TEXT_CHARS + 1))
    expect(page.locator("#error")).to_contain_text(f"{MAX_TEXT_CHARS:,}")  # the server's 413 message
    expect(page.locator("#result")).to_be_hidden()
    check_error_then_recovery(page, folder)


def test_page_refuses_an_empty_text_and_keeps_working(browser_page):
    page, _, folder = browser_page
    page.fill("#text", "")
    page.click("#predict")
    check_error_then_recovery(page, folder)


def test_page_highlights_the_words_of_the_explanation(browser_page):
    from playwright.sync_api import expect

    from textxfer.classifier import explain

    page, _, folder = browser_page
    text = "房间很干净，服务热情，早餐很差"
    predict_in_page(page, text)
    expect(page.locator("#why")).to_be_visible()
    expected = explain(text, model=folder)  # one text: one Explanation
    marks = page.locator("#why mark")
    expect(marks).to_have_count(len(expected.words))
    expect(page.locator("#why-label")).to_have_text(str(expected.label))
    expect(page.locator("#why-method")).to_have_text(expected.method)
    for mark, word, contribution in zip(marks.all(), expected.words, expected.contributions):
        assert mark.inner_text() == word.text
        assert float(mark.get_attribute("data-contribution")) == pytest.approx(contribution, abs=1e-5)
        assert mark.get_attribute("class") == ("for" if contribution >= 0 else "against")
    # the text reads as typed, words and all in between
    assert page.locator("#why .text").inner_text() == text
    strongest = max(range(len(expected.words)), key=lambda i: abs(expected.contributions[i]))
    assert marks.nth(strongest).get_attribute("style").endswith(", 0.6);")  # the strongest word: the deepest colour
