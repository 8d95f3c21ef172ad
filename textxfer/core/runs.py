"""Output folders written atomically: build in a temporary sibling, then rename into place."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Iterator

from textxfer.errors import TextxferError


def default_run_dir(kind: str) -> Path:
    """``runs/<kind>-<timestamp>`` under the current directory."""
    return Path("runs") / f"{kind}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def check_writable(target: str | Path) -> None:
    """Fail now, with a one-line error, if the folder ``target`` could not be written later.

    Called before long work (training) so that an unwritable or full destination is found in
    seconds, not after an hour; :func:`atomic_output_dir` still guards the real write.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise TextxferError(f"{target}: exists and is not a folder; choose another --output")
    parent = target.parent if str(target.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=parent) as probe:
            probe.write(b"textxfer write check")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        raise TextxferError(f"{parent}: cannot write the output folder here ({exc.strerror or exc}); "
                            "choose another --output or free some space") from None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover(target: Path) -> list[str]:
    """Tidy up after a run that was killed while writing ``target``; returns what was done.

    - a staging folder (``.<name>.tmp-<pid>-*``) whose process is gone is deleted;
    - if the kill came between moving the earlier folder aside and renaming the new one into place,
      the earlier folder (``.<name>.old-<pid>-*/<name>``) is put back.
    """
    parent = target.parent if str(target.parent) else Path(".")
    done = []
    if not parent.is_dir():
        return done
    for kind in ("tmp", "old"):
        for path in sorted(parent.glob(f".{target.name}.{kind}-*")):
            pid = path.name[len(f".{target.name}.{kind}-"):].split("-", 1)[0]
            if not pid.isdigit() or _pid_alive(int(pid)):
                continue
            kept = path / target.name
            if kind == "old" and kept.is_dir() and not target.exists():
                os.replace(kept, target)
                done.append(f"restored {target} (an earlier run was killed while replacing it)")
            shutil.rmtree(path, ignore_errors=True)
            if kind == "tmp":
                done.append(f"removed {path.name} (left by a killed run)")
    return done


@contextmanager
def atomic_output_dir(target: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``target``; on success it replaces ``target``.

    If the body raises, the temporary folder is deleted and ``target`` — possibly an earlier good
    model — is left exactly as it was. The old folder is moved aside before the rename and deleted only
    after the new one is in place.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise TextxferError(f"{target}: exists and is not a folder; choose another --output")
    parent = target.parent if str(target.parent) else Path(".")
    recover(target)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=parent))
    except OSError as exc:
        raise TextxferError(f"{parent}: cannot write the output folder here ({exc.strerror}); choose another --output") from None
    try:
        yield staging
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            raise TextxferError(f"{target}: writing failed ({exc.strerror}); nothing was replaced — free space or "
                                "choose another --output and re-run") from None
        raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    previous = None
    if target.exists():
        previous = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-{os.getpid()}-", dir=parent))
        os.replace(target, previous / target.name)
    os.replace(staging, target)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


# What a run writes beside its model (textxfer.evaluation.runner): not part of the model, so not copied with it.
PREDICTIONS = "predictions.json"
RUN_RECORDS = ("split.json", "metrics.json", "report.json", PREDICTIONS)


def link_model_files(source: Path, target: Path) -> None:
    """Put the model files of folder ``source`` (all but the run's records) into the empty folder ``target``:
    hard links where the file system allows (no extra disk; textxfer replaces files, never edits them in
    place, so a link is as good as a copy), byte copies elsewhere. A link inside ``source`` is refused."""
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if path.is_symlink():
            raise TextxferError(f"{path}: a link inside a model folder; refusing to copy it into an ensemble")
        if path.is_dir() or (len(relative.parts) == 1 and path.name in RUN_RECORDS):
            continue
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, destination)
        except OSError:
            shutil.copy2(path, destination)
