"""Rebuild the multi-label and text-pair samples in ``sample_data/`` byte for byte from their packages.

- ``films.csv`` (multi-label): 2,000 MovieLens film titles, ``title,year,genres`` (``|``-separated genres);
- ``empathy.csv`` (multi-label text pairs): 1,000 EPITOME Reddit pairs, ``seeker_post,response_post`` and the 0/1
  columns ``emotional_reactions,exploration,interpretation``;
- ``support.csv`` (text pairs, 8 classes): 2,000 ESConv ``seeker,supporter,strategy`` rows.

Each is a seeded random sample (seed 0, rows kept in corpus order) of the corpus that ``scripts/corpora.py`` builds
from the package (see that file for the sources and licences). Run: ``python scripts/build_shape_samples.py``.
"""

from __future__ import annotations

import csv
import io
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpora  # noqa: E402  (the script next to this one)

SAMPLES = {"films.csv": ("movielens", 2000), "empathy.csv": ("epitome", 1000), "support.csv": ("esconv", 2000)}
OUTPUT = corpora.ROOT / "sample_data"


def sample(name: str, size: int) -> list[dict]:
    """``size`` rows of corpus ``name``, drawn with seed 0, in corpus order."""
    with open(corpora.build(name), encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    keep = sorted(random.Random(0).sample(range(len(rows)), size))
    return [rows[i] for i in keep]


def main() -> None:
    """Write the three samples and print their label counts."""
    for file, (name, size) in SAMPLES.items():
        rows = sample(name, size)
        (OUTPUT / file).write_text(corpora.render(rows), encoding="utf-8")
        print(f"wrote sample_data/{file}: {len(rows):,} rows of {name} ({corpora.describe(name, rows)})")


if __name__ == "__main__":
    main()
