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
from textxfer.data.shape import SINGLE, TaskShape
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
    # The task shape the model was trained on (set by begin_fit and load) and, for multi-label models, one
    # decision threshold per label (set by end_fit and load).
    shape: TaskShape = SINGLE
    thresholds: np.ndarray | None = None
    thresholds_from: str = ""
    # The temperature :meth:`predict_proba` applies to :meth:`raw_proba` (1: none), and the manifest's
    # ``calibration`` entry describing it (set by end_fit and load; empty for a model saved before calibration).
    temperature: float = 1.0
    calibration: dict = {}
    # How this kind explains a prediction (:meth:`explain`), its default first; every kind can explain by occlusion.
    explanation_methods: tuple[str, ...] = ("occlusion",)

    # -- what every kind implements --------------------------------------------------------------
    @abc.abstractmethod
    def fit(self, train, validation=None, labels: LabelSet | None = None, progress: bool = False) -> "ClassifierBase":
        """Train on ``train`` (a ``TextDataset``); ``validation`` may drive early stopping or model choice,
        never the test split. ``labels`` fixes the class order (default: from ``train``). Returns ``self``;
        a kind that cannot be trained (an export) raises a :class:`TextxferError` saying how to make one."""

    @abc.abstractmethod
    def raw_proba(self, texts: Sequence[str]) -> np.ndarray:
        """The model's own probabilities, before calibration (:meth:`predict_proba` is what callers use): a
        ``(len(texts), len(labels))`` float array: each row the class probabilities of one text, in input
        order, summing to 1 (a multi-label model: each label's own probability, in [0, 1]); every string (empty,
        huge, odd Unicode) gets a row; a pair model takes ``(text, second text)`` pairs (:meth:`check_inputs`); an
        untrained model raises a :class:`TextxferError`. A text's row does not depend on the other texts or their
        order."""

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
        task = manifest.get("task") or {}
        model.shape = TaskShape.from_dict(task.get("shape"))
        if model.shape.multi_label:
            model.thresholds = np.asarray(task["thresholds"], dtype=np.float64)
            model.thresholds_from = task.get("thresholds_from", "")
        model.calibration = manifest.get("calibration") or {}
        # An exported graph divides its logits by the temperature itself (``in_graph``): nothing left to apply.
        in_graph = model.calibration.get("in_graph", False)
        model.temperature = 1.0 if in_graph else float(model.calibration.get("temperature", 1.0))
        return model

    def predict_proba(self, texts: Sequence) -> np.ndarray:
        """Calibrated class probabilities: :meth:`raw_proba` at the model's :attr:`temperature` (the same argmax;
        for a multi-label model the same order of each label's probabilities, its thresholds tuned on these)."""
        return self.calibrated(self.raw_proba(texts))

    def calibrated(self, raw: np.ndarray) -> np.ndarray:
        """``raw`` (from :meth:`raw_proba`) at this model's temperature."""
        if self.temperature == 1.0 or not len(raw):
            return raw
        from textxfer.core.calibration import scale

        return scale(raw, self.temperature, self.labels.multi_label)

    def predict(self, texts: Sequence) -> list:
        """The most probable label per text (integers for integer label sets); for a multi-label model, the list
        of labels whose probability reaches their threshold, most probable first (possibly empty)."""
        probabilities = self.predict_proba(texts)
        if self.labels.multi_label:
            from textxfer.core.thresholds import chosen_labels

            return [[self.labels.value(self.labels.names[j]) for j in ids]
                    for ids in chosen_labels(probabilities, self.thresholds)]
        ids = probabilities.argmax(axis=1)
        return [self.labels.value(self.labels.names[i]) for i in ids]

    def explain(self, texts: Sequence, method: str = "auto", max_words: int | None = None) -> list:
        """Per input, an :class:`textxfer.core.explain.Explanation` of its most probable label: each word (jieba words
        for Chinese) with its contribution to that label's probability, by ``method`` (``auto``: this kind's default,
        the first of :attr:`explanation_methods`; ``occlusion`` works for every kind)."""
        from textxfer.core.explain import MAX_WORDS, Explanation, words_of

        inputs = self.check_inputs(texts)
        chosen = self.explanation_methods[0] if method == "auto" else method
        if chosen not in self.explanation_methods:
            raise TextxferError(f"a {self.kind} model explains by {' or '.join(self.explanation_methods)}, not "
                                f"{method!r}")
        if not inputs:
            return []
        probabilities = self.predict_proba(inputs)
        label_ids = probabilities.argmax(axis=1)
        split = [words_of(item, max_words or MAX_WORDS) for item in inputs]
        words = [w for w, _ in split]
        scores = self.word_contributions(inputs, label_ids, words, chosen, probabilities)
        return [Explanation(item, self.labels.value(self.labels.names[j]), float(probabilities[i, j]), chosen, ws,
                            [float(s) for s in score], notes)
                for i, (item, j, ws, score, (_, notes)) in enumerate(zip(inputs, label_ids, words, scores, split))]

    def word_contributions(self, inputs: list, label_ids: np.ndarray, words: list, method: str,
                           probabilities: np.ndarray) -> list[np.ndarray]:
        """Each input's word contributions to label ``label_ids[i]`` by ``method`` (one of
        :attr:`explanation_methods`): occlusion here; a kind with a method of its own overrides this."""
        from textxfer.core.explain import occlusion

        return occlusion(self, inputs, label_ids, words, probabilities)

    # -- task shapes: what a kind calls from fit and write ------------------------------------------
    def begin_fit(self, train, labels: LabelSet | None) -> LabelSet:
        """Record ``train``'s shape and return the label set to train on (``labels`` or ``train``'s own)."""
        self.shape = train.shape
        self.thresholds, self.thresholds_from = None, ""
        self.temperature, self.calibration = 1.0, {}
        labels = labels or LabelSet.from_labels(train.labels, train.shape.multi_label)
        self.shape.refuse_other(TaskShape(labels.multi_label, text_pair_column=train.shape.text_pair_column),
                                "the label set", "pass labels of the data's own shape")
        return labels

    def end_fit(self, validation, threshold: float | None = None, calibration: str = "temperature",
                raw_validation: np.ndarray | None = None) -> None:
        """After training: the temperature (``calibration="temperature"``: the one minimising log loss on
        ``validation``; ``"none"``, or no validation split: 1), then, for a multi-label model, one threshold per
        label maximising each label's F1 on the calibrated ``validation`` probabilities, or ``threshold`` for all
        labels when given (``--threshold 0.5``) or when there is no validation split. ``raw_validation``: the
        validation split's :meth:`raw_proba`, when the caller has it already."""
        from textxfer.core.calibration import fit_report

        has_validation = validation is not None and len(validation) > 0
        if has_validation and (calibration != "none" or (self.labels.multi_label and threshold is None)):
            raw = self.raw_proba(validation.inputs) if raw_validation is None else raw_validation
        self.temperature, self.calibration = 1.0, {"method": "none", "why": "--calibration none"}
        if calibration != "none" and not has_validation:
            self.calibration["why"] = "no validation split to fit a temperature on"
        elif calibration != "none":
            self.temperature, self.calibration = fit_report(raw, self.labels.targets(validation.labels))
        if not self.labels.multi_label:
            return
        from textxfer.core.thresholds import DEFAULT_THRESHOLD, tune_thresholds

        if threshold is not None or not has_validation:
            self.thresholds = np.full(len(self.labels), DEFAULT_THRESHOLD if threshold is None else float(threshold))
            self.thresholds_from = "given" if threshold is not None else "fixed: no validation split"
            return
        truth = self.labels.indicators(validation.labels)
        self.thresholds, kept = tune_thresholds(truth, self.calibrated(raw))
        self.thresholds_from = "validation" + (f" ({len(kept)} label(s) kept at 0.5: no positive or negative "
                                               "validation row)" if kept else "")

    def task_info(self) -> dict | None:
        """The manifest's ``task`` entry (None for single-label texts, whose manifests have none)."""
        if self.shape.single:
            return None
        info = {"shape": self.shape.to_dict()}
        if self.labels.multi_label:
            info |= {"thresholds": [round(float(t), 6) for t in self.thresholds], "thresholds_from": self.thresholds_from}
        return info

    def check_inputs(self, texts: Sequence) -> list:
        """``texts`` as a list of model inputs — strings, or ``(text, second text)`` pairs for a pair model (a lone
        string, or a lone pair tuple, is one input); one line when an input is of the other form."""
        if isinstance(texts, str) or (self.shape.pair and isinstance(texts, tuple) and _is_pair(texts)):
            texts = [texts]
        inputs = list(texts)
        for i, item in enumerate(inputs):
            if self.shape.pair and not _is_pair(item):
                raise TextxferError(f"input {i + 1}: this model reads text pairs, got {item!r:.60}; pass a (text, second "
                                    "text) pair per input")
            if not self.shape.pair and not isinstance(item, str):
                raise TextxferError(f"input {i + 1}: this model reads single texts, got {item!r:.60}"
                                    f"{' (it was not trained on text pairs)' if _is_pair(item) else ''}")
        return [tuple(item) for item in inputs] if self.shape.pair else inputs

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


def _is_pair(item) -> bool:
    return isinstance(item, (tuple, list)) and len(item) == 2 and all(isinstance(t, str) for t in item)
