"""Where a transformer model predicts, and in which precision: ``--device`` and ``--precision`` resolved.

``auto`` means this process's GPU when one is visible — the local rank's under ``torchrun`` /
``accelerate launch`` (``LOCAL_RANK``), else ``cuda:0`` — and the CPU otherwise. On a GPU, prediction runs
under autocast in bf16 (fp16 where the GPU has no bf16) unless fp32 is asked for; the weights stay fp32,
so a model trained and then scored in one run is saved exactly as trained. On a CPU it is fp32.
"""

from __future__ import annotations

import os
from contextlib import nullcontext

from textxfer.errors import TextxferError

DEVICE_HELP = "where a fine-tuned model predicts: auto (this process's GPU when one is visible, else the CPU) | cpu | cuda | cuda:N"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def local_rank() -> int:
    """This process's rank on its machine (``LOCAL_RANK`` of torchrun / accelerate launch; 0 alone)."""
    try:
        return max(0, int(os.environ.get("LOCAL_RANK", "0")))
    except ValueError:
        return 0


def resolve(requested: str | None = "auto") -> str:
    """``"cpu"`` or ``"cuda:N"`` for ``requested`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``); a GPU that is not
    there is an error naming what is."""
    import torch

    name = "auto" if requested is None else str(requested).strip().lower()
    if name == "auto":
        if not torch.cuda.is_available():
            return "cpu"
        return f"cuda:{local_rank() % max(1, torch.cuda.device_count())}"
    if name == "cpu":
        return "cpu"
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise TextxferError(f"--device {requested}: no CUDA GPU is visible to PyTorch on this machine "
                                "(torch.cuda.is_available() is False); use --device cpu or auto")
        count = torch.cuda.device_count()
        index_text = name.partition(":")[2]
        if not index_text:
            return f"cuda:{local_rank() % max(1, count)}"
        if not index_text.isdigit() or int(index_text) >= count:
            raise TextxferError(f"--device {requested}: this machine has {count} GPU{'s' * (count != 1)} "
                                f"(cuda:0 … cuda:{count - 1}); use one of them, cuda, auto or cpu")
        return f"cuda:{int(index_text)}"
    raise TextxferError(f"unknown device {requested!r}; use auto, cpu, cuda or cuda:N")


def inference_precision(device: str, requested: str = "auto") -> str:
    """``fp32``, ``bf16`` or ``fp16`` for prediction on ``device`` (a :func:`resolve` result)."""
    if requested not in PRECISIONS:
        raise TextxferError(f"unknown precision {requested!r}; choose one of {list(PRECISIONS)}")
    if not device.startswith("cuda"):
        if requested in ("bf16", "fp16"):
            raise TextxferError(f"--precision {requested} needs a GPU; use --precision fp32 (or auto) on the CPU")
        return "fp32"
    if requested != "auto":
        return requested
    import torch

    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def autocast(device: str, precision: str):
    """A context manager running matrix products in ``precision`` on ``device`` (nothing for fp32)."""
    if precision == "fp32" or not device.startswith("cuda"):
        return nullcontext()
    import torch

    return torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
