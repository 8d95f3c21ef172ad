"""Shared tiny fixtures: a small synthetic Chinese review CSV and fast baseline settings."""

from __future__ import annotations

import csv
import os
import random
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

POSITIVE = ["很好", "干净", "舒服", "满意", "推荐", "喜欢", "方便", "热情", "漂亮", "划算"]
NEGATIVE = ["很差", "脏", "吵", "失望", "糟糕", "难吃", "破旧", "冷淡", "贵", "后悔"]
NEUTRAL = ["酒店", "房间", "服务", "早餐", "位置", "前台", "价格", "这次", "我们", "觉得"]


def make_rows(n: int = 240, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` distinct synthetic reviews; each label's words separate it from the other label."""
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < n:
        label = "positive" if len(rows) % 2 == 0 else "negative"
        words = POSITIVE if label == "positive" else NEGATIVE
        tokens = rng.sample(NEUTRAL, 3) + rng.sample(words, 2) + [rng.choice(NEUTRAL)]
        rng.shuffle(tokens)
        text = "，".join(tokens) + f"。{len(rows)}"
        if text not in seen:
            seen.add(text)
            rows.append((text, label))
    return rows


HARD_NOISE = 0.08  # the share of labels flipped in every split of the hard fixture


def make_hard_rows(n: int = 240, seed: int = 0, noise: float = HARD_NOISE) -> list[tuple[str, str]]:
    """``n`` distinct reviews whose words do not give the label away, for tests that promise quality.

    Each text holds five sentiment words drawn (with repeats) from *both* lists and two neutral words, in a
    random order; the label is the majority (3:2 or 4:1, half each), so every word occurs under both labels and
    only the count decides. Then ``round(noise * n)`` labels (seeded) are flipped. No index or other label cue
    is appended. A model that learns scores clearly above chance but below 1.0 (the flipped labels cap it near
    ``1 - noise``); one trained on shuffled labels scores about 0.5, an inverted label map about 0.2.
    Characters come from the ``make_rows`` word lists only, so ``tiny_bert``'s vocabulary covers them.
    """
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < n:
        label = "positive" if len(rows) % 2 == 0 else "negative"
        majority = rng.choice((3, 4))
        positives = majority if label == "positive" else 5 - majority
        tokens = ([rng.choice(POSITIVE) for _ in range(positives)]
                  + [rng.choice(NEGATIVE) for _ in range(5 - positives)] + rng.sample(NEUTRAL, 2))
        rng.shuffle(tokens)
        text = "，".join(tokens) + "。"
        if text not in seen:
            seen.add(text)
            rows.append((text, label))
    flipped = set(rng.sample(range(n), round(noise * n)))
    other = {"positive": "negative", "negative": "positive"}
    return [(text, other[label] if i in flipped else label) for i, (text, label) in enumerate(rows)]


# Multi-label and pair fixtures: word groups from the lists above (so tiny_bert's vocabulary covers them).
ASPECTS = {"clean": POSITIVE[:3], "noisy": NEGATIVE[:3], "value": POSITIVE[5:8]}
TOPICS = [POSITIVE[:3], NEGATIVE[:3], POSITIVE[5:8], NEGATIVE[5:8]]


def make_multilabel_rows(n: int = 240, seed: int = 0, noise: float = 0.06) -> list[tuple[str, str]]:
    """``(text, "a|b")`` rows: each of the labels in :data:`ASPECTS` applies with probability 0.4 (so some rows
    have none, some several), and a text holds one word of each label that applies among three neutral words.
    Then a ``noise`` share of the label decisions (seeded) is flipped: a model that learns scores well below 1.0
    micro-F1; one trained on shuffled rows scores near the label frequency."""
    rng = random.Random(seed)
    rows, seen = [], set()
    names = sorted(ASPECTS)
    while len(rows) < n:
        applies = [name for name in names if rng.random() < 0.4]
        tokens = [rng.choice(ASPECTS[name]) for name in applies] + rng.sample(NEUTRAL, 3)
        rng.shuffle(tokens)
        text = "，".join(tokens) + "。"
        if text not in seen:
            seen.add(text)
            rows.append((text, applies))
    noisy = []
    for text, applies in rows:
        flipped = {name for name in names if rng.random() < noise}
        noisy.append((text, "|".join(sorted(set(applies) ^ flipped))))
    return noisy


def make_pair_rows(n: int = 240, seed: int = 0, noise: float = 0.05) -> list[tuple[str, str, str]]:
    """``(text, second text, label)`` rows: each text holds two words of one of :data:`TOPICS` among neutral words;
    the label is ``same`` when both texts are on one topic, else ``different`` (half each). Only the pair decides:
    either text alone says nothing about the label. A ``noise`` share of labels is flipped."""
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < n:
        same = len(rows) % 2 == 0
        first = rng.randrange(len(TOPICS))
        second = first if same else rng.choice([t for t in range(len(TOPICS)) if t != first])
        # Two words of the topic in each text: word vectors learn the topics from their co-occurrence.
        texts = tuple("，".join(rng.sample(NEUTRAL, 2) + rng.sample(TOPICS[t], 2)) + "。" for t in (first, second))
        if texts not in seen:
            seen.add(texts)
            label = "same" if same else "different"
            if rng.random() < noise:
                label = "different" if same else "same"
            rows.append((*texts, label))
    return rows


@pytest.fixture(scope="session")
def multilabel_data(tmp_path_factory):
    """:func:`make_multilabel_rows` (300) read with ``--label-separator "|"``, split 60/20/20."""
    from textxfer.data.dataset import DataOptions, load_data

    path = write_csv(tmp_path_factory.mktemp("ml") / "aspects.csv", make_multilabel_rows(300), header=("text", "tags"))
    return load_data(DataOptions(data=str(path), label_column="tags", label_separator="|", validation_size=0.2,
                                 test_size=0.2))


def write_csv(path: Path, rows, header=("text", "label"), delimiter=",") -> Path:
    """Write rows with a header as CSV/TSV."""
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="session")
def rows() -> list[tuple[str, str]]:
    return make_rows()


@pytest.fixture
def reviews_csv(tmp_path: Path, rows) -> Path:
    return write_csv(tmp_path / "reviews.csv", rows)


@pytest.fixture
def fast_config():
    """Baseline settings small enough for a test to train in about a second."""
    from textxfer.baseline.pipeline import BaselineConfig

    return BaselineConfig(vector_size=16, epochs=5, min_count=1, n_estimators=20, n_jobs=1)


def build_tiny_bert(folder: Path, **config) -> Path:
    """A tiny random BERT (a few thousand parameters) with a character vocabulary of the fixture texts, in ``folder``
    (``config``: ``BertConfig`` settings to override, e.g. the dropouts)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    characters = sorted({ch for text, _ in make_rows(500) for ch in text} | set("0123456789abcdefghijklmnopqrstuvwxyz"))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + characters
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(str(folder))
    settings = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                    max_position_embeddings=64) | config
    config = BertConfig(vocab_size=len(vocab), **settings)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A tiny random BERT (a few thousand parameters) with a character vocabulary of the fixture texts."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models on shared cores: one thread is many times faster than several fighting over two cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_config(tiny_bert):
    """Fine-tuning settings that teach the tiny BERT the fixture in a few seconds."""
    from textxfer.transformer.pipeline import FinetuneConfig

    return FinetuneConfig(model=str(tiny_bert), strategy="full", epochs=5, learning_rate=3e-3, batch_size=8,
                          eval_batch_size=32, logging_steps=1000, early_stopping=0, warmup=0.0, min_steps=0)


@pytest.fixture(scope="session")
def sample_csv(tmp_path_factory) -> Path:
    """The fixture reviews as one CSV shared by the whole session (read-only)."""
    return write_csv(tmp_path_factory.mktemp("data") / "reviews.csv", make_rows())


@pytest.fixture(scope="session")
def trained_models(tmp_path_factory, sample_csv, tiny_bert) -> dict[str, Path]:
    """Run folders of both pipelines trained once on ``sample_csv``: ``{"baseline": ..., "finetune": ...}``."""
    from textxfer.data.dataset import DataOptions
    from textxfer.baseline.pipeline import BaselineClassifier, BaselineConfig
    from textxfer.transformer.pipeline import FinetuneClassifier, FinetuneConfig
    from textxfer.evaluation.runner import run

    root = tmp_path_factory.mktemp("trained")
    options = DataOptions(data=str(sample_csv))
    baseline = BaselineConfig(vector_size=16, epochs=5, min_count=1, n_estimators=20, n_jobs=1)
    finetune = FinetuneConfig(model=str(tiny_bert), strategy="full", epochs=5, learning_rate=3e-3, batch_size=8,
                              eval_batch_size=32, logging_steps=1000, early_stopping=0, warmup=0.0,
                              checkpoint_dir=str(root / "checkpoints"))
    quiet = lambda *_: None  # noqa: E731
    run(BaselineClassifier(baseline), options, root / "baseline", progress=False, log=quiet)
    run(FinetuneClassifier(finetune), options, root / "finetune", progress=False, log=quiet)
    return {"baseline": root / "baseline", "finetune": root / "finetune"}


@pytest.fixture(scope="session")
def hard_data():
    """The hard fixture (``make_hard_rows``) as datasets: ``train`` (200 texts), ``validation`` (40), ``test``
    (400: enough that accuracy moves by 0.0025 a text), ``labels``, and ``shuffled_train`` (the training texts
    with their labels permuted, seeded: the control a working recipe must beat)."""
    from types import SimpleNamespace

    from textxfer.data.dataset import TextDataset
    from textxfer.data.labels import LabelSet

    def dataset(rows, origin):
        return TextDataset([t for t, _ in rows], [l for _, l in rows], list(range(2, len(rows) + 2)), origin)

    train, validation, test = make_hard_rows(200, seed=1), make_hard_rows(40, seed=2), make_hard_rows(400, seed=3)
    permuted = random.Random(4).sample([label for _, label in train], len(train))
    return SimpleNamespace(train=dataset(train, "hard-train.csv"),
                           validation=dataset(validation, "hard-validation.csv"),
                           test=dataset(test, "hard-test.csv"), labels=LabelSet.from_labels(l for _, l in train),
                           shuffled_train=dataset([(t, l) for (t, _), l in zip(train, permuted)], "hard-shuffled.csv"))


ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def serve_subprocess(model: Path, *extra: str):
    """``textxfer serve`` on ``model`` in a subprocess on a free port, started now; yields ``(url, process, ready)``,
    where ``ready()`` waits until ``/health`` answers (at most 120 s) and returns the URL. Killed on exit."""
    import httpx

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "textxfer.cli", "serve", "--model", str(model), "--port",
                                str(port), "--log-level", "warning", *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def ready() -> str:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"server exited early: {process.stdout.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("server did not start within 120 s")
            time.sleep(0.2)

    try:
        yield url, process, ready
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
