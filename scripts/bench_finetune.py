"""Benchmark the fine-tuning recipe against the seed articles' naive set-up, in one run.

Both fine-tune the same encoder (default: the bundled multilingual-e5-small) on the same split of
``sample_data/reviews.csv`` for the same number of optimizer steps and are scored by the shared scorer:

- recipe: ``textxfer``'s pipeline (``FinetuneConfig`` defaults unless overridden below: word embeddings
  frozen, dynamic padding, length grouping, max length from the data, head-tail long texts);
- naive: ``padding="max_length"`` at 128 tokens, no length grouping, every parameter trainable, plain
  ``Trainer`` defaults otherwise (batch size and learning rate as the recipe's).

Prints train samples/s of both, their ratio, test accuracy and macro-F1, and wall time.
``--recipe KEY=VALUE`` overrides a ``FinetuneConfig`` field (repeatable); ``--naive-steps N`` caps the
naive run (throughput only — its accuracy is then not comparable); ``--skip-naive`` drops it.
Run: ``python scripts/bench_finetune.py [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
NAIVE_MAX_LENGTH = 128


def parse_overrides(pairs: list[str]) -> dict:
    """``["epochs=2", "strategy=full"]`` → typed values (JSON where it parses, else strings)."""
    values = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        try:
            values[key.replace("-", "_")] = json.loads(raw)
        except json.JSONDecodeError:
            values[key.replace("-", "_")] = raw
    return values


def run_recipe(data, overrides: dict) -> dict:
    """Fine-tune with textxfer's pipeline; returns figures and the number of optimizer steps."""
    from textxfer.core.config import from_dict
    from textxfer.core.metrics import score
    from textxfer.transformer.pipeline import FinetuneClassifier, FinetuneConfig

    config = from_dict(FinetuneConfig, overrides)
    started = time.perf_counter()
    model = FinetuneClassifier(config).fit(data.train, data.validation, labels=data.labels)
    fit_seconds = time.perf_counter() - started
    predicted = model.predict_proba(data.test.texts).argmax(axis=1)
    metrics = score(data.labels.encode(data.test.labels), predicted, data.labels)
    stats = model.fit_stats_
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "steps": stats["steps"],
            "train_samples_per_second": stats["train_samples_per_second"], "fit_seconds": fit_seconds,
            "train_seconds": stats["train_seconds"], "max_length": stats["max_length"],
            "precision": stats["precision"], "device": stats["device"],
            "batch_size": stats["recipe"]["batch_size"], "learning_rate": stats["recipe"]["learning_rate"],
            "best_validation_macro_f1": stats["best_validation_macro_f1"], "config": overrides,
            "errors": [(t, l) for t, l, p in zip(data.test.texts, data.test.labels, predicted)
                       if data.labels.names[p] != l]}


def run_naive(data, model_name: str, steps: int, batch_size: int, learning_rate: float, seed: int) -> dict:
    """The seed articles' way: fixed 128-token padding, random batches, everything trainable."""
    import datasets
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

    from textxfer.core.metrics import score
    from textxfer.transformer.models import resolve_model

    source = resolve_model(model_name)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=len(data.labels))

    def dataset(split):
        encoded = tokenizer(split.texts, padding="max_length", truncation=True, max_length=NAIVE_MAX_LENGTH)
        return datasets.Dataset.from_dict({**encoded, "labels": data.labels.encode(split.labels)})

    cuda = torch.cuda.is_available()
    arguments = TrainingArguments(output_dir="/tmp/textxfer-naive-bench", max_steps=steps,
                                  per_device_train_batch_size=batch_size, per_device_eval_batch_size=64,
                                  learning_rate=learning_rate, report_to="none", save_strategy="no",
                                  logging_steps=100, seed=seed, use_cpu=not cuda,
                                  bf16=cuda and torch.cuda.is_bf16_supported(), disable_tqdm=True)
    trainer = Trainer(model=model, args=arguments, train_dataset=dataset(data.train))
    started = time.perf_counter()
    result = trainer.train()
    fit_seconds = time.perf_counter() - started
    output = trainer.predict(dataset(data.test))  # random (not length-grouped) sampler: input order kept
    expected = np.asarray(data.labels.encode(data.test.labels))
    assert np.array_equal(output.label_ids, expected), "naive predictions are not in input order"
    metrics = score(expected, output.predictions.argmax(axis=1), data.labels)
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "steps": steps,
            "train_samples_per_second": result.metrics["train_samples_per_second"], "fit_seconds": fit_seconds}


def main() -> None:
    """Run the recipe and the naive reference; print and optionally save the figures."""
    from textxfer.data.dataset import DataOptions, load_data

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT / "sample_data" / "reviews.csv"))
    parser.add_argument("--recipe", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--naive-steps", type=int, help="cap the naive run's steps (throughput only)")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--show-errors", type=int, default=0, help="print this many misclassified test texts")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()

    data = load_data(DataOptions(data=args.data))
    overrides = parse_overrides(args.recipe)
    recipe = run_recipe(data, overrides)
    figures = {"recipe": recipe}
    print(f"data: {args.data} — train {len(data.train)}, test {len(data.test)}; "
          f"{os.cpu_count()} CPU cores, Python {platform.python_version()}; device {recipe['device']}, "
          f"precision {recipe['precision']}")
    if not args.skip_naive:
        from textxfer.transformer.pipeline import FinetuneConfig

        defaults = FinetuneConfig(**overrides)
        steps = min(recipe["steps"], args.naive_steps or recipe["steps"])
        # The recipe's batch and learning rate as it resolved them (--batch-size auto: 16 on the CPU).
        figures["naive"] = run_naive(data, defaults.model, steps, recipe["batch_size"], recipe["learning_rate"],
                                     defaults.seed)
    print(f"{'set-up':8} {'steps':>6} {'train samples/s':>16} {'test acc':>9} {'macro-F1':>9} {'fit s':>8}")
    for name, f in figures.items():
        print(f"{name:8} {f['steps']:6d} {f['train_samples_per_second']:16.1f} {f['accuracy']:9.4f} "
              f"{f['macro_f1']:9.4f} {f['fit_seconds']:8.1f}")
    if "naive" in figures:
        ratio = recipe["train_samples_per_second"] / figures["naive"]["train_samples_per_second"]
        print(f"throughput ratio recipe/naive: {ratio:.2f}× (target ≥ 1.5×); "
              f"accuracy difference: {recipe['accuracy'] - figures['naive']['accuracy']:+.4f} (target ≥ 0)")
    print(f"recipe: max_length {recipe['max_length']}, config {json.dumps(recipe['config'])}, "
          f"best validation macro-F1 {recipe['best_validation_macro_f1']}")
    for text, label in recipe["errors"][:args.show_errors]:
        print(f"  error — true {label}: {text[:120]}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1, ensure_ascii=False), encoding="utf-8")


if __name__ == "__main__":
    main()
