"""Every model kind, and loading a saved model folder as the right one (its manifest read once).

``textxfer.classifier`` re-exports :func:`load` for users; it lives here, beside the kinds, so that a kind
made of other models (an ensemble) can load its members without reaching back up to the user-facing module.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from textxfer.errors import TextxferError
from textxfer.manifest import read_manifest
from textxfer.pipelines.base import ClassifierBase

# Every model kind: its manifest ``kind`` → (module, class). A kind added later joins here and in the
# contract test (tests/test_contract.py runs over this mapping).
KINDS = {
    "baseline": ("textxfer.pipelines.baseline", "BaselineClassifier"),
    "finetune": ("textxfer.pipelines.finetune", "FinetuneClassifier"),
    "onnx": ("textxfer.pipelines.onnx", "OnnxClassifier"),
    "ensemble": ("textxfer.pipelines.ensemble", "EnsembleClassifier"),
}


def kind_class(kind: str):
    """The ``Classifier`` class of model kind ``kind`` (imported on first use: the kinds pull in heavy libraries)."""
    if kind not in KINDS:
        raise TextxferError(f"models of kind {kind!r} cannot be loaded by this version of textxfer")
    module, name = KINDS[kind]
    return getattr(importlib.import_module(module), name)


def load(path: str | Path, device: str = "auto", precision: str = "auto") -> ClassifierBase:
    """Load the model in folder ``path`` as the right ``Classifier`` for its kind (its manifest read once).

    A fine-tuned model is placed on ``device`` (auto | cpu | cuda | cuda:N; auto: this process's GPU when
    one is visible — the local rank's under torchrun — else the CPU) and predicts in ``precision`` (auto:
    bf16 on a GPU, fp16 where it lacks bf16, fp32 on the CPU). Other kinds run on the CPU; an ensemble
    places each member as its kind does."""
    folder = Path(path)
    manifest = read_manifest(folder)
    return kind_class(manifest["kind"]).from_folder(folder, manifest, device, precision)
