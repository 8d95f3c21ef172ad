"""Use any trained textxfer model from Python: ``load(path)`` and ``predict(texts, model=...)``.

``predict`` accepts a model folder (loaded once, then cached) or a loaded classifier; it is safe to
call from several threads. A fine-tuned model predicts on this process's GPU when one is visible (in
bf16 there), else on the CPU; ``device=`` and ``precision=`` choose otherwise (``textxfer.transformer.devices``).
Baseline and exported ONNX models run on the CPU whatever ``device`` says; an ensemble places each
member as its kind does.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from textxfer.errors import TextxferError
from textxfer.core.contract import ClassifierBase
from textxfer.core.manifest import read_manifest
from textxfer.registry import KINDS, kind_class, load

# Loaded models by (folder, where they predict): see _cache_key.
_CACHE: dict[tuple, object] = {}
# (folder, device, precision) as asked → its _cache_key: the manifest is read once per request shape, not on
# every predict(model=path) call.
_KEYS: dict[tuple[Path, str, str], tuple] = {}
_CACHE_LOCK = threading.Lock()


@dataclass(frozen=True)
class Prediction:
    """One text's predicted ``label``, its probability ``score``, and every class's probability."""

    label: str | int
    score: float
    probabilities: dict[str | int, float]


@dataclass(frozen=True)
class MultiLabelPrediction:
    """One text's predicted ``labels`` (each at or above its threshold, most probable first; possibly none) and
    every label's probability of applying (they need not sum to 1)."""

    labels: list[str | int]
    probabilities: dict[str | int, float]


# The kinds and the loader live beside the pipelines (an ensemble loads its members through them).
__all__ = ["KINDS", "MultiLabelPrediction", "Prediction", "cached", "clear_cache", "explain", "kind_class", "load", "predict",
           "to_predictions"]


def _cache_key(folder: Path, device: str, precision: str) -> tuple:
    """``(folder, device, precision)`` as the load would place the model — ``auto`` resolved (on a machine
    without a GPU ``auto`` and ``cpu`` are one load; with one, ``auto`` and ``cuda`` are) — or ``(folder,)``
    for a model that runs in one place whatever is asked (a baseline, an ONNX model, an ensemble of those),
    which also keeps torch unimported for them."""
    manifest = read_manifest(folder)  # a missing or broken folder fails here as load would fail
    members = (manifest.get("config") or {}).get("members") if manifest["kind"] == "ensemble" else None
    kinds = ([m.get("kind") if isinstance(m, dict) else None for m in members] if isinstance(members, list) and members
             else [manifest["kind"]])
    if not any(kind not in KINDS or kind_class(kind).follows_device for kind in kinds):
        return (folder,)
    from textxfer.transformer import devices

    try:
        target = devices.resolve(device)
        return (folder, target, devices.inference_precision(target, precision))
    except TextxferError:  # no such place here: the load says so in one line (nothing is cached)
        return (folder, device, precision)


def cached(path: str | Path, device: str = "auto", precision: str = "auto"):
    """The classifier in folder ``path`` on ``device``, loaded on first use and then kept in memory (one load
    per folder and resolved device and precision: ``auto`` is the device it stands for)."""
    folder = Path(path).resolve()
    with _CACHE_LOCK:  # one load per folder even when threads ask at the same time
        key = _KEYS.get((folder, device, precision))
        if key is None:
            key = _KEYS[(folder, device, precision)] = _cache_key(folder, device, precision)
        if key not in _CACHE:
            _CACHE[key] = load(folder, device, precision)
        return _CACHE[key]


def clear_cache() -> None:
    """Forget every cached model (e.g. after retraining into the same folder)."""
    with _CACHE_LOCK:
        _CACHE.clear()
        _KEYS.clear()


def to_predictions(model, probabilities) -> list[Prediction] | list[MultiLabelPrediction]:
    """:class:`Prediction` objects from a probability matrix whose columns follow ``model.labels`` (for a multi-label
    model, :class:`MultiLabelPrediction` objects, by its thresholds)."""
    values = [model.labels.value(name) for name in model.labels.names]
    if model.labels.multi_label:
        from textxfer.core.thresholds import chosen_labels

        return [MultiLabelPrediction([values[j] for j in ids], {v: float(p) for v, p in zip(values, row)})
                for row, ids in zip(probabilities, chosen_labels(probabilities, model.thresholds))]
    results = []
    for row in probabilities:
        best = int(row.argmax())
        results.append(Prediction(values[best], float(row[best]), {v: float(p) for v, p in zip(values, row)}))
    return results


def predict(texts, model, device: str = "auto", precision: str = "auto"):
    """Predict one text (returns a :class:`Prediction`) or a list of texts (returns a list). A pair model takes
    a ``(text, second text)`` tuple, or a list of them; a multi-label model returns :class:`MultiLabelPrediction`
    objects.

    ``model`` is a folder path (loaded once onto ``device`` in ``precision``, see :func:`load`, then
    cached) or an already loaded classifier (which stays where it is). Texts are batched by length; an
    empty text gets the model's prediction for no evidence, and a text longer than the model's limit is
    shortened by the model's long-text policy.
    """
    if isinstance(model, (str, Path)):
        model = cached(model, device, precision)
    if not isinstance(model, ClassifierBase):
        raise TextxferError(f"model must be a model folder or a loaded textxfer classifier, got {type(model).__name__}")
    single = isinstance(texts, str) or (model.shape.pair and isinstance(texts, tuple))
    batch = model.check_inputs([texts] if single else texts)
    results = to_predictions(model, model.predict_proba(batch))
    return results[0] if single else results


def explain(texts, model, method: str = "auto", device: str = "auto", precision: str = "auto"):
    """Why the model predicts what it does: for one text an :class:`textxfer.core.explain.Explanation` (a list of
    them for a list of texts) — the most probable label, its probability, and each word (jieba words for Chinese)
    with its contribution to that probability. ``method``: ``auto`` (a fine-tuned model: integrated gradients on its
    input embeddings; other kinds: occlusion), ``occlusion`` (every kind: the drop in the label's probability when the
    word is removed) or ``integrated-gradients``. ``model``: as for :func:`predict`."""
    if isinstance(model, (str, Path)):
        model = cached(model, device, precision)
    if not isinstance(model, ClassifierBase):
        raise TextxferError(f"model must be a model folder or a loaded textxfer classifier, got {type(model).__name__}")
    single = isinstance(texts, str) or (model.shape.pair and isinstance(texts, tuple))
    results = model.explain([texts] if single else texts, method)
    return results[0] if single else results
