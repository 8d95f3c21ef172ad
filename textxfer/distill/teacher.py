"""The teacher's side of a distillation: its run folder, the encoder a student is made from, and its soft labels."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from textxfer.core.manifest import read_manifest
from textxfer.data.shape import TaskShape
from textxfer.errors import TextxferError

LABEL_CHUNK = 512  # texts per teacher call while labelling (a progress step)


def check_teacher(folder: str | Path) -> dict:
    """The teacher run folder's manifest; refused in one line when it is no run folder or not of single-label
    texts."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if not (folder / "split.json").is_file():
        raise TextxferError(f"--teacher {folder}: no split.json beside the model, so its split is unknown; pass a run "
                            "folder written by textxfer (finetune, baseline, ensemble, export, distill)")
    shape = TaskShape.from_dict((manifest.get("task") or {}).get("shape"))
    if not shape.single:
        raise TextxferError(f"--teacher {folder}: distillation takes single-label models of single texts; this one "
                            f"was trained on {shape.describe()}")
    return manifest


def encoder_folder(teacher: str | Path, manifest: dict) -> Path | None:
    """The fine-tuned model folder whose encoder a student starts from: the teacher itself when it is fine-tuned,
    the source of an ONNX export, an ensemble's first fine-tuned member (None: the teacher has no encoder)."""
    teacher = Path(teacher)
    kind = manifest["kind"]
    if kind == "finetune":
        return teacher
    if kind == "onnx":
        source = Path(manifest["config"].get("source_model") or "")
        return source if source.is_dir() and read_manifest(source)["kind"] == "finetune" else None
    if kind == "ensemble":
        from textxfer.ensemble.pipeline import MEMBERS_DIR

        for entry in manifest["config"].get("members") or []:
            member = teacher / MEMBERS_DIR / str(entry.get("folder"))
            found = encoder_folder(member, read_manifest(member)) if member.is_dir() else None
            if found is not None:
                return found
    return None


def soft_labels(teacher, texts: Sequence[str], progress: bool = False) -> np.ndarray:
    """The teacher's (calibrated) class probabilities for ``texts``, in chunks with a progress bar."""
    from tqdm.auto import tqdm

    texts = list(texts)
    rows = [teacher.predict_proba(texts[start:start + LABEL_CHUNK])
            for start in tqdm(range(0, len(texts), LABEL_CHUNK), desc="teacher labels", unit="chunk",
                              disable=not progress)]
    return np.vstack(rows) if rows else np.zeros((0, len(teacher.labels)))
