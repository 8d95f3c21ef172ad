"""Self-training with ``--unlabelled`` texts: the trained model labels them, a second model learns from the
labelled texts plus the confident, class-balanced pseudo-labelled ones, and validation keeps the better.

Works for any kind that trains from a config (fine-tuned, baseline). The choices, and why:

- **Hard pseudo-labels**, not soft ones: every textxfer strategy trains on labels (a fitted head, pairs of
  same/different label, the ``Trainer`` on cross-entropy), so the second model is an ordinary model of its kind
  trained on more rows. SetFit's distillation trains a student on the teacher's soft outputs instead; that
  needs a student that takes soft targets, which a fitted logistic head or a forest does not.
- **Confident**: of the texts the first model gives a class, the more confident half (by its probability).
- **Class-balanced**: the same number of texts from every class — the smallest such half, at most
  :data:`PER_CLASS_CAP` — so a model that over-predicts one class does not teach the second one to do more of it.
  A class the first model never predicts leaves nothing to balance with: no pseudo-labels, the first model is kept.
- **Kept only when validation says so**: the second model replaces the first only with a higher validation
  macro-F1 (a tie keeps the first: it needed no pseudo-labels).
- **Never an evaluation text**: ``--unlabelled`` refuses validation and test texts when it is read
  (:mod:`textxfer.data.unlabelled`); the fit's own training texts are left out here.
"""

from __future__ import annotations

import copy
import time

import numpy as np

from textxfer.core.metrics import score
from textxfer.data.dataset import PreparedData, TextDataset
from textxfer.data.unlabelled import without
from textxfer.errors import TextxferError

PER_CLASS_CAP = 500  # pseudo-labelled texts per class at most (with 5,000 unlabelled texts and 2 classes: ~1,000 in all)
KINDS = ("finetune", "baseline")


def select(probabilities: np.ndarray, cap: int = PER_CLASS_CAP) -> tuple[np.ndarray, np.ndarray, dict]:
    """``(indices, classes, record)``: which unlabelled texts to pseudo-label, and as what (see the module docstring)."""
    predicted, confidence = probabilities.argmax(axis=1), probabilities.max(axis=1)
    halves = []
    for label in range(probabilities.shape[1]):
        mine = np.flatnonzero(predicted == label)
        mine = mine[np.argsort(-confidence[mine], kind="stable")]
        halves.append(mine[: (len(mine) + 1) // 2])  # the more confident half of the texts given this class
    per_class = min(min(len(h) for h in halves), cap)
    indices = np.concatenate([h[:per_class] for h in halves]) if per_class else np.array([], dtype=int)
    record = {"per_class": int(per_class), "predicted_per_class": [int(np.sum(predicted == k)) for k in range(len(halves))],
              "lowest_confidence": round(float(confidence[indices].min()), 4) if per_class else None,
              "cap_per_class": cap}
    return indices.astype(int), predicted[indices], record


def _scores(model, data: PreparedData, split: str, kept: dict | None = None) -> dict | None:
    """Macro-F1 and accuracy of ``model`` on ``split`` (None when the split is empty); its probabilities go into
    ``kept`` (split → array) so the runner need not predict the split again."""
    dataset = getattr(data, split)
    if not len(dataset):
        return None
    raw = model.raw_proba(dataset.texts)
    if kept is not None:
        kept[split] = raw  # before calibration: the run scores them (and their calibration) once
    # the temperature never moves the argmax: the raw probabilities' predictions are the model's
    metrics = score(data.labels.encode(dataset.labels), raw.argmax(axis=1), data.labels)
    return {"macro_f1": round(metrics["macro_f1"], 6), "accuracy": round(metrics["accuracy"], 6)}


def fit(classifier, data: PreparedData, progress: bool = False, log=print):
    """Fit ``classifier`` on ``data.train``, then self-train with ``data.unlabelled``; returns ``(model kept, record,
    probabilities)``: the kept model's validation (and test, when scored) probabilities before calibration, split →
    array."""
    if classifier.kind not in KINDS:
        raise TextxferError(f"--unlabelled: self-training trains a second {classifier.kind} model from a config; it "
                            f"works for {' and '.join(KINDS)} models, not {classifier.kind}")
    if getattr(classifier.config, "max_train_samples", None):
        raise TextxferError("--unlabelled with --max-train-samples: the second model must train on the first one's "
                            "texts; make a smaller training file instead")
    started = time.perf_counter()
    classifier.fit(data.train, data.validation, labels=data.labels, progress=progress)
    first_seconds = time.perf_counter() - started
    texts, dropped = without(data.unlabelled, data.train.texts)
    record = {"source": data.unlabelled.origin, "sha256": data.unlabelled.fingerprint,
              "unlabelled_texts": len(data.unlabelled), "training_texts_dropped": dropped,
              "validation": {"without": _scores(classifier, data, "validation", first := {})},
              "seconds": {"first_model": round(first_seconds, 2)}}
    if not texts:
        return classifier, {**record, "kept": "without", "why": "every unlabelled text is a training text"}, first
    started = time.perf_counter()
    indices, classes, chosen = select(classifier.predict_proba(texts))
    record["seconds"]["pseudo_labelling"] = round(time.perf_counter() - started, 2)
    names = list(data.labels.names)
    record.update(chosen, pseudo_labels={name: int(chosen["per_class"]) for name in names})
    if not len(indices):
        silent = [names[k] for k, n in enumerate(chosen["predicted_per_class"]) if n == 0]
        return classifier, {**record, "kept": "without",
                            "why": f"the first model gives no unlabelled text the class(es) {silent}, so no "
                                   "class-balanced pseudo-labels exist"}, first
    log(f"self-training: {len(indices):,} pseudo-labelled texts ({chosen['per_class']:,} per class, confidence ≥ "
        f"{chosen['lowest_confidence']:.3f}) of {len(texts):,} unlabelled; training the second model")
    row_of = dict(zip(data.unlabelled.texts, data.unlabelled.rows))
    augmented = TextDataset(data.train.texts + [texts[i] for i in indices],
                            data.train.labels + [names[k] for k in classes],
                            data.train.rows + [row_of[texts[i]] for i in indices], data.train.origin)
    second = type(classifier)(copy.deepcopy(classifier.config))
    started = time.perf_counter()
    second.fit(augmented, data.validation, labels=data.labels, progress=progress)
    record["seconds"]["second_model"] = round(time.perf_counter() - started, 2)
    record["validation"]["with"] = _scores(second, data, "validation", then := {})
    before, after = record["validation"]["without"]["macro_f1"], record["validation"]["with"]["macro_f1"]
    kept = "with" if after > before else "without"
    # Both models' test scores, for the record only (the choice above saw validation alone): whether it chose right.
    record["test"] = {"without": _scores(classifier, data, "test", first), "with": _scores(second, data, "test", then)}
    record.update(kept=kept, why=(f"validation macro-F1 {after:.4f} with the pseudo-labels against {before:.4f} "
                                  f"without: {'kept the second model' if kept == 'with' else 'kept the first model'}"))
    return (second, record, then) if kept == "with" else (classifier, record, first)


def describe(record: dict) -> str:
    """One line: the pseudo-labels used and the validation scores before and after."""
    used = sum(record.get("pseudo_labels", {}).values())
    return (f"self-training: {used:,} pseudo-labels ({record.get('per_class', 0):,} per class) from "
            f"{record['unlabelled_texts']:,} unlabelled texts; {record['why']}")
