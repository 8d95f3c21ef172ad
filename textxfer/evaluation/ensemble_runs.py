"""``textxfer ensemble``: combine trained run folders that share one split into one ``ensemble`` run.

The members (any kinds, another ensemble too) must have been trained on the very same split — the same
rows of the same file for train, validation and test — and share one label set in one order; anything
else is refused with the reason. The weights are chosen on the validation split only, and the ensemble is
scored on the test split by the same runner and scorer as every other run, so its folder holds the usual
model, ``split.json``, ``metrics.json`` and ``report.json``.
"""

from __future__ import annotations

from pathlib import Path

from textxfer.data.dataset import DataOptions, load_data
from textxfer.ensemble.weights import parse_weights
from textxfer.errors import TextxferError
from textxfer.ensemble.pipeline import EnsembleClassifier, EnsembleConfig, same_labels
from textxfer.registry import load
from textxfer.evaluation.runner import RunResult, describe_data, run_prepared
from textxfer.data.splits import differing_part, read_split_file

SPLITS = ("train", "validation", "test")


def same_split(runs: list[Path]) -> dict:
    """The split record the runs share; a run whose split differs in any part is refused, naming the part."""
    records = []
    for run in runs:
        if not (run / "split.json").is_file():
            raise TextxferError(f"{run}: no split.json — not a run folder of `textxfer baseline/finetune/compare/"
                                "ensemble`; pass run folders (a bare model folder has no split to check)")
        records.append(read_split_file(run / "split.json"))
    first = records[0]
    for run, record in zip(runs[1:], records[1:]):
        name = differing_part(first, record, SPLITS, ("sha256", "table", "rows"))
        if name:
            what = "other rows" if differing_part(first, record, [name], ("sha256",)) is None else "its source file differs"
            raise TextxferError(f"{run}: its {name} split differs from {runs[0]}'s ({what}); an ensemble's members "
                                f"must share one split — train them with --split {runs[0]}")
    return first


def build(runs: list[str], output: str | Path, weights: str = "auto", calibration: str = "temperature",
          data: str | None = None,
          encoding: str = "utf-8", device: str = "auto", precision: str = "auto", progress: bool = True,
          log=print) -> RunResult:
    """Load ``runs``, check they share a split and labels, choose ``weights`` on validation, score, write ``output``."""
    folders = [Path(run) for run in runs]
    if len(folders) < 2:
        raise TextxferError(f"--runs needs at least 2 run folders, got {len(folders)}")
    resolved = [folder.resolve() for folder in folders]
    if len(set(resolved)) < len(resolved):
        raise TextxferError("--runs names the same run folder twice; an ensemble of a model with itself adds nothing")
    if Path(output).resolve() in resolved:
        raise TextxferError(f"{output}: --output is one of the --runs; write the ensemble to a new folder")
    parse_weights(weights, len(folders))  # a bad --weights fails before anything is loaded
    same_split(folders)
    members = [load(folder, device, precision) for folder in folders]
    same_labels(members, [str(folder) for folder in folders])
    prepared = load_data(DataOptions(data=data, split=str(folders[0]), encoding=encoding))
    describe_data(prepared, log)
    model = EnsembleClassifier(members, EnsembleConfig(weights, calibration))
    result = run_prepared(model, prepared, output, progress, log)
    chosen = ", ".join(f"{folder} {weight:.2f}" for folder, weight in zip(folders, model.weights_))
    log(f"ensemble weights ({model.selection_['method']}): {chosen}")
    return result
