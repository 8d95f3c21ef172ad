"""Label cells → label names: one name per row, or a set of names per row for multi-label data.

Multi-label rows come three ways: a cell listing labels with a separator (``Action|Comedy``), a JSON
list in a JSONL/JSON file (``["Action", "Comedy"]``), or one 0/1 column per label. A multi-label row
may have no label at all; it is kept (the model learns that none applies).
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

from textxfer.errors import TextxferError
from textxfer.data.shape import TaskShape
from textxfer.data.tables import Table, is_missing

# Separators a user's multi-label cells may use; named in the message when the given one is never found.
LIKELY_SEPARATORS = ("|", ";", ",", "/", "+")
FIRST_ROWS = 5


def label_name(value: Any, origin: str, row: int, column: str) -> str:
    """The string name of a label value; integral floats (1.0) count as integers."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    raise TextxferError(
        f"{origin}: row {row}, column {column!r}: label {value!r} is a {type(value).__name__}; "
        "labels must be strings or integers — fix the column or choose another with --label-column"
        + (" (a multi-label column holds a JSON list in every row)" if isinstance(value, (list, tuple)) else "")
    )


def detect_shape(table: Table, label_column: str, shape: TaskShape) -> TaskShape:
    """``shape``, made multi-label when every label cell is a JSON list (a JSONL/JSON file) and no separator or
    label columns were given. (A column mixing lists with single labels stays single-label, and its first list
    is refused in one line by :func:`label_name`.)"""
    if shape.multi_label or label_column not in table.columns:
        return shape
    cells = [value for value in table.columns[label_column] if not is_missing(value)]
    if cells and all(isinstance(value, (list, tuple)) for value in cells):
        return TaskShape(True, None, (), shape.text_pair_column)
    return shape


def read_label_cells(table: Table, label_column: str, shape: TaskShape) -> list[Any]:
    """Per row: a label name (single-label; None where missing) or a tuple of label names (multi-label;
    empty where the row has none)."""
    if not shape.multi_label:
        values = table.column(label_column, "label")
        return [None if is_missing(v) else label_name(v, table.origin, i + 1, label_column) for i, v in enumerate(values)]
    if shape.label_columns:
        return _from_indicator_columns(table, shape.label_columns)
    values = table.column(label_column, "label")
    if shape.label_separator:
        _check_separator(values, table.origin, label_column, shape.label_separator)
    return [_cell_labels(v, table.origin, i + 1, label_column, shape.label_separator) for i, v in enumerate(values)]


def _cell_labels(value: Any, origin: str, row: int, column: str, separator: str | None) -> tuple[str, ...]:
    if isinstance(value, (list, tuple)):
        names = [label_name(v, origin, row, column) for v in value if not is_missing(v)]
    elif is_missing(value):
        names = []
    elif isinstance(value, str) and separator:
        names = [part.strip() for part in value.split(separator)]
    else:
        names = [label_name(value, origin, row, column)]
    return tuple(sorted({name for name in names if name}))


def _check_separator(values: Sequence[Any], origin: str, column: str, separator: str) -> None:
    """Refuse a separator no cell uses while most multi-word cells use another one (a wrong --label-separator)."""
    cells = [v for v in values if isinstance(v, str) and v.strip()]
    if not cells or any(separator in v for v in cells):
        return
    found = Counter(s for v in cells for s in LIKELY_SEPARATORS if s != separator and s in v)
    if found:
        other, count = found.most_common(1)[0]
        example = next(v for v in cells if other in v)
        raise TextxferError(f"{origin}: no cell of label column {column!r} contains the separator {separator!r}, but "
                            f"{count:,} contain {other!r} (e.g. {example!r}); pass --label-separator '{other}'")


_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f", ""}


def _from_indicator_columns(table: Table, columns: Sequence[str]) -> list[tuple[str, ...]]:
    """One 0/1 column per label → the tuple of label names (the column names) whose cell is 1."""
    flags = {name: table.column(name, "label") for name in columns}
    rows = []
    for index in range(len(table)):
        names = []
        for name in columns:
            if _indicator(flags[name][index], table.origin, index + 1, name):
                names.append(name.strip())
        rows.append(tuple(sorted(names)))
    return rows


def _indicator(value: Any, origin: str, row: int, column: str) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, float) and value != value:  # NaN: an empty cell in a Parquet/pandas table
        return False
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise TextxferError(f"{origin}: row {row}, column {column!r}: {value!r} is not 0 or 1; each of --label-columns "
                        "holds 1 where the row has that label and 0 (or empty) where not")


def check_training_labels(labels: Sequence[tuple[str, ...]], rows: Sequence[int], origin: str, where: str) -> None:
    """Refuse multi-label training rows (before they are split) with no label at all, with one label only, or with
    a label used by one row only (it cannot be both learned and scored). ``where`` names the label column(s)."""
    used: dict[str, list[int]] = {}
    for names, row in zip(labels, rows):
        for name in names:
            used.setdefault(name, []).append(row)
    if not used:
        raise TextxferError(f"{origin}: no training row has a label in {where}; check --label-column and "
                            "--label-separator (or --label-columns)")
    if len(used) < 2:
        raise TextxferError(f"{origin}: the training rows use only label {next(iter(used))!r} in {where}; a multi-label "
                            "classifier needs at least 2 labels — for one yes/no label, use a 0/1 --label-column")
    once = sorted(name for name, where in used.items() if len(where) == 1)
    if once:
        shown = ", ".join(f"{name!r} (row {used[name][0]})" for name in once[:FIRST_ROWS])
        raise TextxferError(f"{origin}: {len(once)} label(s) are used by one row only: {shown}"
                            f"{', …' if len(once) > FIRST_ROWS else ''}; a label needs at least 2 rows to be learned and "
                            "scored — add rows with it, or remove it from that row")
