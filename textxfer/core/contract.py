"""The ``Classifier`` contract: what every model kind (baseline, finetune, onnx, any added later) promises.

A kind subclasses :class:`ClassifierBase` and implements the abstract methods; the shared parts
(``predict``, ``save``, ``load``'s manifest check, batching) live here once. Callers use only what is
declared here — no ``hasattr`` probing — and ``tests/test_contract.py`` runs one contract test over
every kind in :data:`textxfer.registry.KINDS`.
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Sequence

import numpy as np

from textxfer.errors import TextxferError
from textxfer.data.labels import LabelSet
from textxfer.core.manifest import read_manifest
from textxfer.core.runs import atomic_output_dir


class ClassifierBase(abc.ABC):
    """A trained (or loaded) text classifier over the labels of :attr:`labels`.

    Subclasses set :attr:`kind` (the manifest's ``kind``) and :attr:`fitted_attribute` (an attribute that
    exists only once the model is trained or loaded), and implement :meth:`fit`, :meth:`predict_proba`,
    :meth:`write` and :meth:`from_manifest`.
    """

    kind: str = ""
    # Whether ``device`` and ``precision`` given to a load change where this kind predicts (a fine-tuned model:
    # yes; the baseline and ONNX Runtime run where they run). ``textxfer.classifier.cached`` keys its loads on it.
    follows_device: bool = False
    fitted_attribute: str = ""
    loaded_from: Path | None = None  # the folder a loaded model came from (an ensemble links its files)
    labels: LabelSet  # set by fit() and load(): the classes, in the order of predict_proba's columns
    # Texts per forward pass for models that batch (None: the model's default for its device).
    predict_batch_size: int | None = None

    # -- what every kind implements --------------------------------------------------------------
    @abc.abstractmethod
    def fit(self, train, validation=None, labels: LabelSet | None = None, progress: bool = False) -> "ClassifierBase":
        """Train on ``train`` (a ``TextDataset``); ``validation`` may drive early stopping or model choice,
        never the test split. ``labels`` fixes the class order (default: from ``train``). Returns ``self``;
        a kind that cannot be trained (an export) raises a :class:`TextxferError` saying how to make one."""

    @abc.abstractmethod
    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """A ``(len(texts), len(labels))`` float array: each row the class probabilities of one text, in input
        order, summing to 1; every string (empty, huge, odd Unicode) gets a row; an untrained model raises a
        :class:`TextxferError`. A text's row does not depend on the other texts or their order."""

    @abc.abstractmethod
    def write(self, folder: Path, data_info: dict | None = None) -> None:
        """Write the model and its manifest into the existing, empty ``folder`` (use :meth:`save`, which
        makes it atomic). Only safe formats: safetensors, skops, JSON, ONNX — never pickle."""

    @classmethod
    @abc.abstractmethod
    def from_manifest(cls, folder: Path, manifest: dict, labels: LabelSet, device: str = "auto",
                      precision: str = "auto", load_member=None) -> "ClassifierBase":
        """The model saved in ``folder`` whose checked manifest (of this kind) and labels are given; ``device``
        and ``precision`` matter to kinds that run on a GPU. ``load_member(folder, device, precision)`` loads a
        model folder of any kind (the registry's ``load``, handed down so that no kind imports the registry
        above it); only a kind made of other models (an ensemble) uses it. Refuses unsafe or inconsistent
        files in one line."""

    # -- shared ----------------------------------------------------------------------------------
    @classmethod
    def load(cls, folder: str | Path, device: str = "auto", precision: str = "auto") -> "ClassifierBase":
        """Load a saved model of this kind (``textxfer.classifier.load`` picks the kind for you, and is the
        way to load an ensemble, whose members may be of any kind)."""
        folder = Path(folder)
        manifest = read_manifest(folder)
        if manifest["kind"] != cls.kind:
            raise TextxferError(f"{folder}: holds a {manifest['kind']!r} model, not a {cls.kind!r} one; "
                                "use textxfer.classifier.load")
        return cls.from_folder(folder, manifest, device, precision)

    @classmethod
    def from_folder(cls, folder: Path, manifest: dict, device: str = "auto", precision: str = "auto",
                    load_member=None) -> "ClassifierBase":
        """:meth:`from_manifest` for a manifest already read and checked, remembering the folder (``loaded_from``)."""
        model = cls.from_manifest(folder, manifest, LabelSet.from_dict(manifest["labels"]), device, precision,
                                  load_member)
        model.loaded_from = folder
        return model

    def predict(self, texts: Sequence[str]) -> list[str | int]:
        """The most probable label per text (integers for integer label sets)."""
        ids = self.predict_proba(texts).argmax(axis=1)
        return [self.labels.value(self.labels.names[i]) for i in ids]

    def save(self, folder: str | Path, data_info: dict | None = None) -> None:
        """Write the model to ``folder`` atomically (an earlier model there survives a failure)."""
        with atomic_output_dir(folder) as staging:
            self.write(staging, data_info)

    @property
    def device(self) -> str:
        """Where the model predicts: ``cpu`` unless a kind runs elsewhere (a fine-tuned model on a GPU)."""
        return "cpu"

    @property
    def precision(self) -> str:
        """The numeric precision of prediction (``fp32`` unless a kind says otherwise)."""
        return "fp32"

    @property
    def base_model(self) -> str | None:
        """The pretrained model this one was made from, when there is one."""
        return None

    @property
    def fit_stats(self) -> dict:
        """What training recorded (``report.json`` ``fit``); empty for a loaded model."""
        return getattr(self, "fit_stats_", {})

    def input_report(self, texts: Sequence[str]) -> dict:
        """Figures about ``texts`` worth reporting beside the scores (e.g. texts with no known word)."""
        return {}

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

    def batches(self, texts: Sequence[str]):  # pragma: no cover - only batching kinds call batched_proba
        """``(row indices, model inputs)`` per batch, for kinds that predict through :meth:`batched_proba`."""
        raise NotImplementedError(f"{type(self).__name__} does not predict in batches")

    @property
    def fitted(self) -> bool:
        """Whether the model is trained or loaded (so it can predict and be written)."""
        return hasattr(self, self.fitted_attribute)

    def _check_fitted(self) -> None:
        if not self.fitted:
            raise TextxferError(f"this {type(self).__name__} is not trained yet: call fit() or load()")
