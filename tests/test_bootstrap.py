"""scripts/bootstrap.py: the torch source chosen in each situation (commands faked, no network), the step lines."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("bootstrap", ROOT / "scripts" / "bootstrap.py")
bootstrap = importlib.util.module_from_spec(_spec)
sys.modules["bootstrap"] = bootstrap  # dataclasses look their module up there
_spec.loader.exec_module(bootstrap)

PY = "/venv/bin/python"
CPU = "https://download.pytorch.org/whl/cpu"
TORCH_REQUIRES = "filelock\nsympy>=1.13.3\nfsspec>=0.8.5\noptree>=0.13.0; extra == \"optree\"\n"


class FakeMachine:
    """Answers the bootstrap's commands like a machine with the given torch sources would; records them."""

    def __init__(self, *, installed: str | None = None, local_wheel: bool = False, cpu_index: bool = False,
                 deps_ok: bool = True, system_torch: str | None = None) -> None:
        self.installed, self.local_wheel, self.cpu_index = installed, local_wheel, cpu_index
        self.deps_ok, self.system_torch = deps_ok, system_torch
        self.commands: list[list[str]] = []

    def __call__(self, command):
        command = list(command)
        self.commands.append(command)
        if command[1:3] == ["-c", "import torch; print(torch.__version__)"]:
            version = self.installed if command[0] == PY else self.system_torch
            return bootstrap.Result(0, f"{version}\n") if version else bootstrap.Result(1, "ModuleNotFoundError: torch")
        if command[1] == "-c" and "requires('torch')" in command[2]:
            return bootstrap.Result(0, TORCH_REQUIRES)
        if command[1:4] == ["-m", "pip", "install"]:
            return self._pip(command[4:])
        return bootstrap.Result(0, "")

    def _pip(self, arguments):
        if "--no-index" in arguments:
            if not self.local_wheel:
                return bootstrap.Result(1, "ERROR: Could not find a version that satisfies the requirement torch")
            self.installed = "2.13.0+cpu"
            return bootstrap.Result(0, "Looking in links: /opt/wheels\n"
                                       "Processing /opt/wheels/torch-2.13.0+cpu-cp311-cp311-linux_x86_64.whl\n")
        if "--index-url" in arguments:
            if not self.cpu_index:
                return bootstrap.Result(1, "WARNING: Retrying (Retry(total=0...)) NameResolutionError\nERROR: no torch")
            self.installed = "2.13.0+cpu"
            return bootstrap.Result(0, "Downloading torch-2.13.0+cpu...\n")
        return bootstrap.Result(0 if self.deps_ok else 1, "" if self.deps_ok else "ERROR: sympy: no such version")

    def pip_installs(self) -> list[list[str]]:
        return [c[4:] for c in self.commands if c[1:4] == ["-m", "pip", "install"]]


def test_torch_already_installed_is_kept_and_nothing_is_installed():
    machine = FakeMachine(installed="2.5.1+cu121")
    what = bootstrap.install_torch(PY, "torch==2.13.0", CPU, machine)
    assert what == "2.5.1+cu121 already installed (kept)"
    assert machine.pip_installs() == []


def test_local_wheel_first_without_deps_then_dependencies_from_the_configured_index():
    machine = FakeMachine(local_wheel=True, cpu_index=True)
    what = bootstrap.install_torch(PY, "torch==2.13.0", CPU, machine)
    first, deps = machine.pip_installs()
    assert "--no-index" in first and "--no-deps" in first and first[-1] == "torch==2.13.0"
    # The dependencies: torch's own requirements, extras dropped, from pip's configured index (no index flag).
    assert deps[-3:] == ["filelock", "sympy>=1.13.3", "fsspec>=0.8.5"]
    assert not {"--index-url", "--no-index", "--extra-index-url"} & set(deps)
    assert all(CPU not in " ".join(c) for c in machine.commands)  # the CPU index was never contacted
    assert "2.13.0+cpu from local wheel torch-2.13.0+cpu-cp311-cp311-linux_x86_64.whl" in what
    assert "(filelock, sympy, fsspec)" in what and "download.pytorch.org" not in what


def test_no_local_wheel_takes_torch_alone_from_the_cpu_index_with_a_short_timeout():
    machine = FakeMachine(local_wheel=False, cpu_index=True)
    what = bootstrap.install_torch(PY, "torch==2.13.0", CPU, machine)
    local, remote, deps = machine.pip_installs()
    assert "--no-index" in local
    assert remote[remote.index("--index-url") + 1] == CPU and "--no-deps" in remote
    assert int(remote[remote.index("--timeout") + 1]) <= 15 and remote[remote.index("--retries") + 1] == "1"
    assert "--index-url" not in deps and CPU not in deps  # dependencies never come from the CPU index
    assert what.startswith("2.13.0+cpu from the CPU index")


def test_neither_source_raises_one_line_saying_what_to_install_by_hand():
    machine = FakeMachine(local_wheel=False, cpu_index=False)
    with pytest.raises(bootstrap.SetupError) as caught:
        bootstrap.install_torch(PY, "torch==2.13.0", CPU, machine)
    message = str(caught.value)
    assert "\n" not in message and "torch==2.13.0" in message and "by hand" in message and CPU in message
    assert "Could not find a version" in caught.value.output and "NameResolutionError" in caught.value.output
    assert len(machine.pip_installs()) == 2  # no dependency install after a failure


def test_dependency_failure_is_reported_with_pips_output():
    machine = FakeMachine(local_wheel=True, deps_ok=False)
    with pytest.raises(bootstrap.SetupError) as caught:
        bootstrap.install_torch(PY, "torch==2.13.0", CPU, machine)
    assert "dependencies" in str(caught.value) and "sympy: no such version" in caught.value.output


@pytest.mark.parametrize("system_torch, shared", [("2.6.0+cu124", True), (None, False)])
def test_new_virtualenv_sees_the_systems_torch_only_when_there_is_one(tmp_path, system_torch, shared):
    machine = FakeMachine(system_torch=system_torch)
    what = bootstrap.create_venv(tmp_path / "venv", "/usr/bin/python3", machine)
    venv_command = next(c for c in machine.commands if c[1:3] == ["-m", "venv"])
    assert ("--system-site-packages" in venv_command) is shared
    assert ("seeing the system's torch 2.6.0+cu124" in what) is shared
    upgrade = machine.pip_installs()[-1]
    assert upgrade[-2:] == ["--upgrade", "pip"] and upgrade[upgrade.index("--retries") + 1] == "1"


def test_real_interpreter_with_torch_is_kept():
    """Not faked: this test's own interpreter imports torch, so the bootstrap keeps it and installs nothing."""
    import torch

    what = bootstrap.install_torch(sys.executable, "torch==0.0.1", "http://127.0.0.1:9/unused", bootstrap.run)
    assert what == f"{torch.__version__} already installed (kept)"


def test_step_prints_one_line_with_seconds_and_failure_shows_the_output(capsys):
    seconds = bootstrap.step("torch", lambda: "2.13.0+cpu from local wheel x.whl")
    out = capsys.readouterr().out
    assert re.fullmatch(r"setup: torch {6}2\.13\.0\+cpu from local wheel x\.whl \(\d+\.\d s\)\n", out)
    assert seconds >= 0

    def failing():
        raise bootstrap.SetupError("cannot install torch==2.13.0: …", "pip line 1\npip line 2")

    with pytest.raises(bootstrap.SetupError):
        bootstrap.step("torch", failing)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == ["pip line 1", "pip line 2",
                                         captured.err.splitlines()[-1]]
    assert re.fullmatch(r"setup: torch failed after \d+\.\d s: cannot install torch==2\.13\.0: …",
                        captured.err.splitlines()[-1])


def test_main_stops_at_the_first_failed_step_without_writing_the_stamp(tmp_path, monkeypatch, capsys):
    calls = []

    def fake_step(name, action, out=None):
        calls.append(name)
        if name == "torch":
            raise bootstrap.SetupError("no torch")
        return 0.0

    monkeypatch.setattr(bootstrap, "step", fake_step)
    stamp = tmp_path / "stamp"
    assert bootstrap.main(["--venv", str(tmp_path / "v"), "--stamp", str(stamp)]) == 1
    assert calls == ["virtualenv", "torch"] and not stamp.exists()
    calls.clear()
    monkeypatch.setattr(bootstrap, "step", lambda name, action, out=None: calls.append(name) or 0.0)
    assert bootstrap.main(["--venv", str(tmp_path / "v"), "--stamp", str(stamp), "--browser"]) == 0
    assert calls == ["virtualenv", "torch", "textxfer", "encoders", "browser"] and stamp.exists()
    assert capsys.readouterr().out.startswith("setup: ready in")


def test_browser_step_never_fails_without_root(monkeypatch):
    monkeypatch.setattr(bootstrap.shutil, "which", lambda name: "/usr/bin/apt-get" if name == "apt-get" else None)
    machine = FakeMachine()
    assert "skipped" in bootstrap.install_browser(machine, is_root=False) and machine.commands == []
    failing = lambda command: bootstrap.Result(100, "E: Unable to locate package chromium")  # noqa: E731
    assert "could not install Chromium" in bootstrap.install_browser(failing, is_root=True)
