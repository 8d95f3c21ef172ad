"""Output folders written atomically: build in a temporary sibling, then rename into place."""

from __future__ import annotations

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
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=parent))
    except OSError as exc:
        raise TextxferError(f"{parent}: cannot write the output folder here ({exc.strerror}); choose another --output") from None
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    previous = None
    if target.exists():
        previous = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=parent))
        os.replace(target, previous / target.name)
    os.replace(staging, target)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)
