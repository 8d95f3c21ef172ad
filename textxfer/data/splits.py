"""Seeded, stratified train/validation/test assignment and the ``split.json`` record of it."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Sequence

from textxfer.errors import TextxferError

SPLITS = ("train", "validation", "test")
SPLIT_FORMAT_VERSION = 1
SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "validation": "validation", "valid": "validation", "val": "validation", "dev": "validation",
    "test": "test", "testing": "test", "eval": "test",
}


def stratified_split(
    texts: Sequence[str], labels: Sequence[str], validation_size: float, test_size: float, seed: int
) -> list[str]:
    """Assign each item to ``train``/``validation``/``test``; returns one split name per item.

    Identical texts form one group and always land in the same split, so the automatic split has no
    leakage. Groups are shuffled per label (the label of a group's first item) with ``seed``; each
    label gives ``round(n * size)`` items to test, then validation, the rest to train, so a class with
    very few items keeps them in train.
    """
    _check_sizes(validation_size, test_size)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, text in enumerate(texts):
        groups[text].append(i)
    by_label: dict[str, list[list[int]]] = defaultdict(list)
    for members in groups.values():
        by_label[labels[members[0]]].append(members)
    rng = random.Random(seed)
    assignment = ["train"] * len(texts)
    for label in sorted(by_label):
        label_groups = by_label[label]
        rng.shuffle(label_groups)
        total = sum(len(g) for g in label_groups)
        quotas = [("test", int(total * test_size + 0.5)), ("validation", int(total * validation_size + 0.5))]
        position = 0
        for split, quota in quotas:
            taken = 0
            # Never take the last group: every label keeps at least one training example.
            while taken < quota and position < len(label_groups) - 1:
                for i in label_groups[position]:
                    assignment[i] = split
                taken += len(label_groups[position])
                position += 1
    return assignment


def multilabel_split(
    keys: Sequence, labels: Sequence[Sequence[str]], validation_size: float, test_size: float, seed: int
) -> list[str]:
    """:func:`stratified_split` for multi-label rows (each a tuple of label names): iterative stratification
    (Sechidis et al., 2011, through the ``iterative-stratification`` package), which keeps each label's
    share — and its co-occurrence with the others — close to equal across the splits. Identical ``keys``
    (texts, or pairs of texts) form one group and land in one split; test is drawn first, then validation
    from the rest."""
    _check_sizes(validation_size, test_size)
    import numpy as np
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    groups: dict = defaultdict(list)
    for i, key in enumerate(keys):
        groups[key].append(i)
    members = list(groups.values())
    names = sorted({name for row in labels for name in row})
    column = {name: j for j, name in enumerate(names)}
    matrix = np.zeros((len(members), max(len(names), 2)), dtype=np.int64)  # iterstrat needs 2 columns
    for g, rows in enumerate(members):
        for name in labels[rows[0]]:
            matrix[g, column[name]] = 1
    assignment = ["train"] * len(keys)
    remaining = np.arange(len(members))
    left = 1.0
    for split, size in (("test", test_size), ("validation", validation_size)):
        share = size / left
        if share <= 0 or len(remaining) < 3:
            continue
        taken = int(len(remaining) * share + 0.5)
        if not 0 < taken < len(remaining):
            continue
        splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=taken, random_state=seed)
        kept, drawn = next(splitter.split(np.zeros(len(remaining)), matrix[remaining]))
        for g in remaining[drawn]:
            for i in members[g]:
                assignment[i] = split
        remaining = remaining[kept]
        left -= size
    return assignment


def time_split(times: Sequence, validation_size: float, test_size: float) -> list[str]:
    """Assign rows by time: the latest ``test_size`` share is test, the ``validation_size`` share just before
    it validation, the rest train (rows of equal time keep their order in the file). ``times`` are
    comparable values (numbers, or datetimes), one per row."""
    _check_sizes(validation_size, test_size)
    order = sorted(range(len(times)), key=lambda i: times[i])
    n = len(order)
    n_test, n_validation = int(n * test_size + 0.5), int(n * validation_size + 0.5)
    assignment = ["train"] * n
    for position, i in enumerate(order):
        if position >= n - n_test:
            assignment[i] = "test"
        elif position >= n - n_test - n_validation:
            assignment[i] = "validation"
    return assignment


def _check_sizes(validation_size: float, test_size: float) -> None:
    if not 0 <= validation_size < 1 or not 0 <= test_size < 1 or validation_size + test_size >= 1:
        raise TextxferError(
            f"split sizes must be in [0, 1) and sum below 1, got validation {validation_size}, test {test_size}"
        )


def canonical_split_name(value: object, origin: str, row: int, column: str) -> str:
    """Map a split-column value such as ``dev`` or ``TRAIN`` to train/validation/test."""
    name = SPLIT_ALIASES.get(str(value).strip().lower()) if value is not None else None
    if name is None:
        raise TextxferError(
            f"{origin}: row {row}, column {column!r}: unknown split {value!r}; "
            f"use one of {sorted(SPLIT_ALIASES)}"
        )
    return name


def write_split_file(path: Path, record: dict) -> None:
    """Write ``split.json`` (the record built by :mod:`textxfer.data.dataset`)."""
    path.write_text(json.dumps({"format_version": SPLIT_FORMAT_VERSION, **record}, indent=1), encoding="utf-8")


def differing_part(a: dict, b: dict, parts: Sequence[str], keys: Sequence[str] = ("sha256", "rows")) -> str | None:
    """The first of ``parts`` whose entry differs between split records ``a`` and ``b`` in any of ``keys``
    (source fingerprint, row numbers, …); None when they are the same split."""
    for part in parts:
        mine, theirs = a["splits"].get(part, {}), b["splits"].get(part, {})
        if any(mine.get(key) != theirs.get(key) for key in keys):
            return part
    return None


def read_split_file(path: str | Path) -> dict:
    """Read a ``split.json`` and check every field it is trusted with: a strict partition of valid row
    numbers per source table, a sha256 per split, the column names. Anything else is one line naming the
    file and the field."""
    path = Path(path)
    if path.is_dir():
        path = path / "split.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TextxferError(f"{path}: no such split file; pass the split.json of an earlier run") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TextxferError(f"{path}: not a valid split.json ({exc})") from None
    except RecursionError:
        raise TextxferError(f"{path}: not a valid split.json (JSON nested too deeply)") from None
    version = record.get("format_version") if isinstance(record, dict) else None
    if not isinstance(version, int) or isinstance(version, bool) or version > SPLIT_FORMAT_VERSION:
        raise TextxferError(
            f"{path}: split format version {version!r} is not supported (this textxfer reads up to "
            f"{SPLIT_FORMAT_VERSION}); upgrade textxfer or re-create the split"
        )
    fix = "re-create it by running without --split, or restore the file an earlier run wrote"
    for field in ("text_column", "label_column"):
        if not isinstance(record.get(field), str) or not record[field]:
            raise TextxferError(f"{path}: malformed split.json: '{field}' must be a column name, got "
                                f"{record.get(field)!r}; {fix}")
    if "method" in record and not isinstance(record["method"], str):
        raise TextxferError(f"{path}: malformed split.json: 'method' must be a string, got {record['method']!r}; {fix}")
    if "shape" in record:
        from textxfer.data.shape import TaskShape

        TaskShape.from_dict(record["shape"], f"{path}: splits' shape")
    splits = record.get("splits")
    if not isinstance(splits, dict) or "train" not in splits:
        raise TextxferError(f"{path}: malformed split.json: no 'splits.train' entry; {fix}")
    seen: dict[tuple[str, str], dict[int, str]] = {}
    for name, entry in splits.items():
        if name not in SPLITS or not isinstance(entry, dict):
            raise TextxferError(f"{path}: malformed split.json entry {name!r} (expected train, validation or test, "
                                f"each an object); {fix}")
        _check_entry(path, name, entry, fix, seen)
    return record


def _check_entry(path: Path, name: str, entry: dict, fix: str, seen: dict) -> None:
    """One ``splits.<name>`` entry: source, table, sha256 and rows, and no row also in another split."""
    for field in ("source", "table"):
        if not isinstance(entry.get(field), str):
            raise TextxferError(f"{path}: malformed split.json: splits.{name}.{field} must be a string, got "
                                f"{entry.get(field)!r}; {fix}")
    digest = entry.get("sha256")
    if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
        raise TextxferError(f"{path}: malformed split.json: splits.{name}.sha256 must be the 64-hex-digit fingerprint "
                            f"of its source table, got {digest!r}; {fix}")
    rows = entry.get("rows")
    if not isinstance(rows, list):
        raise TextxferError(f"{path}: malformed split.json: splits.{name}.rows must be a list of row numbers; {fix}")
    owner = seen.setdefault((entry["source"], entry["table"]), {})
    for row in rows:
        if not isinstance(row, int) or isinstance(row, bool) or row < 1:
            raise TextxferError(f"{path}: malformed split.json: splits.{name}.rows holds {row!r}; row numbers are "
                                f"whole numbers from 1; {fix}")
        if row in owner:
            where = "twice" if owner[row] == name else f"in both {owner[row]} and {name}"
            raise TextxferError(f"{path}: split.json lists row {row} of {entry['source']} {where}; a split must use "
                                f"each row once (otherwise it is scored twice or leaks into training); {fix}")
        owner[row] = name
