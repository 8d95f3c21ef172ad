"""A folder of frozen encoder features (safetensors), so head-only runs of the same model, texts and max
length encode once: ``textxfer study`` shares one between its head-only cells of a size and seed."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np

from textxfer.transformer.pooling import of as pooling_of


def key(classifier, texts: list, module) -> str:
    """A digest of everything the features depend on: the frozen weights, the head module they feed and
    the pooling, the text prefix, the tokenisation settings, the precision they are computed in (bf16 on a
    GPU) and the texts in order."""
    import torch

    digest = hashlib.blake2b(digest_size=20)
    model = classifier.model_
    name = next((n for n, m in model.named_modules() if m is module), type(module).__name__)
    pooling = pooling_of(model)
    prefix = getattr(classifier, "text_prefix_", "")
    precision = getattr(classifier, "precision_", "fp32")
    digest.update(f"{type(model).__name__}|{pooling}|{name}|{classifier.max_length_}|{classifier.config.long_text}|"
                  f"{prefix!r}|{precision}".encode())
    for parameter_name, tensor in sorted(model.state_dict().items()):
        if not parameter_name.startswith(name + ".") and parameter_name != name:  # the head's own weights don't matter
            digest.update(parameter_name.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    for text in texts:
        if isinstance(text, tuple):  # a text pair: marked, both texts in order
            digest.update(b"\2" + b"\1".join(part.encode("utf-8") for part in text))
        else:
            digest.update(text.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


def read(folder: str | Path, name: str, rows: int) -> np.ndarray | None:
    """The cached features, or None when absent or unreadable (then they are computed again)."""
    from safetensors.numpy import load_file

    path = Path(folder) / f"{name}.safetensors"
    try:
        features = load_file(str(path))["features"]
    except Exception:  # noqa: BLE001 - missing, cut-off or foreign file: recompute
        return None
    return features if len(features) == rows else None


def write(folder: str | Path, name: str, features: np.ndarray) -> None:
    """Store ``features`` atomically (a temporary file renamed into place)."""
    from safetensors.numpy import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, suffix=".part")
    os.close(handle)
    try:
        save_file({"features": np.ascontiguousarray(features)}, temporary)
        os.replace(temporary, folder / f"{name}.safetensors")
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
