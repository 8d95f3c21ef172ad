"""``compare``'s third column: the validation-weighted ensemble of the pipelines it scored.

The weights are chosen exactly as ``textxfer ensemble --weights auto`` chooses them (the lowest validation
log loss on the same grid, :mod:`textxfer.ensemble.weights`) from the members' calibrated validation
probabilities — taken from the runs compare trained, predicted for runs it loaded — and never from a test row;
the average then gets its own temperature on validation. The test column is the same weighted average of the
members' test probabilities that compare already scored, at that temperature, so
``textxfer ensemble --runs <compare>/baseline <compare>/finetune`` builds a model folder that predicts what
this column shows (the entry's ``build_command``).
"""

from __future__ import annotations

import time
from pathlib import Path

from textxfer.data.dataset import PreparedData
from textxfer.ensemble.weights import mix
from textxfer.evaluation.guard import check_model, check_multilabel
from textxfer.core.metrics import score, score_probabilities
from textxfer.core.thresholds import decide

NAME = "ensemble"


def ensemble_entry(members: dict[str, dict], data: PreparedData, output: Path) -> dict:
    """The compare entry of the weighted ensemble of ``members``.

    ``members`` maps a name to ``{"model", "entry", "test", "validation"}``: the fitted model, its compare
    entry (metrics, costs, folder), its (calibrated) test probabilities and its validation probabilities
    (``None``: predict them here). The weights, the average's temperature and (multi-label) thresholds are set by
    :meth:`EnsembleClassifier.fit_on`, as ``textxfer ensemble`` sets them. Returns an entry like the members'
    (``predictions``/``probabilities``/``calibration`` included) plus the weights, what their choice saw on
    validation, and the command that saves the ensemble as a model.
    """
    from textxfer.ensemble.pipeline import EnsembleClassifier, EnsembleConfig
    from textxfer.evaluation import report_calibration

    started = time.perf_counter()
    names = list(members)
    has_validation = len(data.validation) > 0
    validation = [m["validation"] if m["validation"] is not None
                  else m["model"].predict_proba(data.validation.inputs) for m in members.values()] if has_validation else None
    model = EnsembleClassifier([m["model"] for m in members.values()], EnsembleConfig("auto"))
    model.fit_on(validation, data.validation if has_validation else None)
    weights, selection, thresholds = model.weights_, model.selection_, model.thresholds
    choose_seconds = time.perf_counter() - started
    multi = data.labels.multi_label
    raw = mix([m["test"] for m in members.values()], weights, multi)
    probabilities = model.calibrated(raw)
    predicted = decide(probabilities, thresholds) if multi else probabilities.argmax(axis=1)
    metrics = score_probabilities(data.labels, data.test.labels, probabilities, thresholds)
    mixed = model.calibrated(mix(validation, weights, multi)) if has_validation else None
    if multi:
        check = (check_multilabel(score_probabilities(data.labels, data.validation.labels, mixed, thresholds))
                 if has_validation else check_multilabel(metrics, split="test"))
    elif has_validation:
        check = check_model(score(data.labels.targets(data.validation.labels), mixed.argmax(axis=1), data.labels),
                            data.train.labels, data.labels)
    else:
        check = check_model(metrics, data.train.labels, data.labels, split="test")
    entries = [m["entry"] for m in members.values()]
    used = [e for e, w in zip(entries, weights) if w > 0]
    trained = [e.get("train_seconds") for e in entries]
    rates = [e.get("predict_texts_per_second") for e in used]
    sizes = [e.get("size_bytes") for e in entries]
    mixture = " + ".join(f"{n} × {w:.2f}" for n, w in zip(names, weights))
    how = "weights by validation log loss" if selection["method"] == "auto" else "equal weights: no validation split"
    folders = " ".join(str(e["folder"]) for e in entries)
    return {
        "description": f"{mixture} ({how})", "kind": NAME, "folder": None,
        "metrics": metrics, "model_check": check,
        "train_seconds": None if None in trained else round(sum(trained) + choose_seconds, 3),
        "predict_texts_per_second": None if None in rates or 0 in rates else round(1 / sum(1 / r for r in rates), 1),
        "size_bytes": None if None in sizes else sum(sizes),
        "weights": dict(zip(names, weights)), "selection": selection, "choose_seconds": round(choose_seconds, 3),
        **({"thresholds": [round(float(t), 6) for t in thresholds]} if multi else {}),
        "calibration": report_calibration.entry(model, raw, probabilities, data.labels.targets(data.test.labels)),
        "costs_note": "training time = the members' plus choosing the weights; predict texts/s = the members' "
                      "measured rates combined (each text goes through every member of weight > 0); size = the "
                      "members' (what `textxfer ensemble` writes)",
        "build_command": f"textxfer ensemble --runs {folders} --weights auto --output {output / NAME}",
        "predictions": predicted, "probabilities": probabilities,
    }
