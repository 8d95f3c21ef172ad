"""Read a tabular source (CSV, TSV, JSONL, JSON records, Parquet, a saved or hub dataset) into columns.

Text files are parsed by :class:`textxfer.data.reader.RowReader`, the one reader ``predict`` uses too.

Every reader returns :class:`Table` objects: column-oriented values plus a fingerprint of the source,
so a saved split can later prove it is applied to the very same data. Nothing here ever writes to
the source.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textxfer.errors import TextxferError
from textxfer.data.reader import DELIMITERS, EXTENSIONS, RowReader, missing_column

FILE_FORMATS = {**EXTENSIONS, ".parquet": "parquet", ".pq": "parquet"}


@dataclass
class Table:
    """Columns of one source (or one split of a dataset source), all of equal length.

    ``origin`` is what a row number refers to in messages ("reviews.csv", "my_ds[train]").
    """

    origin: str
    columns: dict[str, list[Any]]
    fingerprint: str

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()), []))

    def column(self, name: str, role: str) -> list[Any]:
        """The values of column ``name``; a missing column names the ones that exist."""
        if name not in self.columns:
            raise missing_column(self.origin, name, list(self.columns), role)
        return self.columns[name]


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, or of every file (name and bytes) under a folder."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def read_source(location: str, encoding: str = "utf-8") -> dict[str, Table]:
    """Read ``location`` into tables keyed by split name (``"all"`` for a plain file).

    A ``datasets`` folder or hub dataset with several splits returns one table per split.
    """
    path = Path(location)
    if path.is_dir():
        return _read_saved_dataset(path)
    if path.is_file():
        return {"all": _read_file(path, encoding)}
    if path.suffix.lower() in FILE_FORMATS or location.startswith((".", "/", "~")) or "\\" in location:
        raise TextxferError(f"{location}: no such file or folder")
    return _read_hub_dataset(location)


def _read_file(path: Path, encoding: str) -> Table:
    fmt = FILE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise TextxferError(
            f"{path}: unknown file type {path.suffix!r}; use one of {sorted(FILE_FORMATS)} "
            "or a `datasets.save_to_disk` folder"
        )
    fingerprint = file_sha256(path)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            columns = pq.read_table(path).to_pydict()
        except Exception as exc:  # pyarrow raises several types for corrupt files
            raise TextxferError(f"{path}: not a readable Parquet file ({exc})") from None
        return Table(str(path), columns, fingerprint)
    reader = RowReader(str(path), fmt, encoding)
    if fmt not in DELIMITERS:
        return Table(str(path), _records_to_columns(path, [row.values for row in reader]), fingerprint)
    values: list[list[Any]] = []
    for row in reader:
        if not values:  # the header is known once the first row is read
            values = [[] for _ in reader.header]
        for column, value in zip(values, row.values):
            column.append(value)
    return Table(str(path), {name: values[i] if values else [] for i, name in enumerate(reader.header)}, fingerprint)


def _records_to_columns(path: Path, records: list[dict]) -> dict[str, list[Any]]:
    if not records:
        raise TextxferError(f"{path}: no records found")
    names: dict[str, None] = {}
    for record in records:
        names.update(dict.fromkeys(record))
    return {name: [record.get(name) for record in records] for name in names}


def _read_saved_dataset(path: Path) -> dict[str, Table]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise TextxferError(f"{path}: not a `datasets.save_to_disk` folder ({exc})") from None
    fingerprint = file_sha256(path)
    if isinstance(loaded, datasets.Dataset):
        return {"all": Table(str(path), loaded.to_dict(), fingerprint)}
    return {name: Table(f"{path}[{name}]", split.to_dict(), fingerprint) for name, split in loaded.items()}


def _read_hub_dataset(name: str) -> dict[str, Table]:
    import datasets

    try:
        loaded = datasets.load_dataset(name)
    except Exception as exc:  # network, auth and missing-dataset errors vary by version
        raise TextxferError(
            f"{name}: not a local file or folder, and loading it as a Hugging Face hub dataset failed "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); check the path, "
            "or go online / use a local file"
        ) from None
    if isinstance(loaded, datasets.Dataset):
        return {"all": Table(name, loaded.to_dict(), loaded._fingerprint)}
    return {split: Table(f"{name}[{split}]", ds.to_dict(), ds._fingerprint) for split, ds in loaded.items()}


def unicode_safe(text: str) -> str:
    """``text`` with lone surrogates (valid in a Python ``str``, not in UTF-8) replaced by U+FFFD.

    Tokenizers written in Rust or C cannot take them; one odd character must not fail a prediction.
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def as_text(value: Any, where: str, column: str) -> str:
    """``value`` when it is a string; anything else where text is expected — a number, a boolean, a JSON
    object or list, a Parquet struct — is refused in one line (``str()`` of it would train on its repr)."""
    if isinstance(value, str):
        return value
    kind = ("a boolean" if isinstance(value, bool) else "a number" if isinstance(value, (int, float)) or
            type(value).__module__ == "numpy" else "a JSON object (or struct)" if isinstance(value, dict) else
            "a list" if isinstance(value, (list, tuple)) else f"a {type(value).__name__}")
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    raise TextxferError(f"{where}, column {column!r}: expected text, got {kind} {shown}; point --text-column at the "
                        "column that holds the texts")


# Characters that draw nothing and are not whitespace to str.strip(): a text of only these is empty.
INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u180e\u00ad"))


def is_missing(value: Any) -> bool:
    """True for None, NaN and strings that are empty, whitespace or invisible (zero-width) characters only."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.translate(INVISIBLE).strip()
