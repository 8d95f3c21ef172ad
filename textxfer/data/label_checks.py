"""Label problems users make by accident, found in the training rows as they are read.

Each finding names its rows (numbered as everywhere else: the data row of the source, 1 = the first row after the
header), a short ``reason`` (the ``reason`` column of ``textxfer audit``'s ``audit.csv``) and a one-line
``message`` that says what to do. Training prints every message as a warning; ``textxfer audit`` lists the rows.

- ``label-case``: label names that differ only in case ("Positive", "positive") are trained as different classes;
- ``label-spaces``: label cells with spaces around them (read without them, so "positive " joined "positive");
- ``repeated-header``: a row that repeats the header (two files concatenated);
- ``id-column``: a label column with about as many classes as rows (an id column taken for labels);
- ``thin-class``: a class with only one or two texts (too few to learn, or to score).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Sequence

THIN_CLASS = 2  # a class with at most this many training texts is flagged
ID_COLUMN_SHARE = 0.5  # at least this many classes per row (and at least ID_COLUMN_CLASSES) looks like an id column
ID_COLUMN_CLASSES = 20
SHOWN_ROWS = 5


@dataclass
class LabelFinding:
    """One label problem: its reason, the rows it concerns and the line that explains it."""

    reason: str
    message: str
    rows: list[int] = field(default_factory=list)
    suggested: dict[int, str] = field(default_factory=dict)  # row → the label it probably meant (label-case)


def _rows(rows: Sequence[int]) -> str:
    shown = ", ".join(str(r) for r in rows[:SHOWN_ROWS])
    return shown + (f" and {len(rows) - SHOWN_ROWS:,} more" if len(rows) > SHOWN_ROWS else "")


def label_findings(origin: str, rows: Sequence[int], texts: Sequence[str], labels: Sequence, raw_labels: Sequence | None,
                   text_column: str, label_column: str, multi_label: bool) -> list[LabelFinding]:
    """The label problems of the training rows ``rows`` (their ``texts`` and label names, a tuple of names per row
    for a multi-label column); ``raw_labels``: the label cells as read, before spaces were stripped (None where the
    labels do not come from one cell per row)."""
    per_row = [tuple(names) if multi_label else (names,) for names in labels]
    counts = Counter(name for names in per_row for name in names)
    rows_of: dict[str, list[int]] = defaultdict(list)
    for row, names in zip(rows, per_row):
        for name in names:
            rows_of[name].append(row)
    found = []
    header = [row for row, text, names in zip(rows, texts, per_row)
              if text.strip().casefold() == text_column.strip().casefold() and label_column in names]
    if header:
        found.append(LabelFinding("repeated-header", f"{origin}: row(s) {_rows(header)} repeat the header ({text_column!r}, "
                                  f"{label_column!r}) — two files concatenated? Delete those rows", header))
    by_case: dict[str, list[str]] = defaultdict(list)
    for name in counts:
        by_case[name.casefold()].append(name)
    for variants in by_case.values():
        if len(variants) < 2:
            continue
        variants.sort(key=lambda n: (-counts[n], n))
        common = variants[0]
        flagged = sorted(r for name in variants[1:] for r in rows_of[name])
        named = [f"{name!r} ({counts[name]:,} rows)" for name in variants]
        listed = ", ".join(named[:-1]) + " and " + named[-1]
        found.append(LabelFinding("label-case", f"{origin}: labels {listed} differ only in case, so they are trained as "
                                  f"different classes; write them one way in column {label_column!r}", flagged,
                                  {r: common for r in flagged}))
    if raw_labels is not None:
        spaced = [row for row, raw in zip(rows, raw_labels) if isinstance(raw, str) and raw != raw.strip()]
        if spaced:
            example = next(raw for raw in raw_labels if isinstance(raw, str) and raw != raw.strip())
            found.append(LabelFinding("label-spaces", f"{origin}: {len(spaced):,} label cell(s) in column {label_column!r} "
                                      f"have spaces around them (rows {_rows(spaced)}; e.g. {example!r}); they were read "
                                      f"without the spaces, as {example.strip()!r} — check that this is what you meant",
                                      spaced))
    if not multi_label and len(counts) >= max(ID_COLUMN_CLASSES, ID_COLUMN_SHARE * len(rows)):
        found.append(LabelFinding("id-column", f"{origin}: label column {label_column!r} has {len(counts):,} different "
                                  f"values in {len(rows):,} rows — an id column taken for labels? Choose the label "
                                  "column with --label-column", []))
    elif len(counts) < ID_COLUMN_SHARE * len(rows):  # (an id column's classes are all thin: one finding says it)
        thin = {name: n for name, n in counts.items() if n <= THIN_CLASS}
        if thin:
            flagged = sorted(r for name in thin for r in rows_of[name])
            listed = ", ".join(f"{name!r} ({n})" for name, n in sorted(thin.items(), key=lambda item: (item[1], item[0])))
            found.append(LabelFinding("thin-class", f"{origin}: class(es) with only {THIN_CLASS} text(s) or fewer: {listed} "
                                      f"(rows {_rows(flagged)}) — too few to learn or to score; add texts or merge them "
                                      "into another class", flagged))
    return found
