"""Train one classifier on prepared data, score it with the shared scorer, and write the run folder."""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from textxfer.data.dataset import DataOptions, PreparedData, load_data
from textxfer.errors import TextxferError
from textxfer.evaluation import report_calibration, self_training
from textxfer.evaluation.guard import check_model, check_multilabel, warning_line
from textxfer.core.manifest import read_manifest
from textxfer.core.metrics import format_table, score_probabilities
from textxfer.core.thresholds import chosen_labels
from textxfer.core.runs import PREDICTIONS, atomic_output_dir, check_writable
from textxfer.data.splits import differing_part, read_split_file, write_split_file

EVALUATION_SPLITS = ("validation", "test")


@dataclass
class RunResult:
    """What a run produced: its folder, metrics per split, and the report written beside them."""

    output: Path
    metrics: dict[str, dict]
    report: dict
    predictions: dict[str, list[int]] = field(default_factory=dict)
    probabilities: dict = field(default_factory=dict)  # split → (rows × labels) array; kept in memory, not written
    model: object = None  # the fitted classifier written (with --unlabelled: the one validation kept)


def evaluate_classifier(classifier, data: PreparedData, known: dict | None = None) -> tuple[dict[str, dict], dict, dict]:
    """Shared-scorer metrics of a fitted classifier on the non-empty evaluation splits, its (calibrated)
    probabilities per split (rows in the split's order, columns in label order), and the calibration figures per
    split before and after its temperature (:func:`report_calibration.before_after`); ``known``: probabilities before
    calibration (``raw_proba``) already computed."""
    results, probabilities, calibration = {}, {}, {}
    for name in EVALUATION_SPLITS:
        dataset = getattr(data, name)
        if len(dataset):
            raw = (known or {}).get(name)
            if raw is None:
                raw = classifier.raw_proba(dataset.inputs)
            probabilities[name] = classifier.calibrated(raw)
            results[name] = score_probabilities(data.labels, dataset.labels, probabilities[name], classifier.thresholds)
            calibration[name] = report_calibration.before_after(raw, probabilities[name],
                                                               data.labels.targets(dataset.labels))
    return results, probabilities, calibration


def calibration_record(classifier, splits: dict) -> dict:
    """``report.json``'s ``calibration``: the model's method and temperature (or why it has none), and per
    evaluation split the figures before and after."""
    return {**report_calibration.describe(classifier), "splits": splits}


def calibration_line(record: dict) -> str:
    """One line for the log: the temperature and the test split's (else validation's) ECE and log loss before and
    after — or that the probabilities are the model's own, and why."""
    if record["method"] == "none":
        return f"calibration: none ({record.get('why', 'not fitted')}); the probabilities are the model's own"
    if record.get("why"):
        return f"calibration: temperature 1: {record['why']}"
    name = "test" if "test" in record["splits"] else next(iter(record["splits"]), None)
    line = f"calibration: temperature {record['temperature']:.3g} fitted on validation"
    if name is None:
        return line
    before, after = record["splits"][name]["before"], record["splits"][name]["after"]
    return (f"{line}; {name} ECE {before['ece']:.4f} → {after['ece']:.4f}, log loss {before['log_loss']:.4f} → "
            f"{after['log_loss']:.4f} (report.json: calibration)")


def predicted_ids(classifier, probabilities) -> list:
    """Per row the predicted class id, or for a multi-label model the list of predicted label ids (most probable
    first)."""
    if classifier.labels.multi_label:
        return chosen_labels(probabilities, classifier.thresholds)
    return [int(i) for i in probabilities.argmax(axis=1)]


def predictions_record(data: PreparedData, predictions: dict[str, list]) -> dict:
    """``predictions.json``: per evaluation split, each row's number in its source and the predicted class id
    (for multi-label models, the list of predicted label ids)."""
    return {"labels": list(data.labels.names),
            "splits": {name: {"rows": getattr(data, name).rows, "predicted": ids} for name, ids in predictions.items()}}


def is_main_process() -> bool:
    """False in the non-zero ranks of a torchrun / accelerate launch: only rank 0 writes output."""
    return int(os.environ.get("RANK", "0")) == 0


def run(classifier, options: DataOptions, output: str | Path, progress: bool = True, log=print) -> RunResult:
    """Load data, fit ``classifier``, score it, and write model + split + metrics + report atomically.

    ``output`` appears only when everything succeeded; an earlier folder there is replaced only then.
    """
    if is_main_process():
        check_writable(output)  # an unwritable or full destination fails now, not after training
    data = load_data(options)
    describe_data(data, log)
    return run_prepared(classifier, data, output, progress, log)


def describe_data(data: PreparedData, log=print) -> None:
    """Log the split sizes, the labels, every hygiene note and every label problem (``textxfer audit`` lists their
    rows)."""
    log(f"data: {len(data.train)} train / {len(data.validation)} validation / {len(data.test)} test rows, "
        f"labels {list(data.labels.names)}")
    for note in data.notes:
        log(f"note: {note}")
    for finding in data.label_findings:
        log(f"WARNING: {finding.message}")


def run_prepared(classifier, data: PreparedData, output: str | Path, progress: bool = True, log=print) -> RunResult:
    """:func:`run` on data that is already loaded and split (so several classifiers share one split)."""
    if is_main_process():
        check_writable(output)
    started = time.perf_counter()
    self_trained, known = None, None
    if data.unlabelled is not None and classifier.kind in self_training.KINDS:  # an ensemble combines fitted members
        classifier, self_trained, known = self_training.fit(classifier, data, progress, log)
        log(self_training.describe(self_trained))
    else:
        classifier.fit(data.train, data.validation, labels=data.labels, progress=progress)
    fit_seconds = time.perf_counter() - started
    report, data_info = {}, {}
    if self_trained is not None:
        report["self_training"] = self_trained
        data_info["unlabelled"] = {"source": self_trained["source"], "sha256": self_trained["sha256"]}
    return score_and_write(classifier, data, output, fit_seconds, log, known, report, data_info)


def score_and_write(classifier, data: PreparedData, output: str | Path, fit_seconds: float, log=print,
                    known: dict | None = None, extra_report: dict | None = None,
                    extra_data: dict | None = None) -> RunResult:
    """Score the fitted ``classifier`` on ``data``'s evaluation splits and write its run folder atomically (model,
    split, metrics, report, predictions); ``extra_report`` and ``extra_data`` join ``report.json`` and the manifest's
    ``data`` (a self-training or distillation record). ``known``: raw probabilities per split already computed."""
    started = time.perf_counter()
    metrics, probabilities, calibration = evaluate_classifier(classifier, data, known)
    predictions = {name: predicted_ids(classifier, p) for name, p in probabilities.items()}
    evaluated = sum(m["n"] for m in metrics.values())
    predict_seconds = time.perf_counter() - started
    report = {
        "data": {"notes": data.notes, "counts": data.counts},
        "fit": classifier.fit_stats,
        "calibration": calibration_record(classifier, calibration),
        "evaluation_inputs": {name: report for name in metrics
                              if (report := classifier.input_report(getattr(data, name).inputs))},
        "timing": {"fit_seconds": round(fit_seconds, 3), "evaluate_seconds": round(predict_seconds, 3),
                   "predict_texts_per_second": round(evaluated / predict_seconds, 1) if predict_seconds else None},
    }
    report |= extra_report or {}
    report["model_check"] = ((check_multilabel(metrics["validation"]) if data.labels.multi_label
                              else check_model(metrics["validation"], data.train.labels, data.labels))
                             if "validation" in metrics else {"degenerate": None, "reasons": [],
                                                              "note": "no validation split, so not checked"})
    data_info = {"fingerprints": {name: entry["sha256"] for name, entry in data.split_record["splits"].items()},
                 "sources": {name: entry["source"] for name, entry in data.split_record["splits"].items()},
                 "counts": data.counts, "split_method": data.split_record["method"]}
    data_info |= extra_data or {}
    if is_main_process():
        with atomic_output_dir(output) as staging:
            classifier.write(staging, data_info)
            write_split_file(staging / "split.json", data.split_record)
            (staging / "metrics.json").write_text(json.dumps(metrics, indent=1, ensure_ascii=False), encoding="utf-8")
            (staging / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False), encoding="utf-8")
            (staging / PREDICTIONS).write_text(json.dumps(predictions_record(data, predictions), ensure_ascii=False),
                                               encoding="utf-8")
    if metrics:
        log(format_table(metrics))
        log(calibration_line(report["calibration"]))
    else:
        log("note: validation and test are empty (too few rows per label to hold any out), so nothing was "
            "scored; add data or pass --validation/--test files")
    warning = warning_line(report["model_check"], "this model", classifier.kind)
    if warning:
        log(warning)
    if (report["fit"].get("loss_curve") or {}).get("overfitting"):
        log(f"note: {report['fit']['loss_curve']['note']} (report.json: fit.loss_curve)")
    return RunResult(Path(output), metrics, report, predictions, probabilities, classifier)


# Settings that do not change the trained model: a finished run that differs only in these is reused.
NOT_MODEL_SETTINGS = {"checkpoint_dir", "resume", "n_jobs", "eval_batch_size", "logging_steps", "feature_cache"}
# A setting missing from an older run's manifest counts as its default, except these: before they existed the
# run behaved as this value, which today's default may not mean (bundled encoders now pool by mean, E5 texts get
# a prefix, every model fits a temperature, and a forest gives each class half a vote).
BEFORE_IT_EXISTED = {"pooling": "cls", "text_prefix": "none", "calibration": "none", "pseudo_votes": 0.0}


def finished_run(folder: Path, name: str, config, data: PreparedData) -> bool:
    """Whether ``folder`` holds a finished ``name`` run of the same settings on this very split."""
    if config is None or not (folder / "split.json").is_file():
        return False
    try:
        manifest = read_manifest(folder)
        record = read_split_file(folder / "split.json")
    except TextxferError:
        return False
    wanted = {k: v for k, v in asdict(config).items() if k not in NOT_MODEL_SETTINGS}
    defaults = {f.name: f.default for f in fields(config)} | BEFORE_IT_EXISTED  # a setting added since the run
    saved = {k: manifest["config"].get(k, defaults.get(k)) for k in wanted}
    same_split = differing_part(record, data.split_record, list(data.split_record["splits"])) is None
    unlabelled = (manifest.get("data") or {}).get("unlabelled", {}).get("sha256")  # self-trained with which texts
    same_unlabelled = unlabelled == (data.unlabelled.fingerprint if data.unlabelled is not None else None)
    return manifest["kind"] == name and saved == wanted and same_split and same_unlabelled
