"""The part of the ``Classifier`` contract that both pipelines implement the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from textxfer.errors import TextxferError
from textxfer.runs import atomic_output_dir


class ClassifierBase:
    """Shared ``predict`` / ``save`` on top of a subclass's ``predict_proba`` / ``write``.

    Subclasses set ``kind``, ``labels`` (a ``LabelSet``, in ``fit``/``load``) and name in
    ``fitted_attribute`` the attribute that exists only once the model is trained.
    """

    kind = ""
    fitted_attribute = ""
    # Texts per forward pass for models that batch (None: the model's default for its device).
    predict_batch_size: int | None = None

    def predict_proba(self, texts: Sequence[str]):  # pragma: no cover - implemented by subclasses
        raise NotImplementedError

    def write(self, folder: Path, data_info: dict | None = None) -> None:  # pragma: no cover
        raise NotImplementedError

    def batched_proba(self, texts: Sequence[str], predict_batch) -> np.ndarray:
        """``predict_proba`` of a batching model: ``predict_batch`` maps each batch of ``self.batches``
        to probabilities, which land in the rows of their texts (input order, ``labels`` columns)."""
        self._check_fitted()
        if isinstance(texts, str):
            texts = [texts]
        probabilities = np.zeros((len(texts), len(self.labels)), dtype=np.float64)
        if len(texts):
            for rows, batch in self.batches(texts):
                probabilities[rows] = predict_batch(batch)
        return probabilities

    def predict(self, texts: Sequence[str]) -> list[str | int]:
        """The most probable label per text (integers for integer label sets)."""
        ids = self.predict_proba(texts).argmax(axis=1)
        return [self.labels.value(self.labels.names[i]) for i in ids]

    def save(self, folder: str | Path, data_info: dict | None = None) -> None:
        """Write the model to ``folder`` atomically (an earlier model there survives a failure)."""
        with atomic_output_dir(folder) as staging:
            self.write(staging, data_info)

    def _check_fitted(self) -> None:
        if not hasattr(self, self.fitted_attribute):
            raise TextxferError(f"this {type(self).__name__} is not trained yet: call fit() or load()")
