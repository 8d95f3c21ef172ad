"""``textxfer export``: turn a fine-tuned run folder into an ONNX Runtime folder (fp32 or int8).

The graph is captured with the ``torch.export``-based ONNX exporter (``torch.onnx.export(...,
dynamo=True)``) with dynamic batch and sequence axes. The older TorchScript exporter is not used as a
fallback: with transformers 5 a BERT exported that way gave logits about 5e-3 off on every shape we
tried (dynamo: about 2e-9). Every export is checked against the PyTorch model before anything is written.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import time
import warnings
from pathlib import Path
from typing import Callable, Iterator

from textxfer.errors import TextxferError
from textxfer.core.manifest import build_manifest, read_manifest, write_manifest
from textxfer.transformer.onnx_pipeline import WEIGHTS, OnnxClassifier, require_packages
from textxfer.core.runs import atomic_output_dir

QUANTIZE_CHOICES = ("int8",)
FP32_TOLERANCE = 1e-4  # max |probability difference| accepted between the fp32 graph and PyTorch
COPIED_RUN_FILES = ("split.json", "metrics.json")  # metrics are the source model's (PyTorch, fp32)
_EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf files cannot exceed 2 GB: larger weights go beside the graph
_INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
VERIFICATION_TEXTS = (
    "",
    "ok",
    "房间很干净，服务热情，下次还来。",
    "The room was small and the breakfast was cold, but the staff were friendly and helpful.",
    "位置方便，价格划算。" * 3 + " Overall a pleasant stay, would recommend to friends and family.",
    ("这家酒店的早餐非常丰富，前台服务也很周到。" * 40) + (" The end of a very long review: disappointing. " * 40),
)


def default_output(model_dir: Path, quantize: str | None) -> Path:
    """``<model_dir>-onnx`` or ``<model_dir>-onnx-int8`` beside the source folder."""
    return model_dir.with_name(f"{model_dir.name}-onnx" + (f"-{quantize}" if quantize else ""))


def export_onnx(model_dir: str | Path, output_dir: str | Path | None = None, quantize: str | None = None,
                opset: int | None = None, progress: bool = False,
                log: Callable[[str], None] | None = None) -> Path:
    """Export the fine-tuned model in ``model_dir`` to an ONNX folder and return its path.

    ``quantize="int8"`` adds dynamic int8 weight quantization. The output folder is written atomically:
    it appears only once the export has been verified (fp32: max |prob diff| vs PyTorch <= 1e-4; int8:
    the difference is logged and recorded in the manifest), and an earlier folder there survives failures.
    """
    log = log or (lambda *_: None)
    model_dir = Path(model_dir)
    if quantize is not None and quantize not in QUANTIZE_CHOICES:
        raise TextxferError(f"unknown --quantize {quantize!r}; choose one of {list(QUANTIZE_CHOICES)} or leave it out")
    manifest = read_manifest(model_dir)
    if manifest["kind"] in ("baseline", "static"):
        raise TextxferError(f"{model_dir}: a {manifest['kind']} model is already cheap to run on CPU; nothing to "
                            "export (export a `textxfer finetune` folder, or a shallow student of `textxfer distill`)")
    if manifest["kind"] == "onnx":
        raise TextxferError(f"{model_dir}: already an ONNX export; export its source model "
                            f"({manifest['config'].get('source_model', 'the fine-tuned folder')}) instead")
    if manifest["kind"] == "ensemble":
        raise TextxferError(f"{model_dir}: an ensemble is exported member by member: export its fine-tuned run(s) "
                            "with `textxfer export`, then combine the exports with `textxfer ensemble --runs …`")
    require_packages("onnx", "onnxruntime", "onnxscript")
    output = Path(output_dir) if output_dir else default_output(model_dir, quantize)
    if output.resolve() == model_dir.resolve():
        raise TextxferError(f"{output}: the export cannot replace its own source folder; choose another --output")

    from textxfer.transformer.pipeline import FinetuneClassifier

    source = FinetuneClassifier.load(model_dir, device="cpu")  # traced and checked on the CPU, as ONNX Runtime runs it
    source.model_ = source.model_.float().eval()  # the reference and the graph are both fp32 on CPU
    started = time.perf_counter()
    with atomic_output_dir(output) as staging:
        graph = staging / (WEIGHTS if quantize is None else "model-fp32.onnx")
        log(f"exporting {model_dir} to ONNX (torch.export capture; can take a minute)")
        external = _export_graph(source, graph, opset, progress, model_dir)
        if quantize is not None:
            log("quantizing weights to int8")
            _quantize_int8(graph, staging / WEIGHTS, external)
            for path in (graph, graph.with_name(graph.name + ".data")):
                path.unlink(missing_ok=True)
        used_opset = _opset_of(staging / WEIGHTS)
        files = _write_companions(source, model_dir, staging)
        config = {**manifest["config"], "runtime": "onnxruntime", "quantize": quantize,
                  "source_model": str(model_dir), "opset": used_opset, "exporter": "torch.onnx.export(dynamo=True)"}
        task = source.task_info()  # the shape and a multi-label model's thresholds travel with the graph
        calibration = {**source.calibration, "in_graph": True} if source.temperature != 1.0 else source.calibration
        write_manifest(staging, build_manifest("onnx", source.labels, config, manifest.get("data") or {}, files, task,
                                              calibration))
        log("checking the graph against the PyTorch model")
        difference = max_probability_difference(source, OnnxClassifier.load(staging))
        if quantize is None and not difference <= FP32_TOLERANCE:
            raise TextxferError(f"{model_dir}: the exported graph disagrees with the PyTorch model (max |prob diff| "
                                f"{difference:.2e} > {FP32_TOLERANCE:.0e}); nothing was written — report this model type")
        config["verified_max_prob_diff"] = float(difference)
        write_manifest(staging, build_manifest("onnx", source.labels, config, manifest.get("data") or {}, files, task,
                                              calibration))
    log(f"exported {model_dir} -> {output} ({quantize or 'fp32'}, opset {used_opset}) in "
        f"{time.perf_counter() - started:.1f} s; max |prob diff| vs PyTorch on {len(VERIFICATION_TEXTS)} "
        f"texts: {difference:.2e}")
    return output


def _write_companions(source, model_dir: Path, staging: Path) -> dict[str, str]:
    """Tokenizer, the source ``config.json`` (label maps) and the run's split/metrics; returns manifest files."""
    files = {"weights": WEIGHTS, "config": "config.json"}
    if (staging / f"{WEIGHTS}.data").exists():
        files["weights_data"] = f"{WEIGHTS}.data"
    shutil.copy2(model_dir / "config.json", staging / "config.json")
    source.tokenizer_.save_pretrained(staging)
    if (staging / "tokenizer.json").exists():
        files["tokenizer"] = "tokenizer.json"
    for name in COPIED_RUN_FILES:
        if (model_dir / name).is_file():
            shutil.copy2(model_dir / name, staging / name)
    return files


def verification_inputs(source, texts=VERIFICATION_TEXTS) -> list:
    """``texts`` as the model reads them: for a model of text pairs, each text paired with the one after it."""
    texts = list(texts)
    return list(zip(texts, texts[1:] + texts[:1])) if source.shape.pair else texts


def max_probability_difference(source, exported: OnnxClassifier) -> float:
    """Max |probability difference| of ``exported`` vs ``source`` on :data:`VERIFICATION_TEXTS` (paired, for a pair
    model)."""
    import numpy as np

    texts = verification_inputs(source)
    return float(np.abs(source.predict_proba(texts) - exported.predict_proba(texts)).max())


def _example_inputs(source) -> dict:
    """Two padded example texts of different lengths (sizes 0 and 1 would be fixed into the graph).

    The inputs are those the model accepts among the tokenizer's: ``token_type_ids`` (all zeros, as
    PyTorch assumes when none are given) only for models that take them, e.g. BERT.
    """
    import inspect

    from textxfer.transformer.encoding import padded_batches

    features = source.encode(verification_inputs(source, VERIFICATION_TEXTS[2:4]))
    _, batch = next(padded_batches(source.tokenizer_, features, 2, "pt"))
    accepted = inspect.signature(source.model_.forward).parameters
    wanted = set(batch) | set(source.tokenizer_.model_input_names)
    names = [n for n in _INPUT_NAMES if n in wanted and n in accepted]
    if "token_type_ids" in names and "token_type_ids" not in batch:
        import torch

        batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
    return {name: batch[name] for name in names}


def _logits_module(model, sigmoid: bool = False, temperature: float = 1.0):
    """Wrap a sequence-classification model so the graph has exactly one output: ``logits`` — or, ``sigmoid``
    (a multi-label model), ``probabilities``, each label's own sigmoid, computed inside the graph. The logits are
    divided by the model's calibration ``temperature`` in the graph, so any runtime reading it gets the calibrated
    probabilities."""
    import torch

    class LogitsOnly(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits
            if temperature != 1.0:
                logits = logits / temperature
            return torch.sigmoid(logits) if sigmoid else logits

    return LogitsOnly().eval()


OUTPUT_NAMES = {False: "logits", True: "probabilities"}  # by whether the model is multi-label


def _export_graph(source, path: Path, opset: int | None, progress: bool, model_dir: Path) -> bool:
    """Write the fp32 graph of ``source`` to ``path``; returns whether weights went to an external file."""
    import torch

    inputs = _example_inputs(source)
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    dynamic_shapes = {name: {0: batch, 1: sequence} for name in inputs}
    size = sum(p.numel() * p.element_size() for p in source.model_.parameters())
    external = size >= _EXTERNAL_DATA_BYTES
    try:
        with torch.no_grad(), _quiet(progress):
            multi = source.labels.multi_label
            torch.onnx.export(_logits_module(source.model_, multi, source.temperature), (), str(path), kwargs=inputs,
                              input_names=list(inputs), output_names=[OUTPUT_NAMES[multi]], dynamic_shapes=dynamic_shapes,
                              opset_version=opset, dynamo=True, external_data=external, verbose=progress or False)
    except Exception as exc:  # the exporter raises many types; show the first line
        message = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise TextxferError(f"{model_dir}: ONNX export failed ({type(exc).__name__}: {message}); "
                            "try another --opset or report this model type") from None
    return external


def _quantize_int8(fp32: Path, target: Path, external: bool) -> None:
    """Dynamic int8 quantization: int8 weights of MatMul/Gemm/Gather, activations quantized at run time.

    Choices, measured on the fine-tuned multilingual-e5-small (500 reviews, 2-core AVX2 x86 without VNNI):
    - signed weights (QInt8): dynamic quantization makes activations uint8, and u8 x s8 is ONNX Runtime's
      fast integer GEMM on x86 (VPMADDUBSW / VNNI) and ARM; QUInt8 weights take the slower u8 x u8
      kernel (33.7 vs 37.1 texts/s).
    - per-channel weight scales: closer to fp32 than one scale per tensor (argmax agreement with
      PyTorch 0.984 vs 0.968) at no measurable speed cost.
    - no reduce_range (7-bit weights): it guards against int16 saturation on CPUs without VNNI, but
      cost accuracy there (agreement 0.952) without any speed gain.
    - MatMulConstBOnly: only MatMuls with a constant weight are quantized; the activation x activation
      products in attention stay fp32 (faster and more accurate).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet(False):
        quantize_dynamic(str(fp32), str(target), weight_type=QuantType.QInt8, per_channel=True,
                         reduce_range=False, use_external_data_format=external,
                         extra_options={"MatMulConstBOnly": True})


def _opset_of(path: Path) -> int | None:
    """The default-domain opset the graph was written with."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


@contextlib.contextmanager
def _quiet(show: bool) -> Iterator[None]:
    """Silence exporter chatter (prints, warnings, torch/onnx loggers) unless ``show``."""
    if show:
        yield
        return
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "root")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
