"""Where a contrastive step's time goes: collation, forward, backward, optimizer — and the Trainer around them.

On ``--texts`` (128) random training texts of ``sample_data/reviews.csv`` (or ``--data``) with the bundled
multilingual-e5-small, mean pooling, the "query: " prefix and the run's max length (the 99th percentile of the
texts, as ``textxfer finetune`` chooses it): ``--steps`` (30) pair steps of 16 pairs (32 texts, length-grouped like
the Trainer's sampler) timed phase by phase in a plain loop, then the same number of steps through
:func:`textxfer.transformer.contrastive.tune_body` (the ``Trainer``) for its time per step. 2 threads.
Prints a table; ``--output`` gets ``profile_contrastive.json``. Run: ``python scripts/profile_contrastive.py``.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    import torch

    from textxfer.data.labels import LabelSet
    from textxfer.transformer import contrastive, memory, pooling, text_prefix
    from textxfer.transformer.encoding import choose_max_length
    from textxfer.transformer.models import load_for_training, resolve_model
    from textxfer.transformer.pipeline import FinetuneClassifier, FinetuneConfig
    from textxfer.transformer.strategies import apply_strategy
    from textxfer.transformer.training import device_settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ROOT / "sample_data" / "reviews.csv"))
    parser.add_argument("--texts", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--output", default=str(ROOT / "runs" / "profile_contrastive"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    with open(args.data, encoding="utf-8") as handle:
        rows = random.Random(0).sample(list(csv.DictReader(handle)), args.texts)  # the file is sorted by label
    texts, names = [r["text"] for r in rows], [r["label"] for r in rows]
    labels = LabelSet.from_labels(names)
    cfg = FinetuneConfig(strategy="contrastive", pair_iterations=max(1, int(np.ceil(args.steps * 16 / (2 * len(texts))))))
    classifier = FinetuneClassifier(cfg)
    classifier.labels = labels
    classifier.tokenizer_, classifier.model_, classifier.source_ = load_for_training(cfg.model, labels)
    chosen, _ = pooling.choose("auto", cfg.model, resolve_model(cfg.model), classifier.model_)
    pooling.install(classifier.model_, chosen)
    classifier.text_prefix_, _ = text_prefix.choose("auto", cfg.model)
    classifier.max_length_, stats = choose_max_length(classifier.tokenizer_, classifier.model_.config,
                                                      text_prefix.apply(classifier.text_prefix_, texts), None)
    start = {k: v.clone() for k, v in classifier.model_.state_dict().items()}
    y = np.asarray(labels.encode(names))
    encoded = classifier.encode(texts)
    lengths = np.array([len(ids) for ids in encoded["input_ids"]])
    first, second, target = contrastive.pairs(y, cfg.pair_iterations, cfg.seed)
    order = np.argsort(-np.maximum(lengths[first], lengths[second]), kind="stable")  # length-grouped, longest first
    apply_strategy(classifier.model_, "contrastive")
    encoder = contrastive.PairEncoder(classifier.model_).train()
    optimizer = torch.optim.AdamW([p for p in encoder.parameters() if p.requires_grad], lr=cfg.pair_learning_rate)
    collate = contrastive._collator(classifier.tokenizer_, encoded)
    phases = {"collate": [], "forward": [], "backward": [], "optimizer": []}
    batches = [order[i:i + 16] for i in range(0, len(order), 16)]
    _, passes, _, _ = memory.plan(classifier, texts, 16, 2)
    rng = np.random.default_rng(0)
    tokens = []
    for step in range(args.steps):
        batch = batches[rng.integers(len(batches))]
        spent = dict.fromkeys(phases, 0.0)
        padded = 0
        for part in np.array_split(batch, passes):  # the CPU's token-budgeted passes, as tune_body runs them
            began = time.perf_counter()
            inputs = collate([{"first": int(first[i]), "second": int(second[i]), "target": float(target[i])} for i in part])
            t1 = time.perf_counter()
            loss = encoder(**inputs)["loss"] / passes
            t2 = time.perf_counter()
            loss.backward()
            t3 = time.perf_counter()
            for name, seconds in zip(("collate", "forward", "backward"), (t1 - began, t2 - t1, t3 - t2)):
                spent[name] += seconds
            padded += int(inputs["input_ids"].numel())
        t3 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad()
        spent["optimizer"] = time.perf_counter() - t3
        if step:  # the first step warms up
            for name, seconds in spent.items():
                phases[name].append(seconds)
            tokens.append(padded)
    plain = sum(np.mean(v) for v in phases.values())
    classifier.model_.load_state_dict(start)
    apply_strategy(classifier.model_, "contrastive")
    device = device_settings("fp32")
    began = time.perf_counter()
    tuned = contrastive.tune_body(classifier, texts, y, False, device)
    trainer = (time.perf_counter() - began) / max(1, tuned["steps"])
    result = {"texts": len(texts), "max_length": int(classifier.max_length_), "mean_tokens": float(lengths.mean()),
              "padded_tokens_per_step": float(np.mean(tokens)), "passes": passes, "phases": {k: float(np.mean(v)) for k, v in phases.items()},
              "plain_step": float(plain), "trainer_step": float(trainer), "trainer_steps": tuned["steps"]}
    lines = [f"{len(texts)} texts (mean {lengths.mean():.0f} tokens, max length {classifier.max_length_}), 16 pairs a step "
             f"in {passes} pass(es) ({np.mean(tokens):,.0f} padded tokens), 2 threads", "", "| phase | seconds a step | share |", "|---|---:|---:|"]
    for name, seconds in result["phases"].items():
        lines.append(f"| {name} | {seconds:.3f} | {seconds / plain:.0%} |")
    lines += [f"| plain loop, all | {plain:.3f} | 100% |",
              f"| through the Trainer (tune_body, {tuned['steps']} steps) | {trainer:.3f} | {trainer / plain:.0%} |"]
    print("\n".join(lines))
    Path(args.output).mkdir(parents=True, exist_ok=True)
    (Path(args.output) / "profile_contrastive.json").write_text(json.dumps(result, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
