"""``--unlabelled FILE``: texts without labels for self-training, read and checked against the split.

A ``.txt`` file holds one text per line; a table (CSV, TSV, JSONL, JSON, Parquet) holds them in the text
column (``--text-column``, as the labelled data). Empty lines and rows are skipped; repeated texts are kept
once. A text that is also a validation or test text is refused — pseudo-labelled, it would put the
evaluation texts into training (the leakage the split itself removes); a text that is also a training text
adds nothing and is left out of the fit that trains on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from textxfer.data.tables import as_text, file_sha256, is_missing, read_source
from textxfer.errors import TextxferError


@dataclass
class UnlabelledTexts:
    """Unlabelled texts with their row (line) numbers in ``origin``, and what reading them found."""

    texts: list[str]
    rows: list[int]
    origin: str
    fingerprint: str
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)


def read_unlabelled(location: str, text_column: str = "text", encoding: str = "utf-8") -> UnlabelledTexts:
    """The texts of ``location`` (see the module docstring); a file with none is refused."""
    path = Path(location)
    if not path.is_file():
        raise TextxferError(f"--unlabelled {location}: no such file")
    texts, rows, empty, repeated, seen = [], [], 0, 0, set()
    if path.suffix.lower() == ".txt":
        try:
            lines = path.read_text(encoding=encoding).splitlines()
        except UnicodeDecodeError as exc:
            raise TextxferError(f"{location}: not valid {encoding} at byte offset {exc.start}; pass --encoding "
                                "(e.g. gbk) or save it as UTF-8") from None
        values = list(enumerate(lines, start=1))
    else:
        tables = read_source(str(path), encoding)
        table = tables["all"]
        values = [(index + 1, value) for index, value in enumerate(table.column(text_column, "text"))]
    for row, value in values:
        if is_missing(value):
            empty += 1
            continue
        text = as_text(value, f"{location}: row {row}", text_column).strip()
        if text in seen:
            repeated += 1
            continue
        seen.add(text)
        texts.append(text)
        rows.append(row)
    if not texts:
        raise TextxferError(f"--unlabelled {location}: no texts found (one per line in a .txt file, or in column "
                            f"{text_column!r} of a table)")
    notes = [f"{location}: {what}" for what in (
        f"{empty:,} empty line(s)/row(s) skipped" if empty else "", f"{repeated:,} repeated text(s) kept once" if repeated else "")
        if what]
    return UnlabelledTexts(texts, rows, str(location), file_sha256(path), notes)


def check_against_split(unlabelled: UnlabelledTexts, splits: dict) -> UnlabelledTexts:
    """``unlabelled`` checked against ``splits`` (name → dataset): a validation or test text among them is refused in
    one line naming both rows. Training texts are left in: a study's cells train on subsets of the training
    split, so :func:`without` drops each fit's own training texts."""
    for name in ("validation", "test"):
        split = splits[name]
        where = {text.strip(): row for text, row in zip(split.texts, split.rows)}
        overlap = [(text, row) for text, row in zip(unlabelled.texts, unlabelled.rows) if text.strip() in where]
        if overlap:
            text, row = overlap[0]
            shown = text if len(text) <= 40 else text[:37] + "..."
            raise TextxferError(
                f"{unlabelled.origin}: row {row}'s text {shown!r} is also {name} row {where[text.strip()]} of "
                f"{split.origin} ({len(overlap):,} {name} text(s) in all); remove the validation and test texts from "
                "the unlabelled file — pseudo-labelled, they would leak into training")
    return unlabelled


def without(unlabelled: UnlabelledTexts, training_texts: list[str]) -> tuple[list[str], int]:
    """``(texts, dropped)``: the unlabelled texts that are not training texts (those are labelled already)."""
    training = {text.strip() for text in training_texts}
    kept = [text for text in unlabelled.texts if text.strip() not in training]
    return kept, len(unlabelled) - len(kept)
