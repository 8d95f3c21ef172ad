"""Resolve a model name (bundled encoder, local folder or hub id) and load it for classification."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from textxfer.core.manifest import MANIFEST_NAME
from textxfer.data.labels import LabelSet
from textxfer.errors import TextxferError
from textxfer.transformer.encoding import OFFSET_POSITION_MODELS


def resolve_model(name: str) -> str:
    """A local folder path for folders and bundled names; hub ids are returned unchanged.

    An existing local folder wins over a bundled name of the same spelling.
    """
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise TextxferError(f"{name}: a folder without config.json is not a Hugging Face model folder")
        return str(path)
    from textxfer.transformer import bundled

    if bundled.is_bundled(name):
        return str(bundled.resolve_bundled(name))
    if path.suffix or name.startswith((".", "/", "~")):
        raise TextxferError(f"{name}: no such model folder")
    return name


def _label_maps(labels: LabelSet) -> dict:
    """The label entries of the model's config; a multi-label set makes transformers' classification models train
    with binary cross-entropy on sigmoid outputs (``problem_type``)."""
    maps = {"num_labels": len(labels), "id2label": dict(enumerate(labels.names)),
            "label2id": {name: i for i, name in enumerate(labels.names)}}
    return maps | ({"problem_type": "multi_label_classification"} if labels.multi_label else {})


PICKLE_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
SAFE_WEIGHT_SUFFIXES = (".safetensors", ".safetensors.index.json")
_CODE_CONFIGS = ("config.json", "tokenizer_config.json")


def _read_json(path: Path) -> dict:

    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TextxferError(f"{path}: unreadable ({str(exc).splitlines()[0][:160]})") from None
    return value if isinstance(value, dict) else {}


def _hub_file(name: str, filename: str) -> Path | None:
    """A file of hub model ``name`` from the local cache (None when not cached)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(name, filename)
    except Exception:  # an id that is not a valid repo id: transformers reports it later
        return None
    return Path(found) if isinstance(found, str) else None


def check_untrusted_model(source: str, trust_remote_code: bool = False, allow_pickle_weights: bool = False,
                          local: bool = True, saved: bool = False) -> None:
    """Refuse, as one line, a model that would run code it ships unless the user opted in explicitly.

    Checks ``auto_map`` (remote code) in config.json / tokenizer_config.json, a ``transformers_weights``
    entry naming a non-safetensors file, and (local folders) weights present only as pickle files.
    ``saved``: a textxfer model folder, for which no opt-in exists (the message says so).
    """
    folder = Path(source)
    remote_fix = ("textxfer never runs code from a saved model folder" if saved
                  else "Pass --trust-remote-code only if you trust its authors")
    pickle_fix = ("textxfer never unpickles weights from a saved model folder" if saved
                  else "Pass --allow-pickle-weights only if you trust its authors")
    configs = [(folder / n if local else _hub_file(source, n)) for n in _CODE_CONFIGS]
    for path in configs:
        if path is None or not path.is_file():
            continue
        config = _read_json(path)
        if config.get("auto_map") and not trust_remote_code:
            raise TextxferError(f"{source}: {path.name} asks to run Python code shipped with the model (auto_map); "
                                f"refusing. {remote_fix}")
        explicit = config.get("transformers_weights")
        if explicit is not None and not allow_pickle_weights and not (
                isinstance(explicit, str) and explicit.endswith(SAFE_WEIGHT_SUFFIXES)):
            raise TextxferError(f"{source}: {path.name} names non-safetensors weights {explicit!r} (pickle can run "
                                f"code); refusing. {pickle_fix}")
    if local and not allow_pickle_weights:
        names = [p.name for p in folder.iterdir() if p.is_file()]
        has_safe = any(n.endswith(SAFE_WEIGHT_SUFFIXES) for n in names)
        pickled = sorted(n for n in names if n.endswith(PICKLE_WEIGHT_SUFFIXES)
                         or n.endswith(tuple(s + ".index.json" for s in PICKLE_WEIGHT_SUFFIXES)))
        if pickled and not has_safe:
            raise TextxferError(f"{source}: only pickle weights ({', '.join(pickled)}), which can run code when "
                                f"loaded; refusing. {pickle_fix}")


def load_for_training(name: str, labels: LabelSet, trust_remote_code: bool = False,
                      allow_pickle_weights: bool = False):
    """``(tokenizer, model, source)``: a fresh classification head on the encoder ``name``.

    Safetensors weights only and no code shipped with the model, unless ``allow_pickle_weights`` /
    ``trust_remote_code`` say otherwise.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    source = resolve_model(name)
    is_local = Path(source).is_dir()
    check_untrusted_model(source, trust_remote_code, allow_pickle_weights, local=is_local)
    safety = {"trust_remote_code": bool(trust_remote_code),
              "use_safetensors": None if allow_pickle_weights else True}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=bool(trust_remote_code))
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # "newly initialized classifier weights" is expected here
        try:
            model = AutoModelForSequenceClassification.from_pretrained(source, **safety, **_label_maps(labels))
        finally:
            hf_logging.set_verbosity(verbosity)
    except (OSError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        hint = ""
        if not allow_pickle_weights and "safetensors" in str(exc):
            hint = "; textxfer loads safetensors weights only unless you pass --allow-pickle-weights"
        if "trust_remote_code" in str(exc) and not trust_remote_code:
            raise TextxferError(f"{name}: the model needs Python code shipped with it; refusing. Pass "
                                "--trust-remote-code only if you trust its authors") from None
        if is_local:
            raise TextxferError(f"{source}: cannot load the model or tokenizer ({first[:200]}){hint}") from None
        raise TextxferError(
            f"cannot load {name!r}: not a local folder, a bundled encoder, or a hub model available offline "
            f"({first[:160]}){hint}. Fix: pass a local folder, download it once while online "
            f"(it is then cached), or use a bundled encoder (`textxfer models`)"
        ) from None
    return tokenizer, model, name


def load_saved(folder: Path, labels: LabelSet):
    """``(tokenizer, model)`` from a saved run folder; the label maps must match the manifest.

    Never runs code from the folder: safetensors weights only, and a config asking for remote code is refused.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    check_untrusted_model(str(folder), trust_remote_code=False, allow_pickle_weights=False, local=True, saved=True)
    if not any((Path(folder) / n).is_file() for n in ("model.safetensors", "model.safetensors.index.json")):
        raise TextxferError(f"{folder}: no model.safetensors; textxfer loads saved models from safetensors only "
                            "(never pickle .bin files); re-train or restore the folder")
    try:
        with quiet_progress():  # a "Loading weights" bar on every load is noise for a saved model
            tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
            model = AutoModelForSequenceClassification.from_pretrained(str(folder), local_files_only=True,
                                                                       use_safetensors=True,
                                                                       trust_remote_code=False)
    except (OSError, ValueError) as exc:
        raise TextxferError(f"{folder}: cannot load the fine-tuned model ({str(exc).splitlines()[0]})") from None
    from textxfer.transformer import pooling

    pooling.restore(model)  # mean pooling, when config.json records it
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


def check_saved_config(folder: Path, manifest: dict) -> None:
    """A fine-tuned or ONNX model: ``config.resolved_max_length`` a usable input length for the model, and as many
    labels as the model has outputs (both read from the ``config.json`` the manifest lists); one line otherwise."""
    path = folder / MANIFEST_NAME

    def refuse(problem: str) -> None:
        raise TextxferError(f"{path}: inconsistent manifest ({problem}); re-train or restore the folder")

    names, config, config_file = manifest["labels"]["names"], manifest.get("config") or {}, manifest["files"]["config"]
    length = config.get("resolved_max_length")
    if length is not None and (not isinstance(length, int) or isinstance(length, bool) or length < 1):
        raise TextxferError(f"{path}: corrupt manifest ('config.resolved_max_length' must be a whole number ≥ 1 or "
                            f"null, got {length!r:.40}); re-train or restore the folder")
    try:
        model_config = json.loads((folder / config_file).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TextxferError(f"{folder / config_file}: unreadable model config ({str(exc).splitlines()[0][:120]}); "
                            "re-train or restore the folder") from None
    if not isinstance(model_config, dict):
        raise TextxferError(f"{folder / config_file}: unreadable model config (expected a JSON object); "
                            "re-train or restore the folder")
    id2label = model_config.get("id2label")
    if not (isinstance(id2label, dict) and id2label):
        refuse(f"files.config {config_file} has no id2label, so the model's number of outputs cannot be checked "
               f"against the {len(names)} labels.names")
    if len(id2label) != len(names):
        refuse(f"labels.names has {len(names)} labels but the model has {len(id2label)} outputs "
               f"(files.config {config_file}: id2label)")
    positions = model_config.get("max_position_embeddings")
    if length is not None and isinstance(positions, int) and not isinstance(positions, bool):
        usable = positions - 2 if model_config.get("model_type") in OFFSET_POSITION_MODELS else positions
        if length > usable:
            refuse(f"config.resolved_max_length {length} is longer than the model's {usable} positions "
                   f"(files.config {config_file}: max_position_embeddings {positions})")
