"""Read a tabular source (CSV, TSV, JSONL, JSON records, Parquet, a saved or hub dataset) into columns.

Every reader returns :class:`Table` objects: column-oriented values plus a fingerprint of the source,
so a saved split can later prove it is applied to the very same data. Nothing here ever writes to
the source.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textxfer.errors import TextxferError

FILE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
                ".json": "json", ".parquet": "parquet", ".pq": "parquet"}
# csv's default field limit (128 KiB) is smaller than some real reviews and documents.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


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
            raise TextxferError(
                f"{self.origin}: no column {name!r}; columns are {list(self.columns)}. "
                f"Pass --{role}-column with one of them.{delimiter_hint(list(self.columns))}"
            )
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
    text = _decode(path, encoding)
    if fmt in ("csv", "tsv"):
        columns = _parse_delimited(path, text, "\t" if fmt == "tsv" else ",")
    elif fmt == "jsonl":
        columns = _records_to_columns(path, _parse_jsonl(path, text))
    else:
        columns = _records_to_columns(path, _parse_json(path, text))
    return Table(str(path), columns, fingerprint)


def delimiter_hint(header: list[str]) -> str:
    """A hint when a one-column header looks split by another delimiter (``text;label``)."""
    if len(header) == 1:
        for delimiter in (";", "\t", "|", ","):
            if delimiter in str(header[0]):
                return (f" The header {header[0]!r} looks delimited by {delimiter!r}: save the file comma-separated "
                        "as .csv (or tab-separated as .tsv)")
    return ""


# What a file really is when its first bytes say so: (magic, what it is, what to do). A compressed file or a
# workbook named .csv otherwise fails as "not valid utf-8 … try --encoding gbk", which sends users astray.
MAGIC = [
    (b"\x1f\x8b", "a gzip-compressed file", "decompress it first (gunzip), then pass the .csv/.jsonl inside"),
    (b"PK\x03\x04", "a zip archive (an Excel .xlsx workbook is one)",
     "save the sheet as CSV (Excel: Save As → CSV UTF-8) or unzip it, then pass the text file"),
    (b"\xd0\xcf\x11\xe0", "an old Excel/Office file (.xls)", "save the sheet as CSV (Excel: Save As → CSV UTF-8)"),
    (b"PAR1", "a Parquet file", "name it .parquet (textxfer reads Parquet for training) or export it as CSV"),
    (b"BZh", "a bzip2-compressed file", "decompress it first (bunzip2)"),
    (b"\xfd7zXZ\x00", "an xz-compressed file", "decompress it first (unxz)"),
    (b"%PDF", "a PDF document", "export its table as CSV"),
]


def binary_kind(path: Path | str, head: bytes) -> None:
    """Refuse, in one line, a file whose first bytes show it is not text (compressed, a workbook, Parquet)."""
    for magic, what, fix in MAGIC:
        if head.startswith(magic):
            raise TextxferError(f"{path}: this is {what}, not a text file ({Path(str(path)).suffix or 'no extension'} "
                                f"by name); {fix}")


def has_utf16_bom(head: bytes, encoding: str) -> bool:
    """True when a file read as UTF-8 starts with a UTF-16 byte-order mark (never valid UTF-8)."""
    return encoding.lower().replace("_", "-") in ("utf-8", "utf8", "utf-8-sig") and \
        head[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def _decode(path: Path, encoding: str) -> str:
    data = path.read_bytes()
    binary_kind(path, data[:8])
    if has_utf16_bom(data, encoding):
        encoding = "utf-16"  # a UTF-16 file (e.g. saved by Excel as "Unicode text"): read it as such
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise TextxferError(
            f"{path}: not valid {encoding} at byte offset {exc.start} "
            f"(byte 0x{data[exc.start]:02x}); pass --encoding with the file's real encoding, "
            "e.g. --encoding gbk or --encoding utf-16"
        ) from None
    except LookupError:
        raise TextxferError(f"unknown --encoding {encoding!r}; try utf-8, gbk, gb18030 or utf-16") from None
    return text.removeprefix("\ufeff")


def _parse_delimited(path: Path, text: str, delimiter: str) -> dict[str, list[Any]]:
    # io.StringIO(newline="") ends lines only at \n, \r and \r\n, like csv itself; str.splitlines would
    # also split at \x0c, \x1c, \x85, \u2028 ... that csv.writer leaves unquoted inside fields.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise TextxferError(f"{path}: the file is empty; expected a header row such as 'text,label'") from None
    if not any(field.strip() for field in header):
        raise TextxferError(f"{path}: the first line is blank; expected a header row such as 'text,label'")
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise TextxferError(f"{path}: duplicate column names {duplicated} in the header; rename them")
    values: list[list[Any]] = [[] for _ in header]
    try:
        for row in reader:
            if not row:
                continue  # csv yields [] for blank lines
            if len(row) != len(header):
                hint = delimiter_hint(header)  # e.g. a TSV named .csv whose texts hold commas
                raise TextxferError(
                    f"{path}: row {len(values[0]) + 1} (line {reader.line_num}) has {len(row)} fields but the "
                    f"header has {len(header)}" + (f".{hint}" if hint else
                                                   f"; quote fields that contain the delimiter {delimiter!r}")
                )
            for column, value in zip(values, row):
                column.append(value)
    except csv.Error as exc:
        raise TextxferError(f"{path}: line {reader.line_num}: malformed CSV ({exc})") from None
    return dict(zip(header, values))


def _parse_jsonl(path: Path, text: str) -> list[dict]:
    records = []
    # JSON strings may hold a raw \u2028 or \x85, so split at \n only (not str.splitlines).
    for line_number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TextxferError(f"{path}: line {line_number} is not valid JSON ({exc.msg}); fix or remove it") from None
        except RecursionError:
            raise TextxferError(f"{path}: line {line_number}: JSON nested too deeply to read; fix or remove it") from None
        if not isinstance(record, dict):
            raise TextxferError(f"{path}: line {line_number} is a JSON {type(record).__name__}, expected an object")
        records.append(record)
    return records


def _parse_json(path: Path, text: str) -> list[dict]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TextxferError(f"{path}: not valid JSON at line {exc.lineno} ({exc.msg})") from None
    except RecursionError:
        raise TextxferError(f"{path}: JSON nested too deeply to read; expected a list of flat records") from None
    if isinstance(data, dict) and all(isinstance(v, list) for v in data.values()):
        lengths = {len(v) for v in data.values()}
        if len(lengths) > 1:
            raise TextxferError(f"{path}: column lists have different lengths {sorted(lengths)}")
        data = [dict(zip(data, row)) for row in zip(*data.values())]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise TextxferError(f"{path}: expected a JSON list of records like [{{\"text\": ..., \"label\": ...}}]")
    return data


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
