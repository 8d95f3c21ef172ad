"""The audit's files: ``audit.csv`` (one line per suspect row, most suspect first), ``audit.md`` (counts per reason
and the top rows), ``audit.json`` (the summary), and the ``--fix-file`` copy of the data with a ``suspect`` column."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

from textxfer.errors import TextxferError

CSV_COLUMNS = ("split", "row", "text", "second_text", "given_label", "suggested_label", "score", "reason", "detail")
TOP = 50
REASONS = {  # reason → what it means, in audit.md
    "label-issue": "the out-of-fold probabilities contradict the given label (confident learning, cleanlab)",
    "duplicate-conflict": "the same or nearly the same text appears under another label",
    "empty": "no letter or digit: nothing to read",
    "overlong": "longer than the model reads",
    "other-script": "written in another script than the rest",
    "label-case": "a label name that differs from another only in case",
    "label-spaces": "a label cell with spaces around it (read without them)",
    "repeated-header": "a row that repeats the header",
    "thin-class": "a class with only one or two texts",
}


def write_csv(path: Path, entries: list[dict], pairs: bool) -> None:
    """``audit.csv``: one line per suspect row (its reasons joined by "; "), in the order given."""
    columns = [c for c in CSV_COLUMNS if pairs or c != "second_text"]
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for entry in entries:
            writer.writerow({**entry, "score": f"{entry['score']:.4f}", "suggested_label": entry["suggested"] or "",
                             "given_label": entry["given"], "reason": "; ".join(entry["reasons"]),
                             "detail": "; ".join(entry["details"])})


def _cell(text: str, width: int = 60) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= width else text[:width - 1] + "…"


def markdown(summary: dict, entries: list[dict]) -> str:
    """``audit.md``: what was audited and how, counts per reason, the label findings, then the top rows."""
    auditor = summary["auditor"]
    out = ["# Label audit", "", f"{summary['audited']:,} texts audited ({summary['splits']}); the test split's "
           f"{summary['test_rows']:,} rows are left alone, so cleaning never tunes the data to a model's view of the "
           "test set.", "",
           f"Auditor: {auditor['description']}; out-of-fold accuracy {auditor['out_of_fold_accuracy']:.4f} over "
           f"{auditor['folds']} folds (every text scored by a model that never saw its label)" + _per_view(auditor) + "."
           if "out_of_fold_accuracy" in auditor else f"Auditor: {auditor['description']} ({auditor['folds']} folds).",
           "", f"**{summary['suspect_rows']:,} suspect rows** ({summary['suspect_share']:.1%}); cleanlab flags "
           f"{summary['counts'].get('label-issue', 0):,} of them as label errors.", "",
           "| reason | rows | what it means |", "|---|---:|---|"]
    out += [f"| {reason} | {n:,} | {REASONS.get(reason, '')} |" for reason, n in summary["counts"].items()]
    if summary.get("label_findings"):
        out += ["", "## Label problems", ""] + [f"- {line}" for line in summary["label_findings"]]
    out += ["", f"## The {min(TOP, len(entries))} most suspect rows", "",
            "Most suspect first: rows whose label the out-of-fold model contradicts, by the probability it gives the "
            "given label (lowest first), then the rest. `score`: that probability (multi-label: cleanlab's label "
            "quality); all rows are in `audit.csv`.", "",
            "| split | row | text | given | suggested | score | reason |", "|---|---:|---|---|---|---:|---|"]
    out += [f"| {e['split']} | {e['row']} | {_cell(e['text'])} | {_cell(e['given'], 24)} | "
            f"{_cell(e['suggested'] or '', 24)} | {e['score']:.3f} | {', '.join(e['reasons'])} |" for e in entries[:TOP]]
    return "\n".join(out) + "\n"


def _per_view(auditor: dict) -> str:
    views = auditor.get("out_of_fold_accuracy_per_view") or {}
    if len(views) < 2:
        return ""
    return "; each view alone: " + ", ".join(f"{name} {accuracy:.4f}" for name, accuracy in views.items())


def summary_line(summary: dict, folder: Path) -> str:
    """The one line printed at the end."""
    counts = ", ".join(f"{n:,} {reason}" for reason, n in summary["counts"].items()) or "nothing flagged"
    return (f"audit: {summary['suspect_rows']:,} of {summary['audited']:,} texts suspect ({counts}); "
            f"most suspect first in {folder / 'audit.csv'}, summary in {folder / 'audit.md'}")


def write_fix_file(table, source: Path, target: Path, suspects: dict[int, str]) -> None:
    """A copy of the data file ``source`` (read as ``table``) with a ``suspect`` column: the reasons of each audited
    suspect row (by data row number), empty elsewhere. CSV, TSV or JSONL by ``target``'s suffix; the input is never
    written."""
    if target.resolve() == source.resolve():
        raise TextxferError(f"--fix-file {target}: that is the data file itself; the input is never modified — "
                            "choose another path")
    column = "suspect" if "suspect" not in table.columns else "audit_suspect"
    names = list(table.columns)
    suffix = target.suffix.lower()
    staging = target.with_name(f".{target.name}.tmp")
    try:
        with open(staging, "w", encoding="utf-8", newline="") as handle:
            if suffix in (".jsonl", ".json"):
                for index in range(len(table)):
                    record = {name: table.columns[name][index] for name in names}
                    handle.write(json.dumps({**record, column: suspects.get(index + 1, "")}, ensure_ascii=False,
                                            default=str) + "\n")
            elif suffix in (".csv", ".tsv", ".txt"):
                writer = csv.writer(handle, delimiter="\t" if suffix == ".tsv" else ",", lineterminator="\n")
                writer.writerow(names + [column])
                for index in range(len(table)):
                    writer.writerow([_plain(table.columns[name][index]) for name in names]
                                    + [suspects.get(index + 1, "")])
            else:
                raise TextxferError(f"--fix-file {target}: unknown file type {target.suffix!r}; use .csv, .tsv or .jsonl")
        staging.replace(target)
    except OSError as exc:
        raise TextxferError(f"--fix-file {target}: cannot write it ({exc})") from None
    finally:
        staging.unlink(missing_ok=True)


def _plain(value) -> str:
    return "" if value is None else value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def counts_of(entries: list[dict]) -> dict[str, int]:
    """Rows per reason, most common first."""
    return dict(Counter(reason for entry in entries for reason in entry["reasons"]).most_common())
