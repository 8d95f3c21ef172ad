"""Both pipelines on one saved split, scored by the one scorer, written up as one report.

Each model lives in its own run folder under the comparison folder (``baseline/``, ``finetune/``),
written atomically by the runner; the comparison files are written last. Model folders passed in are
loaded instead of trained, after checking they were trained on this very split.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from textxfer.transformer import loss_curve
from textxfer.data.dataset import DataOptions, PreparedData, load_data
from textxfer.errors import TextxferError
from textxfer.evaluation import report_calibration, report_explain
from textxfer.evaluation.guard import check_model, check_multilabel, warning_line
from textxfer.transformer.loss_curve import TRAINER_LOG
from textxfer.core.manifest import read_manifest
from textxfer.core.metrics import score_probabilities
from textxfer.core.thresholds import decide
from textxfer.evaluation.runner import finished_run
from textxfer.core.runs import RUN_RECORDS
from textxfer.data.splits import differing_part, read_split_file, write_split_file

MODEL_SIZE_SKIPS = (*RUN_RECORDS, TRAINER_LOG)  # not counted in a model's size on disk
DESCRIPTIONS = {"baseline": "word2vec + RandomForest", "finetune": "fine-tuned transformer",
                "onnx": "fine-tuned transformer (ONNX)", "ensemble": "ensemble",
                "static": "static token vectors + linear head"}
WARM_UP_TEXTS = 8


def compare(options: DataOptions, output: str | Path, configs: dict[str, object] | None = None,
            models: dict[str, str | Path] | None = None, progress: bool = True, log=print, device: str = "auto",
            ensemble: bool = True) -> dict:
    """Train (or load) the baseline and the fine-tuned model on one split and write the comparison.

    ``configs`` maps ``"baseline"`` / ``"finetune"`` to pipeline configs used for training;
    ``models`` maps the same names to existing model folders to load instead. Returns the comparison
    dict that is also written to ``comparison.json``. ``device``: where a loaded fine-tuned model predicts
    (``textxfer.transformer.devices``; a model trained here scores where it trained). ``ensemble``: also score the two
    models' validation-weighted ensemble (``textxfer.evaluation.compare_ensemble``) as a third column.
    """
    from textxfer.evaluation.report import comparison_table, mcnemar_pairs, write_disagreements, write_report

    configs, models = dict(configs or {}), {k: Path(v) for k, v in (models or {}).items() if v}
    output = Path(output)
    if options.data is None and options.train is None and options.split is None and models:
        options.split = str(next(iter(models.values())))  # score on the split the given model was trained on
    data = load_data(options)
    from textxfer.evaluation.runner import describe_data

    describe_data(data, log)
    if not len(data.test):
        raise TextxferError("the test split is empty, so there is nothing to compare on; add data or pass --test")
    fingerprints = {name: entry["sha256"] for name, entry in data.split_record["splits"].items()}
    multi = data.labels.multi_label
    references = data.labels.targets(data.test.labels)
    entries, correct, members = {}, {}, {}  # correct: per-text correctness, or a multi-label model's 0/1 predictions
    for name in ("baseline", "finetune"):
        validation = None  # the validation probabilities, when training computed them
        if name in models:
            folder = models[name]
            model, train_seconds = _load_checked(folder, data, device), _recorded_fit_seconds(folder)
        elif finished_run(output / name, name, configs.get(name), data):
            folder = output / name  # left by an earlier, interrupted compare with the same settings and split
            log(f"{name}: reusing the finished run in {folder}")
            model, train_seconds = _load_checked(folder, data, device), _recorded_fit_seconds(folder)
        else:
            folder = output / name
            model, train_seconds, validation = _train(name, configs, options.seed, data, folder, progress, log)
        log(f"{name}: scoring {len(data.test)} test texts")
        raw, probabilities, per_second = _timed_predict(model, data.test.inputs)
        predicted = decide(probabilities, model.thresholds) if multi else probabilities.argmax(axis=1)
        entries[name] = {
            "description": _description(model), "kind": model.kind, "folder": str(folder),
            "metrics": score_probabilities(data.labels, data.test.labels, probabilities, model.thresholds),
            "train_seconds": train_seconds,
            "predict_texts_per_second": per_second, "size_bytes": model_size(folder),
            "predictions": predicted, "probabilities": probabilities,
            **({"thresholds": [round(float(t), 6) for t in model.thresholds]} if multi else {}),
            "calibration": report_calibration.entry(model, raw, probabilities, references),
        }
        entries[name]["model_check"] = _model_check(folder, entries[name]["metrics"], data)
        curve = loss_curve.of_run(folder)
        if curve and curve["evaluations"]:
            entries[name]["loss_curve"] = curve
        correct[name] = predicted if multi else predicted == references
        members[name] = {"model": model, "entry": entries[name], "test": probabilities, "validation": validation}
    if ensemble:
        from textxfer.evaluation.compare_ensemble import NAME, ensemble_entry

        log(f"{NAME}: choosing the weights of baseline + finetune on the {len(data.validation)} validation texts")
        entries[NAME] = ensemble_entry(members, data, output)
        correct[NAME] = entries[NAME]["predictions"] if multi else entries[NAME]["predictions"] == references
    output.mkdir(parents=True, exist_ok=True)
    write_split_file(output / "split.json", data.split_record)
    names = data.labels.names
    shown = _shown_predictions(entries, data)
    disagreement_rows = write_disagreements(
        output / "disagreements.csv", data.test.texts, shown["truth"], shown["labels"], shown["scores"],
        data.test.rows, data.test.pairs)
    log(f"explaining where {' and '.join(members)} disagree (disagreements.md)")
    explained = report_explain.write(output / report_explain.DISAGREEMENTS_MD,
                                     {name: m["model"] for name, m in members.items()}, data.test, shown["truth"],
                                     {name: entries[name]["predictions"] for name in members})
    if multi:
        from textxfer.evaluation.report_multilabel import bootstrap_pairs

        paired = {"multi_label": True, **bootstrap_pairs(correct, references)}
    else:
        paired = mcnemar_pairs(correct)
    comparison = {
        "labels": list(names), "test_rows": len(data.test),
        "split": {"file": "split.json", "test_sha256": fingerprints.get("test"), "method": data.split_record["method"]},
        "models": {n: {k: v for k, v in e.items() if k not in ("predictions", "probabilities")} for n, e in entries.items()},
        **paired,
        "disagreements": {"file": "disagreements.csv", "rows": disagreement_rows, "explained": explained},
        "settings": {n: _settings(configs.get(n), models.get(n)) for n in members},
    }
    comparison["files"] = {"json": "comparison.json", **write_report(comparison, output),
                           "disagreements": "disagreements.csv", "explained_disagreements": explained["file"],
                           "split": "split.json"}
    _write_json(output / "comparison.json", comparison)
    log(comparison_table(comparison))
    for name, entry in entries.items():
        warning = warning_line(entry["model_check"], name, entry["kind"])
        if warning:
            log(warning)
    return comparison


def _model_check(folder: Path, test_metrics: dict, data: PreparedData) -> dict:
    """The run's recorded validation check (report.json), else the same check on the test scores."""
    try:
        recorded = json.loads((folder / "report.json").read_text(encoding="utf-8")).get("model_check")
    except (OSError, ValueError, AttributeError):
        recorded = None
    if isinstance(recorded, dict) and isinstance(recorded.get("degenerate"), bool):
        return recorded
    if data.labels.multi_label:
        return check_multilabel(test_metrics, split="test")
    return check_model(test_metrics, data.train.labels, data.labels, split="test")


def _shown_predictions(entries: dict, data: PreparedData) -> dict:
    """What ``disagreements.csv`` shows: the true label, and each model's label and its probability; for
    multi-label rows, the label sets joined by "|" in label order and the probabilities of those labels."""
    names = data.labels.names
    if not data.labels.multi_label:
        return {"truth": data.test.labels,
                "labels": {n: [names[i] for i in e["predictions"]] for n, e in entries.items()},
                "scores": {n: [float(p[i]) for p, i in zip(e["probabilities"], e["predictions"])]
                           for n, e in entries.items()}}
    chosen = {n: [row.nonzero()[0] for row in e["predictions"]] for n, e in entries.items()}
    return {"truth": ["|".join(names[j] for j in row.nonzero()[0]) for row in data.labels.targets(data.test.labels)],
            "labels": {n: ["|".join(names[j] for j in ids) for ids in rows] for n, rows in chosen.items()},
            "scores": {n: ["|".join(f"{p[j]:.4f}" for j in ids) for p, ids in zip(entries[n]["probabilities"], rows)]
                       for n, rows in chosen.items()}}


def _train(name: str, configs: dict, seed: int, data: PreparedData, folder: Path, progress: bool, log):
    """Fit one pipeline with the shared runner into ``folder``; returns (model, fit seconds, validation
    probabilities or None).

    A missing config in ``configs`` is filled with the pipeline's defaults (and ``seed``).
    """
    from textxfer.evaluation.runner import run_prepared

    if name == "baseline":
        from textxfer.baseline.pipeline import BaselineClassifier, BaselineConfig

        config = configs.setdefault(name, BaselineConfig(seed=seed))
        model = BaselineClassifier(config)
    else:
        from textxfer.transformer.pipeline import FinetuneClassifier, FinetuneConfig, remove_checkpoints

        config = configs.setdefault(name, FinetuneConfig(seed=seed))
        if config.checkpoint_dir is None:
            config.checkpoint_dir = str(folder.parent / f".{folder.name}.checkpoints")
        model = FinetuneClassifier(config)
    log(f"{name}: training ({DESCRIPTIONS[name]})")
    result = run_prepared(model, data, folder, progress=progress, log=lambda *_: None)
    if name == "finetune":
        remove_checkpoints(model.config.checkpoint_dir)
    return result.model, result.report["timing"]["fit_seconds"], result.probabilities.get("validation")


def _load_checked(folder: Path, data: PreparedData, device: str = "auto"):
    """Load a given model folder after checking its labels and that its test split is this one."""
    from textxfer.registry import load

    read_manifest(folder)
    if not (folder / "split.json").is_file():
        raise TextxferError(f"{folder}: no split.json beside the model, so its training rows are unknown; "
                            "compare only run folders written by textxfer (or retrain through compare)")
    if differing_part(read_split_file(folder / "split.json"), data.split_record, ("train", "test")):
        raise TextxferError(f"{folder}: this model was trained on a different split than the one being compared; "
                            f"pass --split {folder}/split.json (and the same data) so both are scored on the same rows")
    model = load(folder, device=device)
    model.shape.refuse_other(data.train.shape, f"{folder}", "pass a model trained on data of this shape")
    if list(model.labels.names) != list(data.labels.names):
        raise TextxferError(f"{folder}: labels {list(model.labels.names)} differ from the data's {list(data.labels.names)}")
    return model


def _description(model) -> str:
    """A short human name: the pipeline, and the base encoder of a fine-tuned model."""
    base = model.base_model
    return f"{DESCRIPTIONS.get(model.kind, model.kind)}: {base}" if base else DESCRIPTIONS.get(model.kind, model.kind)


def _recorded_fit_seconds(folder: Path) -> float | None:
    """The training time saved in a run folder's report.json, if there is one."""
    try:
        report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
        return float(report["timing"]["fit_seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _timed_predict(model, texts: list[str]) -> tuple[np.ndarray, np.ndarray, float]:
    """Probabilities for ``texts`` before and after calibration, and the texts/s of predicting them (both steps,
    after a small warm-up call)."""
    model.predict_proba(texts[:WARM_UP_TEXTS])
    started = time.perf_counter()
    raw = model.raw_proba(texts)
    probabilities = model.calibrated(raw)
    elapsed = time.perf_counter() - started
    return raw, probabilities, round(len(texts) / elapsed, 1) if elapsed > 0 else float("inf")


def model_size(folder: Path) -> int:
    """Bytes on disk of a model folder, not counting the run's records (split, metrics, reports)."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file() and p.name not in MODEL_SIZE_SKIPS)


def _settings(config, folder: Path | None) -> dict:
    if folder is not None:
        return {"loaded_from": str(folder), **read_manifest(folder).get("config", {})}
    return asdict(config) if config is not None else {}


def _write_json(path: Path, value: dict) -> None:
    """Write JSON via a temporary file and a rename, so a reader never sees half a file."""
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(json.dumps(value, indent=1, ensure_ascii=False, default=_plain), encoding="utf-8")
    staging.replace(path)


def _plain(value):
    """numpy scalars → Python numbers for JSON."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
