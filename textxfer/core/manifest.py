"""``textxfer.json``: the manifest saved beside every model's weights."""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from textxfer.errors import TextxferError
from textxfer.data.labels import LabelSet

MANIFEST_NAME = "textxfer.json"
FORMAT_VERSION = 1
KINDS = ("baseline", "finetune", "onnx", "ensemble", "static")  # as textxfer.registry.KINDS
# The ``files`` roles each kind writes: (required, optional). A missing required role or a role of another kind
# means the manifest was edited, or its kind or files were taken from another folder.
FILE_ROLES = {
    "baseline": ({"forest", "vectors", "vocab"}, set()),
    "finetune": ({"config", "weights"}, {"tokenizer", "trainer_log"}),
    "onnx": ({"config", "weights"}, {"tokenizer", "weights_data"}),
    "ensemble": ({"members"}, set()),
    "static": ({"table", "tokenizer"}, {"tokenizer_config"}),
}
_LIBRARIES = ("textxfer", "numpy", "scikit-learn", "gensim", "skops", "safetensors", "jieba", "rjieba",
              "evaluate", "datasets", "torch", "transformers", "accelerate")


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries a model may depend on (absent ones omitted)."""
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def build_manifest(kind: str, labels: LabelSet, config: dict, data: dict, files: dict[str, str],
                   task: dict | None = None, calibration: dict | None = None) -> dict:
    """The manifest dict for a model of ``kind``; ``files`` maps a role to a file name in the folder. ``task``
    (``ClassifierBase.task_info``): the task shape and, for multi-label models, the decision thresholds — written
    only for shapes other than single-label texts, so those manifests stay as they were. ``calibration``
    (``ClassifierBase.calibration``): the temperature ``predict_proba`` applies, and its validation figures."""
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}")
    return {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "labels": labels.to_dict(),
        "config": config,
        "data": data,
        "files": files,
        **({"task": task} if task else {}),
        **({"calibration": calibration} if calibration else {}),
        "libraries": library_versions(),
    }


def write_manifest(folder: Path, manifest: dict) -> None:
    """Write ``textxfer.json`` into ``folder``."""
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")


def read_manifest(folder: str | Path) -> dict:
    """Read and check the manifest of a model folder; every problem is a one-line error."""
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not folder.is_dir():
        raise TextxferError(f"{folder}: no such model folder")
    if not path.is_file():
        raise TextxferError(f"{folder}: no {MANIFEST_NAME} — not a textxfer model folder (train one with "
                            "`textxfer baseline` or `textxfer finetune`)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TextxferError(f"{path}: corrupt manifest ({exc}); re-train or restore the folder") from None
    if not isinstance(manifest, dict):
        raise TextxferError(f"{path}: corrupt manifest (expected a JSON object)")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise TextxferError(f"{path}: corrupt manifest (no integer format_version)")
    if version > FORMAT_VERSION:
        raise TextxferError(f"{path}: format version {version} is newer than this textxfer supports "
                            f"({FORMAT_VERSION}); upgrade textxfer (pip install -U textxfer)")
    if manifest.get("kind") not in KINDS:
        raise TextxferError(f"{path}: unknown model kind {manifest.get('kind')!r}; expected one of {list(KINDS)}")
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise TextxferError(f"{path}: corrupt manifest ('files' must map roles to file names)")
    if not isinstance(manifest.get("config", {}), dict) or not isinstance(manifest.get("data") or {}, dict):
        raise TextxferError(f"{path}: corrupt manifest ('config' and 'data' must be JSON objects)")
    base = folder.resolve()
    for name in files.values():
        if (Path(name).name != name or name in ("", ".", "..") or "\\" in name or "\0" in name
                or Path(name).is_absolute()):
            raise TextxferError(f"{path}: file name {name!r} points outside the model folder; refusing to load")
        if not (folder / name).exists():
            raise TextxferError(f"{folder}: {name} listed in the manifest is missing; re-train or restore the folder")
        if base not in (folder / name).resolve().parents:
            raise TextxferError(f"{path}: {name} is a link to a file outside the model folder; refusing to load")
    _check_labels(path, manifest.get("labels"))
    _check_consistency(path, folder, manifest)
    _check_task(path, manifest)
    _check_calibration(path, manifest.get("calibration"))
    return manifest


def _check_calibration(path: Path, calibration) -> None:
    """The ``calibration`` entry (absent in models saved before calibration): a method, and for ``temperature`` a
    positive finite temperature (a zero, negative or missing one would make every probability wrong)."""
    import math

    if calibration is None:
        return
    method = calibration.get("method") if isinstance(calibration, dict) else None
    if method not in ("temperature", "none"):
        raise TextxferError(f"{path}: corrupt manifest (calibration.method must be 'temperature' or 'none', got "
                            f"{method!r:.40}); re-train or restore the folder")
    temperature = calibration.get("temperature")
    if method == "temperature" and not (isinstance(temperature, (int, float)) and not isinstance(temperature, bool)
                                        and math.isfinite(temperature) and temperature > 0):
        raise TextxferError(f"{path}: corrupt manifest (calibration.temperature must be a positive number, got "
                            f"{temperature!r:.40}); re-train or restore the folder")


def _check_task(path: Path, manifest: dict) -> None:
    """The ``task`` entry: a shape, multi-label exactly when the label set is, and for multi-label models one
    threshold in [0, 1] per label."""
    from textxfer.data.shape import TaskShape

    task = manifest.get("task")
    if task is None:
        if manifest["labels"].get("multi_label"):
            raise TextxferError(f"{path}: inconsistent manifest (multi-label labels but no 'task' entry with their "
                                "thresholds); re-train or restore the folder")
        return
    fix = "re-train or restore the folder"
    if not isinstance(task, dict):
        raise TextxferError(f"{path}: corrupt manifest ('task' must be a JSON object); {fix}")
    try:
        shape = TaskShape.from_dict(task.get("shape"), str(path))
    except TextxferError as exc:
        raise TextxferError(f"{exc}; {fix}") from None
    if shape.multi_label != bool(manifest["labels"].get("multi_label")):
        raise TextxferError(f"{path}: inconsistent manifest (task.shape.multi_label is {shape.multi_label} but the "
                            f"label set says otherwise); {fix}")
    if shape.multi_label:
        thresholds = task.get("thresholds")
        count = len(manifest["labels"]["names"])
        if not (isinstance(thresholds, list) and len(thresholds) == count
                and all(isinstance(t, (int, float)) and not isinstance(t, bool) and 0 <= t <= 1 for t in thresholds)):
            raise TextxferError(f"{path}: corrupt manifest (task.thresholds must list {count} numbers in [0, 1], one "
                                f"per label, got {thresholds!r:.80}); {fix}")


def _check_labels(path: Path, labels) -> None:
    """The manifest's label set: ``{"names": [≥ 2 distinct non-empty strings], "kind": "str" | "int"}``."""
    names = labels.get("names") if isinstance(labels, dict) else None
    if not (isinstance(names, list) and len(names) >= 2 and all(isinstance(n, str) and n for n in names)):
        raise TextxferError(f"{path}: corrupt manifest ('labels.names' must list at least 2 label names as strings, "
                            f"got {names!r:.80}); re-train or restore the folder")
    try:
        LabelSet.from_dict(labels)
    except TextxferError as exc:
        raise TextxferError(f"{path}: corrupt manifest ({exc}); re-train or restore the folder") from None


def _whole_number(text: str) -> bool:
    """``text`` is an integer label name as textxfer writes one: ``str(int(value))`` (no '+', spaces or leading 0s)."""
    try:
        return str(int(text)) == text
    except ValueError:
        return False


def _check_consistency(path: Path, folder: Path, manifest: dict) -> None:
    """Fields that are each valid alone must agree with each other: the label kind with the label names and
    their order, the files with the kind. Each disagreement is one line naming the fields. (A kind checks its
    own files against the manifest when it loads them: a fine-tuned model's config.json in
    ``textxfer.transformer.models.check_saved_config``.)"""

    def refuse(problem: str) -> None:
        raise TextxferError(f"{path}: inconsistent manifest ({problem}); re-train or restore the folder")

    kind, files = manifest["kind"], manifest["files"]
    names, label_kind = manifest["labels"]["names"], manifest["labels"].get("kind", "str")
    if label_kind == "int":
        if not all(_whole_number(name) for name in names):
            refuse(f"labels.kind is 'int' but labels.names {names!r:.80} are not all whole numbers")
        order, rule = sorted(names, key=int), "ascending numbers"
    else:
        order, rule = sorted(names), "code-point order"
    if names != order:  # LabelSet always writes this order: another one maps class ids to the wrong labels
        refuse(f"labels.names {names!r:.80} are not in the order of labels.kind {label_kind!r} ({rule}: "
               f"{order!r:.80}), so class ids would map to the wrong labels")
    required, optional = FILE_ROLES[kind]
    missing, foreign = sorted(required - set(files)), sorted(set(files) - required - optional)
    if missing or foreign:
        problems = ([f"lacks {', '.join(f'files.{r}' for r in missing)}"] if missing else []) + \
                   ([f"lists {', '.join(f'files.{r}' for r in foreign)}"] if foreign else [])
        refuse(f"kind {kind!r} {' and '.join(problems)}; that kind's files are {sorted(required | optional)}")
