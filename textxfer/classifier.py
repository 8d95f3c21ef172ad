"""Use any trained textxfer model from Python: ``load(path)`` and ``predict(texts, model=...)``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from textxfer.errors import TextxferError
from textxfer.manifest import read_manifest

_CACHE: dict[Path, object] = {}


@dataclass(frozen=True)
class Prediction:
    """One text's predicted ``label``, its probability ``score``, and every class's probability."""

    label: str | int
    score: float
    probabilities: dict[str | int, float]


def load(path: str | Path):
    """Load the model in folder ``path`` as the right ``Classifier`` for its kind."""
    manifest = read_manifest(path)
    if manifest["kind"] == "baseline":
        from textxfer.pipelines.baseline import BaselineClassifier

        return BaselineClassifier.load(path)
    if manifest["kind"] == "finetune":
        from textxfer.pipelines.finetune import FinetuneClassifier

        return FinetuneClassifier.load(path)
    raise TextxferError(f"{path}: models of kind {manifest['kind']!r} cannot be loaded by this version of textxfer")


def predict(texts: str | Sequence[str], model) -> Prediction | list[Prediction]:
    """Predict one text (returns a :class:`Prediction`) or a list of texts (returns a list).

    ``model`` is a folder path (loaded once, then cached) or an already loaded classifier.
    """
    if isinstance(model, (str, Path)):
        key = Path(model).resolve()
        if key not in _CACHE:
            _CACHE[key] = load(key)
        model = _CACHE[key]
    single = isinstance(texts, str)
    batch = [texts] if single else list(texts)
    probabilities = model.predict_proba(batch)
    values = [model.labels.value(name) for name in model.labels.names]
    results = []
    for row in probabilities:
        best = int(row.argmax())
        results.append(Prediction(values[best], float(row[best]), {v: float(p) for v, p in zip(values, row)}))
    return results[0] if single else results
