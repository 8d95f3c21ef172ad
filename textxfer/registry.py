"""Every model kind, and loading a saved model folder as the right one (its manifest read once).

The registry sits above the kinds it names (it imports each; their modules import torch, transformers and
scikit-learn only when a model is trained or loaded, so this costs no heavy import) and below what uses
models of any kind: ``textxfer.classifier`` re-exports :func:`load` for users; the evaluation workflows
(compare, study, ``textxfer ensemble``) load runs through it; an ensemble gets it handed down to load its
members (``load_member``), so no kind reaches back up to here.
"""

from __future__ import annotations

from pathlib import Path

from textxfer.baseline.pipeline import BaselineClassifier
from textxfer.core.contract import ClassifierBase
from textxfer.core.manifest import read_manifest
from textxfer.ensemble.pipeline import EnsembleClassifier
from textxfer.errors import TextxferError
from textxfer.static.pipeline import StaticClassifier
from textxfer.transformer.onnx_pipeline import OnnxClassifier
from textxfer.transformer.pipeline import FinetuneClassifier

# Every model kind: its manifest ``kind`` → its ``Classifier`` class. A kind added later joins here (and the
# manifest's list of kinds); tests/test_contract.py runs the contract over this mapping.
KINDS: dict[str, type[ClassifierBase]] = {
    cls.kind: cls for cls in (BaselineClassifier, FinetuneClassifier, OnnxClassifier, EnsembleClassifier,
                            StaticClassifier)
}


def kind_class(kind: str) -> type[ClassifierBase]:
    """The ``Classifier`` class of model kind ``kind``."""
    if kind not in KINDS:
        raise TextxferError(f"models of kind {kind!r} cannot be loaded by this version of textxfer")
    return KINDS[kind]


def load(path: str | Path, device: str = "auto", precision: str = "auto") -> ClassifierBase:
    """Load the model in folder ``path`` as the right ``Classifier`` for its kind (its manifest read once).

    A fine-tuned model is placed on ``device`` (auto | cpu | cuda | cuda:N; auto: this process's GPU when
    one is visible — the local rank's under torchrun — else the CPU) and predicts in ``precision`` (auto:
    bf16 on a GPU, fp16 where it lacks bf16, fp32 on the CPU). Other kinds run on the CPU; an ensemble
    places each member as its kind does."""
    folder = Path(path)
    manifest = read_manifest(folder)
    return kind_class(manifest["kind"]).from_folder(folder, manifest, device, precision, load_member=load)
