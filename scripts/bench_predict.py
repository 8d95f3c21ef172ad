"""Benchmark inference: ``classifier.predict`` versus ``transformers.pipeline`` on one model, in one run.

Both run the same fine-tuned folder on the same texts (the test split of ``sample_data/reviews.csv``)
in this process, alternating, best of ``--repeats``; the predicted labels are checked to agree. Then the
folder is exported to ONNX (fp32 and int8) and each export's speed and test accuracy are reported
against the PyTorch model.

- ``pipeline``: ``pipeline("text-classification", model=folder)`` called as a user would (one text per
  forward pass, its default on CPU), with truncation at the model's max length;
- ``pipeline bs=N``: the same with ``batch_size=N`` (no length sorting, so padding to each batch's longest);
- ``classifier.predict``: textxfer's path (length-sorted batches, dynamic padding, ``inference_mode``).

Without ``--model`` a model is fine-tuned first (bundled multilingual-e5-small, ``--train-samples``
texts, 1 epoch); throughput does not depend on how well it is trained, accuracy deltas do a little.
Run: ``python scripts/bench_predict.py [--model runs/x] [--texts 600] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def best_rate(function, texts, repeats: int) -> tuple[float, object]:
    """Best texts/s over ``repeats`` calls of ``function(texts)``, and the last result."""
    best, result = 0.0, None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function(texts)
        best = max(best, len(texts) / (time.perf_counter() - started))
    return best, result


def train_quick_model(folder: Path, samples: int) -> None:
    from textxfer.data.dataset import DataOptions
    from textxfer.transformer.pipeline import FinetuneClassifier, FinetuneConfig
    from textxfer.evaluation.runner import run

    config = FinetuneConfig(epochs=1, max_train_samples=samples, checkpoint_dir=str(folder) + ".checkpoints")
    run(FinetuneClassifier(config), DataOptions(data=str(ROOT / "sample_data" / "reviews.csv")), folder, progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a fine-tuned run folder (default: fine-tune one quickly)")
    parser.add_argument("--train-samples", type=int, default=1000, help="training texts for the quick model")
    parser.add_argument("--texts", type=int, default=600, help="test texts timed (the whole test split is scored)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64, help="batch size of the batched pipeline")
    parser.add_argument("--skip-export", action="store_true")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()

    import torch
    from transformers import pipeline

    from textxfer import classifier
    from textxfer.data.dataset import DataOptions, load_data
    from textxfer.core.metrics import score

    scratch = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    folder = Path(args.model) if args.model else scratch / "model"
    if not args.model:
        print(f"fine-tuning a quick model on {args.train_samples} texts ...", flush=True)
        train_quick_model(folder, args.train_samples)
    data = load_data(DataOptions(split=str(folder / "split.json")) if (folder / "split.json").exists()
                     else DataOptions(data=str(ROOT / "sample_data" / "reviews.csv")))
    texts = data.test.texts[: args.texts]
    model = classifier.load(folder)  # textxfer's default batch size for this device
    max_length = model.max_length_
    names = list(model.labels.names)

    reference = pipeline("text-classification", model=str(folder), tokenizer=str(folder), device=-1)
    call = {"truncation": True, "max_length": max_length}
    runners = {
        "pipeline": lambda t: [r["label"] for r in reference(t, **call)],
        f"pipeline bs={args.batch_size}": lambda t: [r["label"] for r in reference(t, batch_size=args.batch_size, **call)],
        "classifier.predict": lambda t: [p.label for p in classifier.predict(t, model=model)],
    }
    for run in runners.values():  # warm-up: first calls pay one-off costs
        run(texts[:16])
    rates = {name: 0.0 for name in runners}
    labels = {}
    for _ in range(args.repeats):  # alternate, so drift in machine load hits every runner alike
        for name, run in runners.items():
            rate, labels[name] = best_rate(run, texts, 1)
            rates[name] = max(rates[name], rate)
    ours = labels["classifier.predict"]
    agreement = {name: float(np.mean([a == b for a, b in zip(labels[name], ours)])) for name in runners}
    figures = {
        "texts": len(texts), "max_length": max_length, "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
        "texts_per_second": {k: round(v, 1) for k, v in rates.items()},
        "speedup_vs_pipeline": round(rates["classifier.predict"] / rates["pipeline"], 2),
        "speedup_vs_batched_pipeline": round(rates["classifier.predict"] / rates[f"pipeline bs={args.batch_size}"], 2),
        "label_agreement_with_classifier_predict": agreement,
    }
    references = data.labels.encode(data.test.labels)
    torch_probabilities = model.predict_proba(data.test.texts)
    figures["test_accuracy"] = {"torch": score(references, torch_probabilities.argmax(axis=1), data.labels)["accuracy"]}
    if not args.skip_export:
        from textxfer.transformer.export import export_onnx

        for quantize in (None, "int8"):
            name = f"onnx-{quantize or 'fp32'}"
            started = time.perf_counter()
            exported = export_onnx(folder, scratch / name, quantize=quantize)
            export_seconds = time.perf_counter() - started
            onnx_model = classifier.load(exported)
            onnx_model.predict_proba(texts[:16])
            rate, _ = best_rate(onnx_model.predict_proba, texts, args.repeats)
            probabilities = onnx_model.predict_proba(data.test.texts)
            accuracy = score(references, probabilities.argmax(axis=1), data.labels)["accuracy"]
            figures[name] = {
                "texts_per_second": round(rate, 1), "speedup_vs_torch": round(rate / rates["classifier.predict"], 2),
                "export_seconds": round(export_seconds, 1), "test_accuracy": accuracy,
                "accuracy_change": round(accuracy - figures["test_accuracy"]["torch"], 4),
                "label_agreement_with_torch": float(np.mean(probabilities.argmax(1) == torch_probabilities.argmax(1))),
                "max_probability_difference": float(np.abs(probabilities - torch_probabilities).max()),
                "size_mib": round((exported / "model.onnx").stat().st_size / 2**20, 1),
            }
    figures["labels"] = names
    print(json.dumps(figures, indent=1, ensure_ascii=False))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1, ensure_ascii=False), encoding="utf-8")


if __name__ == "__main__":
    main()
