"""Predict a whole file (CSV / TSV / JSONL, or stdin) in chunks, keeping every input column and the row order.

Memory is bounded by the chunk size: rows are read, predicted and written one chunk at a time. Under
``torchrun`` / ``accelerate launch`` every process takes every N-th chunk, writes its chunks to a
shared parts folder, and rank 0 joins them in input order into the one output file.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

from textxfer.core.thresholds import chosen_labels
from textxfer.errors import TextxferError
from textxfer.data.reader import DELIMITERS, EXTENSIONS, RowReader, missing_column
from textxfer.data.tables import as_text, is_missing

FORMATS = {ext: fmt for ext, fmt in EXTENSIONS.items() if fmt != "json"}  # the formats predict streams


@dataclass
class Chunk:
    """Consecutive input rows: the raw records (lists for CSV/TSV, dicts for JSONL) and their texts (``(text, second
    text)`` pairs for a pair model)."""

    index: int
    records: list
    texts: list


def file_format(location: str, given: str | None, role: str) -> str:
    """The format named by ``given`` or by the file extension of ``location``."""
    if given:
        if given not in DELIMITERS and given != "jsonl":
            raise TextxferError(f"unknown {role} format {given!r}; use csv, tsv or jsonl")
        return given
    if location == "-":
        return "csv"
    fmt = FORMATS.get(Path(location).suffix.lower())
    if fmt is None:
        raise TextxferError(f"{location}: cannot tell the {role} format from {Path(location).suffix!r}; "
                            f"use a {'/'.join(sorted(FORMATS))} file or pass --{role}-format csv|tsv|jsonl")
    return fmt


class ChunkReader:
    """Reads ``source`` chunk by chunk through the one :class:`~textxfer.data.reader.RowReader`; ``header`` holds
    the CSV/TSV column names once opened."""

    def __init__(self, source: str, fmt: str, text_column: str, chunk_size: int, encoding: str = "utf-8",
                 pair_column: str | None = None) -> None:
        if chunk_size < 1:
            raise TextxferError(f"--chunk-size must be at least 1, got {chunk_size}")
        self.rows = RowReader(source, fmt, encoding)
        self.fmt, self.text_column, self.chunk_size = fmt, text_column, chunk_size
        self.pair_column = pair_column  # a pair model's second text
        self.name = self.rows.name
        self.empty_texts = 0

    @property
    def header(self) -> list[str] | None:
        return self.rows.header

    def __iter__(self) -> Iterator[Chunk]:
        records: list = []
        texts: list[str] = []
        index = 0
        for record, text in self._texts():
            records.append(record)
            texts.append(text)
            if len(records) == self.chunk_size:
                yield Chunk(index, records, texts)
                index, records, texts = index + 1, [], []
        if records:
            yield Chunk(index, records, texts)

    def _texts(self) -> Iterator[tuple[list | dict, str | tuple[str, str]]]:
        """Each row's record and its text, or its pair of texts (an empty, missing or invisible text counted and
        given as "")."""
        columns = [(self.text_column, "text", "--text-column")]
        if self.pair_column:
            columns.append((self.pair_column, "second text", "--text-pair-column"))
        positions = None
        for row in self.rows:
            if self.fmt in DELIMITERS:
                if positions is None:
                    positions = self._positions(columns)
                found, where = [row.values[i] for i in positions], f"{self.name}: row {row.number}"
            else:
                for column, _, flag in columns:
                    if column not in row.values:
                        raise TextxferError(f"{self.name}: line {row.line} has no field {column!r} "
                                            f"(fields: {list(row.values)}); pass {flag}")
                found, where = [row.values[c] for c, _, _ in columns], f"{self.name}: line {row.line}"
            texts = [self._text(value, where, column) for value, (column, _, _) in zip(found, columns)]
            yield row.values, (tuple(texts) if self.pair_column else texts[0])
        if self.fmt in DELIMITERS and positions is None and self.header is not None:
            self._positions(columns)  # a header-only file still names a missing column

    def _positions(self, columns) -> list[int]:
        for column, role, _ in columns:
            if column not in self.header:
                raise missing_column(self.name, column, self.header, role)
        return [self.header.index(column) for column, _, _ in columns]

    def _text(self, value, where: str, column: str) -> str:
        if is_missing(value) or value == "":
            self.empty_texts += 1
            return ""
        return as_text(value, where, column)


class ChunkWriter:
    """Formats predicted chunks as CSV/TSV (flat probability columns) or JSONL (a probabilities object). For a
    multi-label model (``thresholds``) the label column holds every label at or above its threshold, most probable
    first, joined by ``separator`` in CSV/TSV (a list in JSONL), and the score column is left out."""

    def __init__(self, fmt: str, label_values: list, input_header: list[str] | None, thresholds=None,
                 separator: str = "|", explain: bool = False) -> None:
        self.fmt, self.values = fmt, label_values
        self.thresholds, self.separator = thresholds, separator
        existing = set(input_header or [])
        names = (["labels", None] if thresholds is not None else ["label", "score"]) + [
            f"prob_{value}" for value in label_values]
        if existing & set(names + ["probabilities", "explanation"]):
            names = [name and f"predicted_{name}" for name in names]  # never overwrite an input column
        self.label_key, self.score_key = names[0], names[1]
        self.probability_keys = names[2:]
        prefix = "predicted_" if names[0].startswith("predicted_") else ""
        self.probabilities_key = f"{prefix}probabilities"
        self.explanation_key = f"{prefix}explanation" if explain else None  # each word with its contribution
        names = [name for name in names if name] + ([self.explanation_key] if explain else [])
        self.header = (input_header or []) + names if fmt in DELIMITERS else names

    def header_text(self) -> str:
        """The header line (CSV/TSV) or nothing (JSONL)."""
        return self._csv_lines([self.header]) if self.fmt in DELIMITERS else ""

    def lines(self, chunk: Chunk, probabilities, explanations=None) -> str:
        """The output text of one predicted chunk (with each row's explanation when the writer was made to
        ``explain``: in CSV/TSV a JSON list of ``[word, contribution]``, in JSONL the explanation object)."""
        why = [self._explanation(e) for e in explanations] if self.explanation_key else [None] * len(chunk.records)
        tail = (lambda w: [w]) if self.explanation_key else (lambda w: [])  # noqa: E731
        more = (lambda w: {self.explanation_key: w}) if self.explanation_key else (lambda w: {})  # noqa: E731
        if self.thresholds is not None:
            return self._multilabel_lines(chunk, probabilities, why, tail, more)
        best = probabilities.argmax(axis=1)
        if self.fmt in DELIMITERS:
            return self._csv_lines(
                record + [str(self.values[b]), _number(row[b])] + [_number(p) for p in row] + tail(w)
                for record, row, b, w in zip(chunk.records, probabilities, best, why))
        out = []
        for record, row, b, w in zip(chunk.records, probabilities, best, why):
            extra = {self.label_key: self.values[b], self.score_key: float(row[b]),
                     self.probabilities_key: {str(v): float(p) for v, p in zip(self.values, row)}, **more(w)}
            out.append(json.dumps({**record, **extra}, ensure_ascii=False) + "\n")
        return "".join(out)

    def _explanation(self, explanation):
        if self.fmt in DELIMITERS:
            return json.dumps([[w.text, round(c, 6)] for w, c in zip(explanation.words, explanation.contributions)],
                              ensure_ascii=False)
        return explanation.to_dict()

    def _multilabel_lines(self, chunk: Chunk, probabilities, why, tail, more) -> str:
        chosen = [[self.values[j] for j in ids] for ids in chosen_labels(probabilities, self.thresholds)]
        if self.fmt in DELIMITERS:
            return self._csv_lines(record + [self.separator.join(map(str, labels))] + [_number(p) for p in row] + tail(w)
                                   for record, row, labels, w in zip(chunk.records, probabilities, chosen, why))
        return "".join(json.dumps({**record, self.label_key: labels,
                                   self.probabilities_key: {str(v): float(p) for v, p in zip(self.values, row)},
                                   **more(w)}, ensure_ascii=False) + "\n"
                       for record, row, labels, w in zip(chunk.records, probabilities, chosen, why))

    def _csv_lines(self, rows) -> str:
        buffer = io.StringIO()
        csv.writer(buffer, delimiter=DELIMITERS[self.fmt], lineterminator="\n").writerows(rows)
        return buffer.getvalue()


def _number(value: float) -> str:
    return f"{float(value):.6g}"


def predict_file(model, source: str, output: str | None, text_column: str = "text", chunk_size: int = 2048,
                 input_format: str | None = None, output_format: str | None = None, encoding: str = "utf-8",
                 progress: bool = True, rank: int = 0, world_size: int = 1, barrier=None,
                 text_pair_column: str | None = None, explain: str | None = None) -> dict:
    """Predict every row of ``source`` with ``model`` and write ``output`` (``None`` or ``-``: stdout). A pair
    model reads each row's second text from ``text_pair_column`` (default: the column it was trained on); a
    multi-label model writes each row's labels at or above their thresholds. ``explain`` (a method: ``auto``,
    ``occlusion``, ``integrated-gradients``) adds an ``explanation`` column: each word's contribution to the label.

    With ``world_size`` > 1 this process handles chunks ``rank, rank + world_size, ...``; ``barrier``
    is called once every process has written its parts, and rank 0 then joins them in input order.
    Returns ``{"rows": ..., "empty_texts": ..., "output": ...}`` (rows counted by this process).
    """
    from tqdm.auto import tqdm

    fmt_in = file_format(source, input_format, "input")
    to_stdout = output in (None, "-")
    fmt_out = output_format or (fmt_in if to_stdout else file_format(output, None, "output"))
    if (fmt_in == "jsonl") != (fmt_out == "jsonl"):
        raise TextxferError(f"cannot write {fmt_out} predictions for {fmt_in} input (rows keep every input column); "
                            f"use a {'.jsonl' if fmt_in == 'jsonl' else '.csv or .tsv'} --output")
    if world_size > 1 and (to_stdout or source == "-"):
        raise TextxferError("several processes need a file for --input and for --output (not stdin/stdout)")
    values = [model.labels.value(name) for name in model.labels.names]
    pair_column = (text_pair_column or model.shape.text_pair_column) if model.shape.pair else None
    if text_pair_column and not model.shape.pair:
        raise TextxferError(f"--text-pair-column {text_pair_column}: this model reads single texts (it was not "
                            "trained on text pairs); leave the flag out")
    reader = ChunkReader(source, fmt_in, text_column, chunk_size, encoding, pair_column)
    multi = model.labels.multi_label
    writer_options = {"thresholds": model.thresholds if multi else None,
                      "separator": model.shape.label_separator or "|", "explain": explain is not None}
    target = Path(output) if not to_stdout else None
    if target is not None and target.is_dir():
        raise TextxferError(f"{target}: is a folder; pass a file name such as preds.csv or preds.jsonl")
    parts = _parts_dir(target, world_size, rank, barrier)
    handle, staging = _open_output(target, world_size)
    rows, writer, bar = 0, None, None
    try:
        for chunk in reader:
            if writer is None:  # the input's column names: the header, or the first JSONL record's keys
                bar = tqdm(unit=" texts", desc="predict", disable=not progress or rank != 0, file=sys.stderr)
                writer = ChunkWriter(fmt_out, values, reader.header or list(chunk.records[0]), **writer_options)
                if handle is not None:
                    handle.write(writer.header_text())
            if chunk.index % world_size != rank:
                continue
            text = writer.lines(chunk, model.predict_proba(chunk.texts),
                                model.explain(chunk.texts, explain) if explain is not None else None)
            if handle is not None:
                handle.write(text)
                handle.flush()
            else:
                (parts / f"{chunk.index:09d}.part").write_text(text, encoding="utf-8")
            rows += len(chunk.records)
            bar.update(len(chunk.records) * world_size)
        if writer is None and fmt_in in DELIMITERS and handle is not None:  # header only: keep a valid file
            handle.write(ChunkWriter(fmt_out, values, reader.header, **writer_options).header_text())
    except BaseException:
        if bar is not None:
            bar.close()
        if staging is not None:
            handle.close()
            staging.unlink(missing_ok=True)
        raise
    if bar is not None:
        bar.close()
    if world_size > 1:
        barrier()
        if rank == 0:
            _join_parts(parts, target, ChunkWriter(fmt_out, values, reader.header, **writer_options).header_text())
        barrier()
    elif staging is not None:
        handle.close()
        os.replace(staging, target)
    elif handle is not None:
        handle.flush()
    return {"rows": rows, "empty_texts": reader.empty_texts, "output": str(target) if target else "-"}


def _parts_dir(target: Path | None, world_size: int, rank: int, barrier) -> Path | None:
    """The shared folder where processes leave their chunks (a fixed name all ranks agree on).

    Rank 0 empties it first, so parts left by an earlier, killed run are never joined.
    """
    if world_size == 1:
        return None
    parts = target.parent / f".{target.name}.parts"
    if rank == 0:
        shutil.rmtree(parts, ignore_errors=True)
        parts.mkdir(parents=True)
    barrier()
    return parts


def _open_output(target: Path | None, world_size: int) -> tuple[IO[str] | None, Path | None]:
    """Stdout, a temporary file beside ``target`` (renamed on success), or nothing (parts mode)."""
    if world_size > 1:
        return None, None
    if target is None:
        return sys.stdout, None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    except OSError as exc:
        raise TextxferError(f"{target.parent}: cannot write the output here ({exc.strerror}); "
                            "choose another --output") from None
    return os.fdopen(fd, "w", encoding="utf-8", newline=""), Path(name)


def _join_parts(parts: Path, target: Path, header: str) -> None:
    """Concatenate the parts in chunk order into ``target`` atomically, then remove them."""
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
        out.write(header)
        for part in sorted(parts.glob("*.part")):
            with open(part, encoding="utf-8", newline="") as handle:
                shutil.copyfileobj(handle, out)
    os.replace(name, target)
    shutil.rmtree(parts, ignore_errors=True)


class ProcessGroup:
    """Rank, world size and a barrier for ``torchrun`` / ``accelerate launch`` (one process: no-ops).

    A gloo group is enough here: the processes only need to wait for each other, never to exchange
    tensors, so it works the same on CPU and GPU machines.
    """

    def __init__(self) -> None:
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self._owned = False
        if self.world_size > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group("gloo")
                self._owned = True

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self._owned:
            import torch.distributed as dist

            dist.destroy_process_group()
