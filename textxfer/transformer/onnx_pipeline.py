"""Run an exported fine-tuned model (``textxfer export --format onnx``) on ONNX Runtime.

The folder holds ``model.onnx``, the source model's tokenizer and ``config.json``, and a manifest of
kind ``"onnx"`` whose config is the source model's config plus export details. Inputs are built
exactly as :class:`~textxfer.transformer.pipeline.FinetuneClassifier` builds them (same max length,
long-text policy and length-ordered batches), so probabilities match the PyTorch model.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from textxfer.transformer.encoding import encode, prediction_batches, softmax
from textxfer.errors import TextxferError
from textxfer.data.labels import LabelSet
from textxfer.core.manifest import build_manifest, write_manifest
from textxfer.core.contract import ClassifierBase

WEIGHTS = "model.onnx"
EXTRA_HINT = "pip install 'textxfer[onnx]'"
_NUMPY_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}


def require_packages(*names: str) -> None:
    """Raise a one-line error naming the ``textxfer[onnx]`` extra if any of ``names`` is missing."""
    missing = [name for name in names if importlib.util.find_spec(name) is None]
    if missing:
        raise TextxferError(f"ONNX export needs extra packages: {EXTRA_HINT} (missing: {', '.join(missing)})")


def create_session(path: Path):
    """An ``onnxruntime.InferenceSession`` on CUDA when available, else CPU, with full graph optimizations."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: ORT warns about harmless things (unused initializers...)
    available = ort.get_available_providers()
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
        raise TextxferError(f"{path}: ONNX Runtime cannot load the model ({str(exc).splitlines()[0][:200]}); "
                            "export it again with `textxfer export`") from None


class OnnxClassifier(ClassifierBase):
    """An exported classifier: predict-only, same ``Classifier`` contract as the other pipelines."""

    kind = "onnx"
    fitted_attribute = "session_"

    @property
    def base_model(self) -> str | None:
        """The checkpoint the exported model was fine-tuned from."""
        return self.config.get("base_model") if hasattr(self, "config") else None

    def fit(self, *args, **kwargs) -> "OnnxClassifier":
        """Exported models are inference-only."""
        raise TextxferError("an exported ONNX model cannot be trained; fine-tune the source model and export again")

    # -- inference ------------------------------------------------------------------------------
    def encode(self, texts: Sequence) -> dict[str, list[list[int]]]:
        """Model inputs for ``texts`` (or text pairs) under the source model's max length and long-text policy."""
        return encode(self.tokenizer_, texts, self.max_length_, self.long_text_, self.text_prefix_)

    def raw_proba(self, texts: Sequence) -> np.ndarray:
        """Class probabilities (columns in ``labels`` order), batched by length, in input order; a multi-label graph
        gives each label's sigmoid itself (its ``probabilities`` output)."""
        self._check_fitted()
        texts = self.check_inputs(texts)
        if self.output_name_ == "probabilities":
            return self.batched_proba(texts, lambda feed: self.session_.run([self.output_name_], feed)[0].astype(np.float64))
        return self.batched_proba(texts, lambda feed: softmax(self.session_.run([self.output_name_], feed)[0]))

    def batches(self, texts: Sequence[str]):
        """Yield ``(row indices, ONNX Runtime feed)``, shortest texts first; only the graph's inputs are fed."""
        on_gpu = self.session_.get_providers()[0] == "CUDAExecutionProvider"
        for rows, batch in prediction_batches(self.tokenizer_, self.encode(texts), self.predict_batch_size,
                                              on_gpu, "np"):
            feed = {}
            for name, dtype in self.inputs_.items():
                if name in batch:
                    feed[name] = np.asarray(batch[name], dtype=dtype)
                elif name == "token_type_ids":  # what the PyTorch model uses when none are given
                    feed[name] = np.zeros(batch["input_ids"].shape, dtype=dtype)
                else:
                    raise TextxferError(f"{self.folder_ / WEIGHTS}: the graph needs input {name!r}, which the "
                                        "tokenizer does not produce; export the model again")
            yield rows, feed

    # -- persistence ----------------------------------------------------------------------------
    def write(self, folder: Path, data_info: dict | None = None) -> None:
        """Copy the ONNX graph, tokenizer and config, and write the manifest into an empty ``folder``.

        Without ``data_info`` the loaded manifest's data record is kept (the model is unchanged).
        """
        self._check_fitted()
        for name in self.files_.values():
            if name != self.files_.get("tokenizer"):
                shutil.copy2(self.folder_ / name, folder / name)
        self.tokenizer_.save_pretrained(folder)
        files = dict(self.files_)
        if "tokenizer" in files and not (folder / files["tokenizer"]).exists():
            del files["tokenizer"]
        data = data_info if data_info is not None else self.data_
        write_manifest(folder, build_manifest(self.kind, self.labels, self.config, data, files, self.task_info(),
                                              self.calibration))

    @classmethod
    def from_manifest(cls, folder: Path, manifest: dict, labels: LabelSet, device: str = "auto",
                      precision: str = "auto", load_member=None) -> "OnnxClassifier":
        """An exported folder (``textxfer export``) on ONNX Runtime (CUDA when its GPU build is installed, else
        the CPU; ``device`` and ``precision`` do not apply); needs ``onnxruntime``."""
        from textxfer.transformer.models import check_saved_config

        check_saved_config(folder, manifest)
        try:
            require_packages("onnxruntime", "onnx")
        except TextxferError:
            raise TextxferError(f"{folder}: running an ONNX model needs extra packages: {EXTRA_HINT}") from None
        from transformers import AutoTokenizer

        model = cls()
        model.folder_ = folder
        model.labels = labels
        model.config = dict(manifest["config"])
        model.data_ = manifest.get("data") or {}
        model.files_ = dict(manifest["files"])
        model.max_length_ = int(model.config.get("resolved_max_length") or 512)
        model.long_text_ = model.config.get("long_text", "head-tail")
        prefix = model.config.get("resolved_text_prefix") or ""
        model.text_prefix_ = prefix if isinstance(prefix, str) else ""
        _check_label_maps(folder, model.files_.get("config"), model.labels)
        from textxfer.transformer.models import check_untrusted_model

        # No weights are read through transformers here, so only the remote-code part of the check applies.
        check_untrusted_model(str(folder), trust_remote_code=False, allow_pickle_weights=True, local=True,
                              saved=True)
        try:
            model.tokenizer_ = AutoTokenizer.from_pretrained(str(folder), local_files_only=True,
                                                             trust_remote_code=False)
        except (OSError, ValueError) as exc:
            raise TextxferError(f"{folder}: cannot load the tokenizer ({str(exc).splitlines()[0]}); "
                                "export the model again") from None
        weights = folder / model.files_.get("weights", WEIGHTS)
        check_external_data(weights)
        session = create_session(weights)
        model.inputs_ = {i.name: _NUMPY_TYPES.get(i.type, np.int64) for i in session.get_inputs()}
        outputs = [o.name for o in session.get_outputs()]
        model.output_name_ = next((name for name in ("probabilities", "logits") if name in outputs), outputs[0])
        if (model.output_name_ == "probabilities") != labels.multi_label:
            raise TextxferError(f"{weights}: the graph's output {model.output_name_!r} does not fit a "
                                f"{'multi' if labels.multi_label else 'single'}-label model; export the model again")
        model.session_ = session
        return model


def _graph_tensors(graph):
    """Every tensor stored in ``graph`` and its subgraphs (initializers, sparse ones, constant attributes)."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _graph_tensors(attribute.g)
            for sub in attribute.graphs:
                yield from _graph_tensors(sub)
            for sparse in attribute.sparse_tensors:
                yield sparse.values
                yield sparse.indices


def check_external_data(path: Path) -> None:
    """Refuse a graph whose external-data files lie outside its folder (absolute, ``..``, or a symlink out).

    ONNX Runtime reads external tensors from the paths the graph names; a crafted graph could make it
    read any file on the machine. Only the graph structure is parsed here, no tensor data.
    """
    import onnx

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:  # protobuf DecodeError and friends
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise TextxferError(f"{path}: not a readable ONNX graph ({reason}); export the model again") from None
    base = path.parent.resolve()
    for tensor in _graph_tensors(graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((entry.value for entry in tensor.external_data if entry.key == "location"), "")
        parts = location.replace("\\", "/").split("/")
        outside = (not location or location.startswith(("/", "\\")) or ":" in location or ".." in parts
                   or "\0" in location)
        if not outside:
            outside = base not in (base / location).resolve().parents
        if outside:
            raise TextxferError(f"{path}: tensor {tensor.name!r} reads external data from {location!r}, outside "
                                "the model folder; refusing to load")


def _check_label_maps(folder: Path, config_name: str | None, labels: LabelSet) -> None:
    """The copied ``config.json``'s id2label must agree with the manifest's labels."""
    if not config_name:
        return
    try:
        id2label = json.loads((folder / config_name).read_text(encoding="utf-8")).get("id2label") or {}
        id2label = {int(k): v for k, v in id2label.items()}
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError, AttributeError) as exc:
        raise TextxferError(f"{folder / config_name}: unreadable ({exc}); export the model again") from None
    if id2label and id2label != dict(enumerate(labels.names)):
        raise TextxferError(f"{folder}: config.json's id2label {id2label} does not match the manifest's labels "
                            f"{list(labels.names)}; the folder is inconsistent")
