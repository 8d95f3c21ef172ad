"""GPU benchmark (issue 11): the GPU recipe (``--batch-size auto``) against the old defaults (batch 16).

Four measurements, written to ``<output>/bench_gpu.json`` and as the BENCHMARKS.md table to
``<output>/bench_gpu.md``:

a. **Training throughput** on a BERT-base-shaped model built from ``BertConfig()`` (no download; the
   bundled all-MiniLM-L6-v2 tokenizer, whose vocabulary is BERT-base's) on ``sample_data/`` training texts:
   train samples/s, real tokens/s and model-FLOP utilisation (6 × non-embedding parameters × tokens/s over
   the GPU's dense bf16 peak) of the new defaults against ``--batch-size 16``, each for a fixed number of
   optimizer steps; plus peak GPU memory.
b. **Time to accuracy**: the wall time of the whole ``textxfer finetune`` command (bundled
   multilingual-e5-small, ``sample_data/``, default split) and its test accuracy, new defaults against
   ``--batch-size 16``.
c. **Prediction**: the saved model of (b) predicting the test texts with ``classifier.predict`` on the GPU
   (bf16 and fp32) and on the CPU of the same machine (texts/s), and the share of labels bf16 and the CPU
   give that GPU fp32 gives.
d. **Peak GPU memory** of each training and prediction run.

The old defaults keep today's other GPU settings (fused AdamW, TF32, loader workers): the comparison is of
the batch recipe. ``--smoke`` runs everything on the CPU with a tiny model and 200 training texts in under a
minute (a test runs it); its figures only show that the script works. Run on a GPU machine:
``python scripts/bench_gpu.py --output runs/bench_gpu`` (about 8 minutes on one H100/H200).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Dense bf16 peak FLOP/s by GPU name (vendor data sheets, without sparsity); an unknown GPU gets no MFU.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12}


def peak_flops(device_name: str) -> float | None:
    """The dense bf16 peak of the GPU called ``device_name`` (None when unknown, e.g. the CPU)."""
    return next((flops for name, flops in PEAK_BF16.items() if name in device_name), None)


def build_model(folder: Path, smoke: bool, texts: list[str]) -> Path:
    """A randomly initialised BERT in ``folder``: BERT-base-shaped (``BertConfig()``), tiny with ``smoke``."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, BertTokenizer

    if smoke:  # a character vocabulary of the texts: no bundled package needed
        characters = sorted({ch for text in texts for ch in text if not ch.isspace()})
        (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *characters]) + "\n",
                                          encoding="utf-8")
        tokenizer = BertTokenizer(str(folder / "vocab.txt"))
        config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=64, num_labels=2)
    else:
        from textxfer.transformer.bundled import resolve_bundled

        tokenizer = AutoTokenizer.from_pretrained(str(resolve_bundled("all-MiniLM-L6-v2")))
        config = BertConfig(vocab_size=tokenizer.vocab_size, num_labels=2)
    tokenizer.save_pretrained(str(folder))
    BertForSequenceClassification(config).save_pretrained(str(folder))
    return folder


def non_embedding_parameters(model) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if "embeddings" not in name)


def reset_peak() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None


def throughput(data, model_folder: Path, batch: int | str, steps: int, peak: float | None) -> dict:
    """(a) ``steps`` optimizer steps of ``textxfer`` fine-tuning at ``batch``; samples/s, tokens/s, MFU."""
    import numpy as np

    from textxfer.transformer.pipeline import FinetuneClassifier, FinetuneConfig

    config = FinetuneConfig(model=str(model_folder), batch_size=batch, max_steps=steps, eval_strategy="no",
                            early_stopping=0, logging_steps=10_000)
    reset_peak()
    model = FinetuneClassifier(config).fit(data.train, None, data.labels)
    stats = model.fit_stats_
    samples = stats["train_samples_per_second"]
    tokens_per_text = float(np.mean([len(ids) for ids in model.encode(data.train.texts)["input_ids"]]))
    tokens = samples * tokens_per_text
    flops = 6 * non_embedding_parameters(model.model_) * tokens
    return {"batch_size": stats["recipe"]["batch_size"], "learning_rate": stats["recipe"]["learning_rate"],
            "steps": stats["steps"], "train_samples_per_second": round(samples, 1),
            "tokens_per_second": round(tokens, 0), "tokens_per_text": round(tokens_per_text, 1),
            "model_tflops": round(flops / 1e12, 2), "mfu": round(flops / peak, 4) if peak else None,
            "peak_gib": peak_gib(), "choices": stats["recipe"]["choices"]}


def whole_command(data_path: str, output: Path, extra: list[str]) -> dict:
    """(b) ``textxfer finetune`` as a user runs it: wall time and test accuracy."""
    command = [sys.executable, "-m", "textxfer.cli", "finetune", "--data", data_path, "--output", str(output),
               "--no-progress", *extra]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    metrics = json.loads((output / "metrics.json").read_text(encoding="utf-8"))
    report = json.loads((output / "report.json").read_text(encoding="utf-8"))
    return {"command": " ".join(["textxfer", *command[3:]]), "wall_seconds": round(wall, 1),
            "test_accuracy": metrics["test"]["accuracy"], "test_macro_f1": metrics["test"]["macro_f1"],
            "batch_size": report["fit"]["recipe"]["batch_size"], "steps": report["fit"]["steps"],
            "train_samples_per_second": report["fit"].get("train_samples_per_second")}


def prediction(folder: Path, texts: list[str], cpu_texts: int) -> dict:
    """(c) texts/s of the saved model on the GPU (bf16, fp32) and the CPU, and label agreement with GPU fp32."""
    import numpy as np
    import torch

    from textxfer import classifier

    def timed(device: str, precision: str, sample: list[str]):
        model = classifier.load(folder, device=device, precision=precision)
        model.predict_proba(sample[:64])  # warm-up (kernels, allocator)
        reset_peak()
        started = time.perf_counter()
        labels = model.predict_proba(sample).argmax(axis=1)
        if device != "cpu":
            torch.cuda.synchronize()
        return labels, len(sample) / (time.perf_counter() - started), peak_gib() if device != "cpu" else None

    result = {}
    gpu = torch.cuda.is_available()
    if gpu:
        reference, rate, peak = timed("cuda", "fp32", texts)
        result["gpu_fp32"] = {"texts_per_second": round(rate, 1), "peak_gib": peak}
        labels, rate, peak = timed("cuda", "auto", texts)
        result["gpu_auto"] = {"texts_per_second": round(rate, 1), "peak_gib": peak,
                              "precision": classifier.load(folder, device="cuda").precision,
                              "label_agreement_with_fp32": round(float(np.mean(labels == reference)), 5)}
    sample = texts[:cpu_texts]
    labels, rate, _ = timed("cpu", "auto", sample)
    result["cpu"] = {"texts_per_second": round(rate, 1), "texts": len(sample), "threads": torch.get_num_threads()}
    if gpu:
        result["cpu"]["label_agreement_with_gpu_fp32"] = round(float(np.mean(labels == reference[:len(sample)])), 5)
        result["gpu_over_cpu"] = round(result["gpu_auto"]["texts_per_second"] / rate, 1)
    return result


def table(figures: dict) -> str:
    """The BENCHMARKS.md table of ``figures``."""
    a, b, c = figures["throughput"], figures["time_to_accuracy"], figures["prediction"]
    mfu = lambda f: f"{100 * f['mfu']:.1f} %" if f["mfu"] is not None else "–"  # noqa: E731
    lines = [f"device: {figures['device']}; {figures['cpu_cores']} CPU cores; torch {figures['torch']}; "
             f"{'SMOKE RUN (tiny model on the CPU: not a measurement)' if figures['smoke'] else 'measured'}", "",
             "| (a) BERT-base-shaped, sample_data texts | batch | samples/s | tokens/s | MFU (bf16 peak) | peak GiB |",
             "|---|---|---|---|---|---|"]
    for name in ("old", "new"):
        f = a[name]
        lines.append(f"| {name} defaults | {f['batch_size']} | {f['train_samples_per_second']:,} | "
                     f"{f['tokens_per_second']:,.0f} | {mfu(f)} | {f['peak_gib'] if f['peak_gib'] is not None else '–'} |")
    lines.append(f"| new / old | | {a['new']['train_samples_per_second'] / a['old']['train_samples_per_second']:.2f}× | | | |")
    lines += ["", "| (b) `textxfer finetune`, e5-small, sample_data | batch | steps | wall s | test accuracy |",
              "|---|---|---|---|---|"]
    for name in ("old", "new"):
        f = b[name]
        lines.append(f"| {name} defaults | {f['batch_size']} | {f['steps']} | {f['wall_seconds']} | {f['test_accuracy']:.4f} |")
    lines.append(f"| new / old | | | {b['new']['wall_seconds'] / b['old']['wall_seconds']:.2f}× | "
                 f"{100 * (b['new']['test_accuracy'] - b['old']['test_accuracy']):+.2f} points |")
    lines += ["", "| (c) saved model, predict | texts/s | label agreement with GPU fp32 | peak GiB |", "|---|---|---|---|"]
    if "gpu_auto" in c:
        lines.append(f"| GPU, {c['gpu_auto']['precision']} | {c['gpu_auto']['texts_per_second']:,} | "
                     f"{c['gpu_auto']['label_agreement_with_fp32']:.4f} | {c['gpu_auto']['peak_gib']} |")
        lines.append(f"| GPU, fp32 | {c['gpu_fp32']['texts_per_second']:,} | 1 | {c['gpu_fp32']['peak_gib']} |")
    agreement = c["cpu"].get("label_agreement_with_gpu_fp32")
    lines.append(f"| CPU ({c['cpu']['threads']} threads), fp32 | {c['cpu']['texts_per_second']:,} | "
                 f"{agreement if agreement is not None else '–'} | – |")
    if "gpu_over_cpu" in c:
        lines.append(f"| GPU / CPU | {c['gpu_over_cpu']}× | | |")
    return "\n".join(lines)


def smoke_data(source: Path, target: Path, rows: int) -> str:
    """The header and ``rows`` evenly spaced rows of ``source`` (sorted files keep every class) as ``target``."""
    import csv

    with open(source, encoding="utf-8", newline="") as handle:
        header, *body = list(csv.reader(handle))
    with open(target, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([header, *body[::max(1, len(body) // rows)][:rows]])
    return str(target)


def main(argv: list[str] | None = None) -> dict:
    import torch

    from textxfer.data.dataset import DataOptions, load_data

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT / "sample_data" / "reviews.csv"))
    parser.add_argument("--output", default=str(ROOT / "runs" / "bench_gpu"))
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny model, 200 training texts: checks the script")
    parser.add_argument("--old-steps", type=int, default=300, help="(a) optimizer steps at batch 16")
    parser.add_argument("--new-steps", type=int, default=100, help="(a) optimizer steps of the new defaults")
    parser.add_argument("--cpu-texts", type=int, default=1000, help="(c) texts predicted on the CPU")
    args = parser.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("bench_gpu: no GPU is visible; run it on a GPU machine, or --smoke to check the script")
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    # smoke: the few hundred texts would make --strategy auto search on validation; the full data fine-tunes
    short = ["--max-steps", "4", "--min-steps", "0", "--strategy", "freeze-embeddings"] if args.smoke else []
    if args.smoke:  # 400 rows, a few steps: the script's paths, not figures
        args.data = smoke_data(Path(args.data), output / "smoke.csv", 400)
        args.old_steps, args.new_steps, args.cpu_texts = 4, 2, 40
    data = load_data(DataOptions(data=args.data))
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    figures = {"device": device, "cpu_cores": os.cpu_count(), "torch": torch.__version__, "smoke": args.smoke,
               "python": platform.python_version()}
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as scratch:
        scratch = Path(scratch)
        (scratch / "bert").mkdir()
        folder = build_model(scratch / "bert", args.smoke, data.train.texts)
        peak = peak_flops(device)
        figures["throughput"] = {"old": throughput(data, folder, 16, args.old_steps, peak),
                                 "new": throughput(data, folder, "auto", args.new_steps, peak)}
        print("(a) done", json.dumps(figures["throughput"]), flush=True)
        model = [] if not args.smoke else ["--model", str(folder)]
        figures["time_to_accuracy"] = {
            "old": whole_command(args.data, scratch / "old", [*model, *short, "--batch-size", "16"]),
            "new": whole_command(args.data, scratch / "new", [*model, *short])}
        print("(b) done", json.dumps(figures["time_to_accuracy"]), flush=True)
        figures["prediction"] = prediction(scratch / "new", data.test.texts, args.cpu_texts)
    text = table(figures)
    print(text)
    (output / "bench_gpu.json").write_text(json.dumps(figures, indent=1, ensure_ascii=False), encoding="utf-8")
    (output / "bench_gpu.md").write_text(text + "\n", encoding="utf-8")
    return figures


if __name__ == "__main__":
    main()
