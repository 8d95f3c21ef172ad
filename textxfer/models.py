"""Resolve a model name (bundled encoder, local folder or hub id) and load it for classification."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from textxfer.errors import TextxferError
from textxfer.labels import LabelSet


def resolve_model(name: str) -> str:
    """A local folder path for folders and bundled names; hub ids are returned unchanged.

    An existing local folder wins over a bundled name of the same spelling.
    """
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise TextxferError(f"{name}: a folder without config.json is not a Hugging Face model folder")
        return str(path)
    from textxfer import bundled

    if bundled.is_bundled(name):
        return str(bundled.resolve_bundled(name))
    if path.suffix or name.startswith((".", "/", "~")):
        raise TextxferError(f"{name}: no such model folder")
    return name


def _label_maps(labels: LabelSet) -> dict:
    return {"num_labels": len(labels), "id2label": dict(enumerate(labels.names)),
            "label2id": {name: i for i, name in enumerate(labels.names)}}


def load_for_training(name: str, labels: LabelSet):
    """``(tokenizer, model, source)``: a fresh classification head on the encoder ``name``."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    source = resolve_model(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # "newly initialized classifier weights" is expected here
        try:
            model = AutoModelForSequenceClassification.from_pretrained(source, **_label_maps(labels))
        finally:
            hf_logging.set_verbosity(verbosity)
    except OSError as exc:
        if Path(source).is_dir():
            raise TextxferError(f"{source}: cannot load the model or tokenizer ({str(exc).splitlines()[0]})") from None
        raise TextxferError(
            f"cannot load {name!r}: not a local folder, a bundled encoder, or a hub model available offline "
            f"({str(exc).splitlines()[0][:160]}). Fix: pass a local folder, download it once while online "
            f"(it is then cached), or use a bundled encoder (`textxfer models`)"
        ) from None
    return tokenizer, model, name


def load_saved(folder: Path, labels: LabelSet):
    """``(tokenizer, model)`` from a saved run folder; the label maps must match the manifest."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        with quiet_progress():  # a "Loading weights" bar on every load is noise for a saved model
            tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
            model = AutoModelForSequenceClassification.from_pretrained(str(folder), local_files_only=True,
                                                                       use_safetensors=True)
    except (OSError, ValueError) as exc:
        raise TextxferError(f"{folder}: cannot load the fine-tuned model ({str(exc).splitlines()[0]})") from None
    id2label = {int(k): v for k, v in model.config.id2label.items()}
    if id2label != dict(enumerate(labels.names)):
        raise TextxferError(f"{folder}: the model's id2label {id2label} does not match the manifest's labels "
                            f"{list(labels.names)}; the folder is inconsistent")
    return tokenizer, model


@contextmanager
def quiet_progress() -> Iterator[None]:
    """Hide transformers' own progress bars (loading / writing weights) inside the block."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            hf_logging.enable_progress_bar()
