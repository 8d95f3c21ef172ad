"""One streaming reader for CSV, TSV and JSON-lines text (a file or stdin), with one set of messages.

(A JSON document — a list of records — is read through it too, whole, since JSON cannot be streamed.)

Training (``tables.py``) and prediction (``predict_files.py``) both read rows through :class:`RowReader`,
so a file gets the same answer from ``finetune``, ``baseline`` and ``predict``: the same decoding (a
UTF-8 byte-order mark dropped, a UTF-16 one honoured, a compressed file or workbook named from its first
bytes, the file offset of an undecodable byte) and the same one-line errors for an empty file, a blank
or duplicated header, a ragged row, malformed CSV and a JSON line that is not an object. Rows are read one
at a time, so memory stays bounded for a consumer that streams. Nothing here ever writes to the source.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

from textxfer.errors import TextxferError

DELIMITERS = {"csv": ",", "tsv": "\t"}
FORMATS = ("csv", "tsv", "jsonl", "json")
# File extension → the format this reader parses it as (predict streams the rows of all but "json").
EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json"}
# csv's default field limit (128 KiB) is smaller than some real reviews and documents.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

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


@dataclass
class Row:
    """One data row: its 1-based number among the data rows (blank lines skipped), the line it starts on
    (0 inside a JSON document), and its values (a list in header order for CSV/TSV, a dict for JSON)."""

    number: int
    line: int
    values: list | dict


def binary_kind(path: Path | str, head: bytes) -> None:
    """Refuse, in one line, a file whose first bytes show it is not text (compressed, a workbook, Parquet)."""
    for magic, what, fix in MAGIC:
        if head.startswith(magic):
            raise TextxferError(f"{path}: this is {what}, not a text file ({Path(str(path)).suffix or 'no extension'} "
                                f"by name); {fix}")


def delimiter_hint(header: list[str]) -> str:
    """A hint when a one-column header looks split by another delimiter (``text;label``)."""
    if len(header) == 1:
        for delimiter in (";", "\t", "|", ","):
            if delimiter in str(header[0]):
                return (f" The header {header[0]!r} looks delimited by {delimiter!r}: save the file comma-separated "
                        "as .csv (or tab-separated as .tsv)")
    return ""


def missing_column(source: str, name: str, columns: list[str], role: str) -> TextxferError:
    """The one-line error for a ``--{role}-column`` that names no column, with the likely fix."""
    near = [column for column in columns if str(column).strip().lower() == name.strip().lower()]
    hint = (f" Column {near[0]!r} differs from {name!r} only in case or surrounding spaces: pass --{role}-column "
            f"{near[0]!r} or fix the header." if near else delimiter_hint(columns))
    return TextxferError(f"{source}: no column {name!r}; columns are {columns}. Pass --{role}-column with one of "
                         f"them.{hint}")


def _is_utf8(encoding: str) -> bool:
    return encoding.lower().replace("_", "-") in ("utf-8", "utf8", "utf-8-sig")


class RowReader:
    """The rows of ``source`` (a path, or ``-`` for stdin) in format ``fmt`` (``csv``, ``tsv`` or ``jsonl``).

    Iterating yields :class:`Row` objects; for CSV/TSV ``header`` holds the column names once the first row
    (or the end of a header-only file) has been reached. Every problem is a :class:`TextxferError` whose one
    line names the source, the row or line, and what to do.
    """

    def __init__(self, source: str, fmt: str, encoding: str = "utf-8") -> None:
        if fmt not in FORMATS:
            raise TextxferError(f"unknown text format {fmt!r}; use csv, tsv, jsonl or json")
        self.source, self.fmt, self.encoding = source, fmt, encoding
        self.name = "stdin" if source == "-" else source
        self.header: list[str] | None = None
        self.used_encoding = encoding  # utf-16 when a UTF-16 byte-order mark overrides a UTF-8 --encoding

    def __iter__(self) -> Iterator[Row]:
        with self._open() as handle:
            try:
                parse = self._delimited if self.fmt in DELIMITERS else self._jsonl if self.fmt == "jsonl" else self._json
                yield from parse(handle)
            except UnicodeError as exc:  # UnicodeDecodeError, or UTF-16 read in a stream without a byte-order mark
                raise self._decode_error(exc) from None

    def _open(self) -> IO[str]:
        encoding = "utf-8-sig" if _is_utf8(self.encoding) else self.encoding
        # JSON strings may hold a raw \u2028 or \x85 and csv handles \r itself: end lines at \n only for JSONL,
        # and let csv see every line end untranslated.
        newline = "\n" if self.fmt == "jsonl" else ""
        try:
            if self.source == "-":
                return io.TextIOWrapper(sys.stdin.buffer, encoding=encoding, newline=newline)
            with open(self.source, "rb") as raw:
                head = raw.read(8)
            binary_kind(self.source, head)
            bom = head[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
            if _is_utf8(self.encoding) and bom:
                encoding = self.used_encoding = "utf-16"  # never valid UTF-8: a UTF-16 file (Excel's "Unicode text")
            elif self.encoding.lower().replace("_", "-") in ("utf-16", "utf16") and not bom:
                encoding = "utf-16-le"  # no byte-order mark: little-endian, as bytes.decode("utf-16") reads it on x86 and ARM
            return open(self.source, encoding=encoding, newline=newline)
        except FileNotFoundError:
            raise TextxferError(f"{self.source}: no such file") from None
        except IsADirectoryError:
            raise TextxferError(f"{self.source}: is a folder; pass a .csv, .tsv or .jsonl file") from None
        except LookupError:
            raise TextxferError(f"unknown --encoding {self.encoding!r}; try utf-8, gbk, gb18030 or utf-16") from None

    def _decode_error(self, exc: UnicodeError) -> TextxferError:
        if not isinstance(exc, UnicodeDecodeError):
            return TextxferError(f"{self.name}: not valid {self.used_encoding} ({exc}); pass --encoding with the file's "
                                 "real encoding, e.g. --encoding utf-16-le for UTF-16 without a byte-order mark")
        offset = _bad_byte(self.source, self.used_encoding) if self.source != "-" else None
        where = f"at byte offset {offset[0]} (byte 0x{offset[1]:02x})" if offset else \
            f"at byte {exc.start} of a read block ({exc.reason})"
        return TextxferError(f"{self.name}: not valid {self.used_encoding} {where}; pass --encoding with the file's real "
                             "encoding, e.g. --encoding gbk or --encoding utf-16")

    def _delimited(self, handle: IO[str]) -> Iterator[Row]:
        delimiter = DELIMITERS[self.fmt]
        reader = csv.reader(handle, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            raise TextxferError(f"{self.name}: the file is empty; expected a header row such as 'text,label'") from None
        except csv.Error as exc:
            raise TextxferError(f"{self.name}: line 1: malformed CSV ({exc})") from None
        if not any(field.strip() for field in header):
            raise TextxferError(f"{self.name}: the first line is blank; expected a header row such as 'text,label'")
        duplicated = sorted({name for name in header if header.count(name) > 1})
        if duplicated:
            raise TextxferError(f"{self.name}: duplicate column names {duplicated} in the header; rename them")
        self.header = header
        number = 0
        line = reader.line_num + 1
        try:
            for values in reader:
                if not values:  # csv yields [] for a blank line
                    line = reader.line_num + 1
                    continue
                number += 1
                if len(values) != len(header):
                    hint = delimiter_hint(header)  # e.g. a TSV named .csv whose texts hold commas
                    raise TextxferError(
                        f"{self.name}: row {number} (line {line}) has {len(values)} fields but the header has "
                        f"{len(header)}" + (f".{hint}" if hint else
                                            f"; quote fields that contain the delimiter {delimiter!r}"))
                yield Row(number, line, values)
                line = reader.line_num + 1
        except csv.Error as exc:
            raise TextxferError(f"{self.name}: line {reader.line_num}: malformed CSV ({exc})") from None

    def _jsonl(self, handle: IO[str]) -> Iterator[Row]:
        number = 0
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                raise TextxferError(f"{self.name}: line {line} is not valid JSON ({exc.msg}); fix or remove it") from None
            except RecursionError:
                raise TextxferError(f"{self.name}: line {line}: JSON nested too deeply to read; fix or remove it") from None
            if not isinstance(record, dict):
                raise TextxferError(f"{self.name}: line {line} is a JSON {type(record).__name__}, expected an object")
            number += 1
            yield Row(number, line, record)

    def _json(self, handle: IO[str]) -> Iterator[Row]:
        """A JSON document: a list of records, or an object of equally long column lists."""
        try:
            data = json.loads(handle.read())
        except json.JSONDecodeError as exc:
            raise TextxferError(f"{self.name}: not valid JSON at line {exc.lineno} ({exc.msg})") from None
        except RecursionError:
            raise TextxferError(f"{self.name}: JSON nested too deeply to read; expected a list of flat records") from None
        if isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
            lengths = {len(v) for v in data.values()}
            if len(lengths) > 1:
                raise TextxferError(f"{self.name}: column lists have different lengths {sorted(lengths)}")
            data = [dict(zip(data, values)) for values in zip(*data.values())]
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise TextxferError(f"{self.name}: expected a JSON list of records like [{{\"text\": ..., \"label\": ...}}]")
        for number, record in enumerate(data, start=1):
            yield Row(number, 0, record)


def _bad_byte(path: str, encoding: str) -> tuple[int, int] | None:
    """The file offset and value of the first byte that does not decode as ``encoding`` (read again in blocks)."""
    try:
        decoder = codecs.getincrementaldecoder(encoding)()
    except LookupError:
        return None
    offset = 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            pending = len(decoder.getstate()[0])  # undecoded bytes kept from the previous block
            try:
                decoder.decode(block)
            except UnicodeDecodeError as exc:
                return offset - pending + exc.start, exc.object[exc.start]  # exc.object: kept bytes + block
            except UnicodeError:
                return None
            offset += len(block)
    return None
