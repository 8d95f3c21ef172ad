"""Write the model folders of tests/data/legacy_models/ through the CLI alone (so it runs on any version).

Made once, before the package was regrouped into sub-packages (issue 24), and committed with the
probabilities that version predicted: tests/test_legacy_models.py loads them with today's code and
checks that every kind still loads and predicts the same. Re-running this script replaces them with
folders written by the running version (do that only on purpose: it drops the evidence).

    python tests/data/legacy_models/make_legacy_models.py
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))
from conftest import build_tiny_bert, make_rows, write_csv  # noqa: E402

KINDS = ("baseline", "finetune", "ensemble", "onnx")
TEXTS = [text for text, _ in make_rows(40, seed=7)] + ["", "很好很好", "很差很差", "酒店 房间 a" * 30]


def textxfer(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "textxfer.cli", *args, "--no-progress"], check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    work = Path(tempfile.mkdtemp())
    data = write_csv(work / "reviews.csv", make_rows(240))
    encoder = build_tiny_bert(work / "tiny-bert")
    textxfer("baseline", "--data", str(data), "--output", str(work / "baseline"), "--vector-size", "8",
             "--epochs", "3", "--min-count", "1", "--n-estimators", "5", "--n-jobs", "1")
    textxfer("finetune", "--data", str(data), "--output", str(work / "finetune"), "--model", str(encoder),
             "--strategy", "full", "--epochs", "5", "--learning-rate", "3e-3", "--batch-size", "8",
             "--min-steps", "0", "--early-stopping", "0", "--warmup", "0", "--checkpoint-dir", str(work / "ckpt"))
    textxfer("ensemble", "--runs", str(work / "baseline"), str(work / "finetune"), "--weights", "0.3,0.7",
             "--output", str(work / "ensemble"))
    subprocess.run([sys.executable, "-m", "textxfer.cli", "export", "--model", str(work / "finetune"), "--output",
                    str(work / "onnx")], check=True, stdout=subprocess.DEVNULL)
    for kind in KINDS:
        target = HERE / kind
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(work / kind, target, ignore=shutil.ignore_patterns("*.png"))
    from textxfer import classifier

    expected = {"version": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                          cwd=HERE).stdout.strip(), "texts": TEXTS, "probabilities": {}}
    for kind in KINDS:
        model = classifier.load(HERE / kind, device="cpu")
        expected["probabilities"][kind] = model.predict_proba(TEXTS).tolist()
    (HERE / "expected.json").write_text(json.dumps(expected, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
