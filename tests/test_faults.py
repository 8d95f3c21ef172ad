"""Faults: runs killed (SIGKILL) mid-epoch and mid-save, Ctrl-C, unwritable or full destinations."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from textxfer.cli import main

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def finetune_command(data: Path, model: Path, output: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "textxfer.cli", "finetune", "--data", str(data), "--model", str(model),
            "--output", str(output), "--strategy", "full", "--epochs", "5", "--learning-rate", "3e-3",
            "--batch-size", "8", "--eval-strategy", "steps", "--eval-steps", "4", "--early-stopping", "0",
            "--warmup", "0", "--no-progress", *extra]


# The signalled run waits after its first complete checkpoint (the Trainer's own save, then a sleep), so the
# signal always lands mid-run: however busy the machine, the short run cannot finish before the test has seen
# the checkpoint and sent it.
WAIT_AFTER_FIRST_CHECKPOINT = """
import sys, time
from transformers import Trainer
save = Trainer._save_checkpoint
def save_then_wait(self, *args, **kwargs):
    save(self, *args, **kwargs)
    time.sleep(600)
Trainer._save_checkpoint = save_then_wait
from textxfer.cli import main
sys.exit(main(sys.argv[1:]))
"""


def paused_after_checkpoint(command: list[str]) -> list[str]:
    """``command`` (a ``python -m textxfer.cli …`` list) run so that it waits after its first checkpoint."""
    assert command[1:3] == ["-m", "textxfer.cli"]
    return [command[0], "-c", WAIT_AFTER_FIRST_CHECKPOINT, *command[3:]]


def start_and_signal(command: list[str], checkpoints: Path, sig: int) -> subprocess.CompletedProcess:
    """Start ``command``; once a complete checkpoint exists send ``sig``; return the finished process."""
    # SIGINT at its default in the child: a suite started from a background shell (`make test &`, nohup) inherits
    # it ignored, and Python then installs no KeyboardInterrupt handler — the run ignored Ctrl-C and ran on.
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    while not list(checkpoints.glob("checkpoint-*/trainer_state.json")):
        if process.poll() is not None or time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(f"no checkpoint appeared: {process.stderr.read().decode()[-1500:]}")
        time.sleep(0.05)
    process.send_signal(sig)
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(command, process.returncode, out.decode(), err.decode())


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path, sample_csv, tiny_bert, trained_models):
    output = tmp_path / "run"
    shutil.copytree(trained_models["finetune"], output)  # an earlier good model in the output folder
    before = snapshot(output)
    killed = start_and_signal(paused_after_checkpoint(finetune_command(sample_csv, tiny_bert, output)),
                              Path(f"{output}.checkpoints"), signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    assert snapshot(output) == before  # the earlier model is untouched, nothing half-written beside it
    assert not list(tmp_path.glob(".run.tmp-*"))  # killed before saving: no staging folder either
    resumed = subprocess.run(finetune_command(sample_csv, tiny_bert, output, "--resume"), env=ENV,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    straight = subprocess.run(finetune_command(sample_csv, tiny_bert, tmp_path / "straight"), env=ENV,
                              capture_output=True, text=True, timeout=600)
    assert straight.returncode == 0, straight.stderr[-2000:]
    after = json.loads((output / "metrics.json").read_text())["test"]
    reference = json.loads((tmp_path / "straight" / "metrics.json").read_text())["test"]
    report = json.loads((output / "report.json").read_text())
    assert report["fit"]["resumed_from"]  # it really continued from a checkpoint
    assert reference["accuracy"] >= 0.9  # the run learns, so agreeing with it means something
    # within noise: at most 2 texts of the test split (counted in texts, so float rounding cannot tip it)
    assert round(abs(after["accuracy"] - reference["accuracy"]) * after["n"]) <= 2
    assert not Path(f"{output}.checkpoints").exists()  # removed after the successful run


def test_ctrl_c_stops_with_one_line_and_a_resumable_state(tmp_path, sample_csv, tiny_bert):
    output = tmp_path / "run"
    # The run waits after its first checkpoint, so the signal lands mid-run however loaded the machine. (The two
    # failures seen in fresh-clone runs — exit 0 with 5 epochs, no exit within 120 s with 1,000 — were suites
    # started from a background shell, where SIGINT is inherited ignored: start_and_signal now resets it.)
    interrupted = start_and_signal(paused_after_checkpoint(finetune_command(sample_csv, tiny_bert, output)),
                                   Path(f"{output}.checkpoints"), signal.SIGINT)
    assert interrupted.returncode == 130
    lines = [line for line in interrupted.stderr.strip().splitlines() if line.strip()]
    assert lines[-1].startswith("textxfer: interrupted") and "--resume" in lines[-1]
    assert "Traceback" not in interrupted.stderr
    assert not output.exists()
    assert list(Path(f"{output}.checkpoints").glob("checkpoint-*/trainer_state.json"))


KILL_MID_SAVE = """
import os, signal, sys
from pathlib import Path
from textxfer.core.runs import atomic_output_dir
target, when = Path(sys.argv[1]), sys.argv[2]
if when == "between-renames":
    real = os.replace
    calls = []
    def replace(a, b):
        calls.append(a)
        real(a, b)
        if len(calls) == 1:  # the earlier folder has just been moved aside
            os.kill(os.getpid(), signal.SIGKILL)
    os.replace = replace
with atomic_output_dir(target) as staging:
    (staging / "half-written.bin").write_bytes(b"x" * 1000)
    if when == "writing":
        os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("when", ["writing", "between-renames"])
def test_sigkill_mid_save_never_loses_the_earlier_model(tmp_path, trained_models, when):
    from textxfer import classifier
    from textxfer.core.runs import atomic_output_dir

    target = tmp_path / "model"
    shutil.copytree(trained_models["baseline"], target)
    before = snapshot(target)
    killed = subprocess.run([sys.executable, "-c", KILL_MID_SAVE, str(target), when], env=ENV, timeout=120)
    assert killed.returncode == -signal.SIGKILL
    assert list(tmp_path.glob(".model.*"))  # the killed process left its staging / moved-aside folder
    if when == "between-renames":
        assert not target.exists()  # killed in the window where the earlier model was moved aside
    with atomic_output_dir(target) as staging:  # the next write to this folder tidies up first
        assert snapshot(target) == before  # the earlier model is back in place, unchanged
        shutil.rmtree(staging)
        shutil.copytree(target, staging)
    assert not list(tmp_path.glob(".model.*"))
    assert snapshot(target) == before
    texts = ["很好", "很差", "房间干净，服务热情", "太吵了，很失望"]  # the restored model is the trained one
    assert classifier.load(target).predict_proba(texts).tolist() == \
        classifier.load(trained_models["baseline"]).predict_proba(texts).tolist()


TRAINING_ENTRY = {"baseline": ("textxfer.baseline.pipeline", "BaselineClassifier"),
                  "finetune": ("textxfer.transformer.pipeline", "FinetuneClassifier")}


@pytest.mark.parametrize("command", sorted(TRAINING_ENTRY))
def test_unwritable_output_fails_before_training(tmp_path, sample_csv, request, monkeypatch, capsys, command):
    import importlib

    module, name = TRAINING_ENTRY[command]
    classifier_cls = getattr(importlib.import_module(module), name)
    entered = []

    def no_training(self, *args, **kwargs):  # the training entry point: must not be reached
        entered.append(name)
        raise AssertionError(f"{name}.fit was entered before the unwritable output was refused")

    monkeypatch.setattr(classifier_cls, "fit", no_training)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    extra = ["--model", str(request.getfixturevalue("tiny_bert"))] if command == "finetune" else []
    capsys.readouterr()  # building the tiny model (first use) writes progress bars
    assert main([command, "--data", str(sample_csv), "--output", str(blocker / "run"), "--no-progress", *extra]) == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith("textxfer: error: ") and "\n" not in message
    assert f"{blocker}" in message and "cannot write the output folder here" in message
    assert entered == []


def test_disk_full_while_saving_is_one_line_and_leaves_nothing(tmp_path, sample_csv, monkeypatch, capsys,
                                                               trained_models):
    from textxfer.baseline.pipeline import BaselineClassifier

    output = tmp_path / "run"
    shutil.copytree(trained_models["baseline"], output)
    before = snapshot(output)

    def full(self, folder, data_info=None):
        (folder / "partial").write_bytes(b"x")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(BaselineClassifier, "write", full)
    assert main(["baseline", "--data", str(sample_csv), "--output", str(output), "--vector-size", "8",
                 "--min-count", "1", "--n-estimators", "5", "--n-jobs", "1", "--no-progress"]) == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert "No space left on device" in message and "nothing was replaced" in message
    assert snapshot(output) == before and not list(tmp_path.glob(".run.*"))


def test_a_rerun_compare_reuses_what_finished(tmp_path, sample_csv, tiny_bert, capsys):
    output = tmp_path / "cmp"
    argv = ["compare", "--data", str(sample_csv), "--output", str(output), "--no-progress",
            "--baseline-vector-size", "8", "--baseline-min-count", "1", "--baseline-n-estimators", "5",
            "--baseline-n-jobs", "1", "--finetune-model", str(tiny_bert), "--finetune-strategy", "full",
            "--finetune-epochs", "2", "--finetune-learning-rate", "3e-3", "--finetune-batch-size", "8",
            "--finetune-early-stopping", "0"]
    assert main(argv) == 0
    first = json.loads((output / "comparison.json").read_text())
    shutil.rmtree(output / "finetune")  # as if killed while the second pipeline was training
    (output / "comparison.json").unlink()
    capsys.readouterr()
    assert main(argv) == 0
    log = capsys.readouterr().out
    assert "baseline: reusing the finished run" in log and "finetune: training" in log
    second = json.loads((output / "comparison.json").read_text())
    assert second["models"]["baseline"]["metrics"] == first["models"]["baseline"]["metrics"]
    changed = argv + ["--baseline-n-estimators", "6"]
    assert main(changed) == 0
    assert "baseline: training" in capsys.readouterr().out  # other settings: not reused
