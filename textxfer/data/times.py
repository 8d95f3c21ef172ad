"""``--time-column`` values → comparable times: numbers, or ISO dates and date-times."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any, Sequence

from textxfer.data.tables import is_missing
from textxfer.errors import TextxferError

_FIX = "use numbers (a year, a Unix time) or ISO dates such as 2024-05-31 or 2024-05-31T14:00"


def parse_times(values: Sequence[Any], rows: Sequence[int], origin: str, column: str) -> list[float]:
    """One sortable number per value (a date becomes its POSIX seconds, a naive one read as UTC); a value that
    is neither a number nor a date, or a column mixing the two, is one line naming the row."""
    parsed, kinds = [], set()
    for value, row in zip(values, rows):
        kind, number = _parse(value)
        if number is None:
            if is_missing(value):
                raise TextxferError(f"{origin}: row {row}, column {column!r}: no time given; every row needs one to be "
                                    "placed in time — fill it in or remove the row")
            raise TextxferError(f"{origin}: row {row}, column {column!r}: {value!r} is not a time; {_FIX}")
        kinds.add(kind)
        if len(kinds) > 1:
            raise TextxferError(f"{origin}: row {row}, column {column!r}: {value!r} is a {kind}, but earlier rows hold "
                                f"{(kinds - {kind}).pop()}s; one time column holds one kind of value — {_FIX}")
        parsed.append(number)
    return parsed


def _parse(value: Any) -> tuple[str, float | None]:
    if isinstance(value, bool) or value is None:
        return "number", None
    if isinstance(value, (int, float)):
        return "number", (float(value) if math.isfinite(value) else None)
    if isinstance(value, dt.datetime):
        return "date", _seconds(value)
    if isinstance(value, dt.date):
        return "date", _seconds(dt.datetime(value.year, value.month, value.day))
    text = str(value).strip()
    try:
        number = float(text)
        return "number", (number if math.isfinite(number) else None)
    except ValueError:
        pass
    try:
        return "date", _seconds(dt.datetime.fromisoformat(text.replace("/", "-")))
    except ValueError:
        return "date", None


def _seconds(moment: dt.datetime) -> float:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return moment.timestamp()
