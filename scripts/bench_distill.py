#!/usr/bin/env python3
"""Distilled students against their teacher (issue 28): accuracy, texts/s and peak memory, on 2 CPU cores.

Per corpus (``--corpora``; ``scripts/corpora.py``: the Chinese reviews of ``sample_data/`` and the 10-topic THUCNews
headlines), on the corpus's default split (seed 42):

1. the teacher: the bundled encoder fine-tuned at ``make demo``'s budget (2,000 training texts, 1 epoch, no step
   floor) — the model a user with few labels has;
2. its soft labels for every training text. Neither corpus has 20,000 texts beyond its split, so the unlabelled
   texts are the training split without its labels (13,891 reviews, 8,000 headlines) — the teacher saw the labels of
   2,000 of them. Computed once and handed to each ``distill`` call (``teacher_labels``);
3. the students, each an ordinary ``textxfer distill`` run: ``shallow`` (every 4th layer: 3 of 12; ``--keep-every
   4 6 12`` adds ``shallow-k6`` and ``shallow-k12``, 2 layers and 1), ``static``, ``baseline``; and the int8 ONNX
   export of each shallow student (``textxfer export --quantize int8``);
4. every model loaded fresh and timed on the same texts — the test split — in this one process, after a warm-up of 8
   texts: texts/s, test accuracy, and agreement with the teacher. Ratios are against the teacher's texts/s measured
   here, in the same process.

``--rss N``: afterwards, each model's peak RSS predicting N texts (the test texts repeated to N, written once as a
CSV) through ``textxfer predict --input … --output …`` — the streaming path a nightly job would use — each in its own
process, under ``--rss-timeout`` seconds (a model that runs out of time is reported as not measured, with how far it
got). Results go to ``--output`` (``<corpus>/results.json``, ``<corpus>/rss.json``); finished runs are reused.
Run: ``python scripts/bench_distill.py [--corpora reviews thucnews] [--rss 100000] [--report-only]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import corpora  # noqa: E402

STUDENTS = ("shallow", "static", "baseline")
DEFAULT_EVERY = 4  # DistillConfig's --keep-every


def shallow_name(every: int) -> str:
    return "shallow" if every == DEFAULT_EVERY else f"shallow-k{every}"


def model_names(everies: list[int]) -> list[str]:
    """The folders measured: the teacher, each shallow student and its int8 export, the static and baseline ones."""
    shallow = [name for every in everies for name in (shallow_name(every), f"{shallow_name(every)}-int8")]
    return ["teacher", *shallow, "static", "baseline"]


def finished(folder: Path) -> bool:
    return (folder / "metrics.json").is_file() and (folder / "textxfer.json").is_file()


def build(name: str, output: Path, everies: list[int], log=print) -> Path:
    """Teacher, students and export of corpus ``name`` under ``output/<name>`` (finished ones reused)."""
    from textxfer.data.dataset import DataOptions, load_data
    from textxfer.distill.students import DistillConfig, distillation_texts
    from textxfer.evaluation.distillation import distill
    from textxfer.distill.teacher import soft_labels
    from textxfer.evaluation.runner import run
    from textxfer.registry import load
    from textxfer.transformer.export import export_onnx
    from textxfer.transformer.pipeline import FinetuneClassifier, FinetuneConfig

    root = output / name
    root.mkdir(parents=True, exist_ok=True)
    teacher = root / "teacher"
    if not finished(teacher):
        log(f"{name}: training the teacher")
        run(FinetuneClassifier(FinetuneConfig(seed=42, max_train_samples=2000, epochs=1, min_steps=0)),
            DataOptions(data=str(corpora.build(name))), teacher, progress=False, log=log)
    labels_file = root / "teacher-labels.npy"
    if not labels_file.is_file():
        data = load_data(DataOptions(split=str(teacher / "split.json")))
        texts, _ = distillation_texts(data)
        started = time.perf_counter()
        np.save(labels_file, soft_labels(load(teacher), texts, progress=True))
        (root / "teacher-labels.json").write_text(json.dumps({"texts": len(texts), "seconds": round(
            time.perf_counter() - started, 1)}), encoding="utf-8")
    targets = np.load(labels_file)
    jobs = [(shallow_name(every), "shallow", every) for every in everies]
    jobs += [(student, student, DEFAULT_EVERY) for student in STUDENTS if student != "shallow"]
    for folder, student, every in jobs:
        if not finished(root / folder):
            log(f"{name}: distilling the {folder} student")
            started = time.perf_counter()
            distill(DistillConfig(teacher=str(teacher), student=student, keep_every=every), DataOptions(),
                    root / folder, progress=True, log=log, teacher_labels=targets)
            log(f"{name}: {folder} in {time.perf_counter() - started:.0f} s")
        if student == "shallow" and not (root / f"{folder}-int8" / "textxfer.json").is_file():
            export_onnx(root / folder, root / f"{folder}-int8", quantize="int8", log=log)
    return root


def measure(name: str, root: Path, everies: list[int], log=print) -> dict:
    """Each model's texts/s, accuracy and agreement with the teacher on the test split, loaded in this process."""
    from textxfer.data.dataset import DataOptions, load_data
    from textxfer.registry import load

    data = load_data(DataOptions(split=str(root / "teacher" / "split.json")))
    texts, truth = data.test.texts, data.labels.targets(data.test.labels)
    results, teacher_predicted = {}, None
    for model_name in model_names(everies):
        folder = root / model_name
        if not (folder / "textxfer.json").is_file():
            continue
        model = load(folder, device="cpu")
        model.predict_proba(texts[:8])
        started = time.perf_counter()
        predicted = model.predict_proba(texts).argmax(axis=1)
        seconds = time.perf_counter() - started
        if model_name == "teacher":
            teacher_predicted = predicted
        report = folder / "report.json"
        fit = json.loads(report.read_text(encoding="utf-8")) if report.is_file() else {}
        results[model_name] = {
            "kind": model.kind, "texts_per_second": round(len(texts) / seconds, 1), "seconds": round(seconds, 2),
            "accuracy": round(float(np.mean(predicted == truth)), 4),
            "agreement_with_teacher": round(float(np.mean(predicted == teacher_predicted)), 4),
            "fit_seconds": (fit.get("timing") or {}).get("fit_seconds"),
            "size_mib": round(sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20, 1)}
        log(f"{name} · {model_name}: {results[model_name]}")
        del model
    for entry in results.values():
        entry["speed_vs_teacher"] = round(entry["texts_per_second"] / results["teacher"]["texts_per_second"], 1)
        entry["points_vs_teacher"] = round(100 * (entry["accuracy"] - results["teacher"]["accuracy"]), 2)
    record = {"corpus": name, "test_texts": len(texts), "torch_threads": _threads(), "models": results}
    (root / "results.json").write_text(json.dumps(record, indent=1), encoding="utf-8")
    return record


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def rss(name: str, root: Path, count: int, timeout: int, everies: list[int], only: list[str] | None = None,
        log=print) -> dict:
    """Peak RSS of ``textxfer predict`` over ``count`` texts for every model (or those in ``only``, merged into the
    earlier ``rss.json``), each in its own process."""
    import csv

    from textxfer.data.dataset import DataOptions, load_data

    data = load_data(DataOptions(split=str(root / "teacher" / "split.json")))
    source = root / f"predict-{count}.csv"
    if not source.is_file():
        with source.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text"])
            for i in range(count):
                writer.writerow([data.test.texts[i % len(data.test)]])
    earlier = root / "rss.json"
    record = json.loads(earlier.read_text(encoding="utf-8"))["models"] if only and earlier.is_file() else {}
    for model_name in model_names(everies):
        folder = root / model_name
        if not (folder / "textxfer.json").is_file() or (only and model_name not in only):
            continue
        target = root / f"predicted-{model_name}.csv"
        command = [sys.executable, "-c", CHILD, str(folder), str(source), str(target), str(timeout)]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        lines = done.stdout.strip().splitlines()
        if not lines:
            raise SystemExit(f"{model_name}: {done.stderr[-2000:]}")
        record[model_name] = {**json.loads(lines[-1]), "wall_seconds": round(time.perf_counter() - started, 1)}
        target.unlink(missing_ok=True)
        log(f"{name} · {model_name} · {count:,} texts: {record[model_name]}")
    (root / "rss.json").write_text(json.dumps({"texts": count, "models": record}, indent=1), encoding="utf-8")
    return record


# Runs `textxfer predict --input SOURCE --output TARGET` in this process (a thread watches the time), then prints
# its peak RSS (VmHWM) and how many rows were written.
CHILD = """
import json, sys, threading, time, os
folder, source, target, timeout = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
started = time.perf_counter()
def rows_written():  # the finished file, or the temporary one predict writes before renaming it
    import glob
    for path in [target, *glob.glob(os.path.join(os.path.dirname(target), "." + os.path.basename(target) + ".tmp-*"))]:
        try:
            with open(path, encoding="utf-8") as handle:
                return max(sum(1 for _ in handle) - 1, 0)
        except OSError:
            continue
    return 0
def peak_mib():  # VmHWM: this process's own peak (ru_maxrss keeps the parent's peak across fork and exec)
    with open("/proc/self/status") as handle:
        return round(int(next(line for line in handle if line.startswith("VmHWM:")).split()[1]) / 1024)
def watch():
    time.sleep(timeout)
    print(json.dumps({"finished": False, "rows_done": rows_written(), "seconds": round(time.perf_counter() - started, 1),
                      "peak_rss_mib": peak_mib()}), flush=True)
    os._exit(0)
threading.Thread(target=watch, daemon=True).start()
from textxfer.cli import main
code = main(["predict", "--model", folder, "--input", source, "--output", target, "--device", "cpu"])
print(json.dumps({"finished": code == 0, "rows_done": rows_written(), "seconds": round(time.perf_counter() - started, 1),
                  "peak_rss_mib": peak_mib()}), flush=True)
"""


def table(records: list[dict], memory: dict) -> str:
    lines = ["| corpus | model | kind | test accuracy | vs teacher (points) | agreement with teacher | texts/s | "
             "× teacher | size (MiB) | peak RSS, 100k texts (MiB) |", "|" + "---|" * 10]
    for record in records:
        for name, m in record["models"].items():
            peak = (memory.get(record["corpus"]) or {}).get(name)
            shown = ("not measured" if peak is None else f"{peak['peak_rss_mib']:,}" if peak["finished"]
                     else f"{peak['peak_rss_mib']:,} after {peak['rows_done']:,} rows (stopped at {peak['seconds']:.0f} s)")
            lines.append(f"| {record['corpus']} | {name} | {m['kind']} | {m['accuracy']:.4f} | {m['points_vs_teacher']:+.2f} "
                         f"| {m['agreement_with_teacher']:.3f} | {m['texts_per_second']:,.0f} | {m['speed_vs_teacher']:.1f} "
                         f"| {m['size_mib']} | {shown} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", nargs="+", default=["reviews", "thucnews"])
    parser.add_argument("--output", default=str(ROOT / "runs" / "bench_distill"))
    parser.add_argument("--rss", type=int, default=0, help="also measure peak RSS predicting this many texts")
    parser.add_argument("--rss-timeout", type=int, default=900)
    parser.add_argument("--rss-only", nargs="+", help="measure the peak RSS of these models alone (no training, no "
                                                      "timing), merged into the earlier rss.json")
    parser.add_argument("--keep-every", type=int, nargs="+", default=[DEFAULT_EVERY],
                        help="shallow students to make: every k-th layer kept (4: the default student)")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    output = Path(args.output)
    records, memory = [], {}
    for name in args.corpora:
        root = output / name
        if args.rss_only:
            rss(name, root, args.rss, args.rss_timeout, args.keep_every, args.rss_only)
        elif not args.report_only:
            build(name, output, args.keep_every)
            measure(name, root, args.keep_every)
            if args.rss:
                rss(name, root, args.rss, args.rss_timeout, args.keep_every)
        if (root / "results.json").is_file():
            records.append(json.loads((root / "results.json").read_text(encoding="utf-8")))
        if (root / "rss.json").is_file():
            memory[name] = json.loads((root / "rss.json").read_text(encoding="utf-8"))["models"]
    print(table(records, memory))


if __name__ == "__main__":
    main()
