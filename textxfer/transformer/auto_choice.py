"""``--strategy auto`` as a choice on the user's own validation split: which strategies to try, and which wins.

Fixed thresholds read off one corpus did not carry over to the next (issue 25: at 128 texts the threshold
chose head-only, 1.5 points under contrastive tuning, and validation saw it). So with a validation split
and up to :data:`SEARCH_UP_TO` training texts, ``auto`` trains the candidates that fit the time budget and
keeps the one validation prefers — guarded against noise:

- **Candidates** (:func:`candidates`): ``head-only`` (feature extraction: one frozen pass, a fitted head;
  always, it is cheap and runs first), ``contrastive`` (pairs, then a fitted head) and ``freeze-embeddings``
  (fine-tuning, from :data:`FINETUNE_FROM` texts: below that it did not win on any measured curve) — each
  only when its estimated cost fits what is left of ``--time-budget``.
- **The winner** (:func:`winner`): the *cheapest* candidate whose validation macro-F1 is within one
  standard error of the best one's — the one-standard-error rule of model selection. The standard error
  is that of the macro-F1 difference between the two, from a paired bootstrap over the validation texts
  (the same resampled texts score both). A validation split of a few dozen texts has a large standard
  error, so a costlier strategy must lead by more to be chosen; ties go to the cheaper one.

This module is pure (no model): ``scripts/bench_small_data.py`` applies the same :func:`winner` to the
saved validation predictions of fixed-strategy cells, which is what ``auto`` would have trained anyway.
"""

from __future__ import annotations

import numpy as np

from textxfer.core.thresholds import micro_f1_resampled

SEARCH_UP_TO = 1000  # above this many training texts auto fine-tunes without a search. A cost bound, not a measured
# crossover: fine-tuning led head-only at 500 texts of the sample reviews (0.855 against 0.841), but on THUCNews the
# fitted head led at 500 (0.809 against 0.782, BENCHMARKS.md "Little data on three corpora"), so where it belongs
# is still to measure (at 1,000-2,000 texts a search costs head-only's pass on top of fine-tuning)
FINETUNE_FROM = 100  # fine-tuning is a candidate from this many texts (below, head-only or contrastive led)
BOOTSTRAP = 1000  # resamples of the validation texts for the standard error of a macro-F1 difference
OPTIMIZER_SHARE = 0.1  # the optimizer step and the Trainer's bookkeeping on top of a step's forward and backward
DEFAULT_BUDGET_MINUTES = {"cpu": 15.0, "gpu": 30.0}
CANDIDATE_ORDER = ("head-only", "contrastive", "freeze-embeddings")


def budget_minutes(given: float | None, on_gpu: bool) -> float:
    """``--time-budget`` in minutes: as given, else :data:`DEFAULT_BUDGET_MINUTES` for the device."""
    return float(given) if given is not None else DEFAULT_BUDGET_MINUTES["gpu" if on_gpu else "cpu"]


def searches(train_texts: int, has_validation: bool, world_size: int = 1) -> str | None:
    """None when ``auto`` searches on validation, else why it keeps the fixed rule instead."""
    if not has_validation:
        return "no validation split to choose on"
    if world_size > 1:
        return "a multi-process run (its processes must not time candidates differently)"
    if train_texts > SEARCH_UP_TO:
        return f"more than {SEARCH_UP_TO:,} training texts (the search's bound)"
    return None


def candidates(train_texts: int) -> list[str]:
    """The strategies worth trying for ``train_texts`` texts, cheapest-to-run first (head-only always first)."""
    return [s for s in CANDIDATE_ORDER if s != "freeze-embeddings" or train_texts >= FINETUNE_FROM]


def estimate_seconds(strategy: str, step_seconds: float, pair_steps: int, finetune_steps: int, evaluations: int,
                     train_forward: float, validation_forward: float) -> float:
    """Seconds a candidate should take, from a training step timed on the user's own texts (``step_seconds``: one
    step of the batch, forward and backward) and head-only's measured frozen passes over the training and validation
    texts (``train_forward``, ``validation_forward`` seconds).

    contrastive: its pair steps (twice the texts of a step each), a frozen pass over training and validation texts
    for its head and one over validation to be compared; fine-tuning: its steps (:data:`OPTIMIZER_SHARE` more for
    the optimizer), a validation pass at each evaluation and one to be compared."""
    if strategy == "head-only":
        return validation_forward
    if strategy == "contrastive":
        return pair_steps * 2 * step_seconds * (1 + OPTIMIZER_SHARE) + train_forward + 2 * validation_forward
    return finetune_steps * step_seconds * (1 + OPTIMIZER_SHARE) + (evaluations + 1) * validation_forward


def macro_f1_resampled(predicted: np.ndarray, references: np.ndarray, samples: np.ndarray, num_labels: int) -> np.ndarray:
    """Macro-F1 of each resample over the classes with at least one true text in it (as the one scorer,
    :func:`textxfer.core.metrics.score`, averages):
    ``samples`` is (resamples × texts) indices into ``predicted`` / ``references``."""
    f1, present = np.zeros(samples.shape[0]), np.zeros(samples.shape[0])
    for start in range(0, samples.shape[0], 100):  # 100 resamples at a time: memory stays small for long splits
        p, r = predicted[samples[start:start + 100]], references[samples[start:start + 100]]
        for label in range(num_labels):
            tp = np.sum((p == label) & (r == label), axis=1)
            fp = np.sum((p == label) & (r != label), axis=1)
            fn = np.sum((p != label) & (r == label), axis=1)
            f1[start:start + 100] += np.where(tp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
            present[start:start + 100] += tp + fn > 0
    return f1 / np.maximum(present, 1)


def winner(results: list[dict], references, num_labels: int, seed: int = 0) -> tuple[str, dict]:
    """``(strategy, details)`` by the one-standard-error rule.

    ``results``: per trained candidate ``{"strategy", "seconds", "predicted"}`` (validation predictions as label
    indices in the order of ``references``; for multi-label texts 0/1 ``(texts, labels)`` rows, ``references`` too).
    The best is the highest validation macro-F1 (multi-label: micro-F1); the winner is the cheapest candidate
    (fewest seconds) whose score is at least the best's minus the standard error of their difference (paired
    bootstrap). ``details``: each candidate's score, accuracy (multi-label: of whole label sets), gap to the best
    and standard error, the ``metric`` and ``why`` in words."""
    references = np.asarray(references)
    multi = references.ndim == 2
    rng = np.random.default_rng(seed)
    samples = rng.integers(0, len(references), size=(BOOTSTRAP, len(references)))
    whole = np.arange(len(references))[None, :]
    resampled = ((lambda predicted, rows: micro_f1_resampled(predicted, references, rows)) if multi else
                 (lambda predicted, rows: macro_f1_resampled(predicted, references, rows, num_labels)))
    metric, key = ("micro-F1", "micro_f1") if multi else ("macro-F1", "macro_f1")
    scored = []
    for result in results:
        predicted = np.asarray(result["predicted"])
        same = (predicted == references).all(axis=1) if multi else predicted == references
        scored.append({"strategy": result["strategy"], "seconds": float(result["seconds"]),
                       key: float(resampled(predicted, whole)[0]), "accuracy": float(np.mean(same)),
                       "resampled": resampled(predicted, samples)})
    best = max(scored, key=lambda s: (s[key], -s["seconds"]))
    for entry in scored:
        entry["gap"] = best[key] - entry[key]
        entry["standard_error"] = float(np.std(best["resampled"] - entry["resampled"], ddof=1)) if entry is not best else 0.0
        entry["within_noise"] = entry["gap"] <= entry["standard_error"]
    chosen = min((s for s in scored if s["within_noise"]), key=lambda s: s["seconds"])
    if chosen is best:
        why = (f"best validation {metric} ({best[key]:.4f})" if len(scored) == 1 else
               f"best validation {metric} ({best[key]:.4f}), ahead of each cheaper candidate by more than the "
               "noise (one standard error of the difference, paired bootstrap over the validation texts)")
    else:
        why = (f"within noise of the best, {best['strategy']} ({best[key]:.4f} against "
               f"{chosen[key]:.4f}: a gap of {chosen['gap']:.4f} ≤ one standard error, {chosen['standard_error']:.4f}), "
               "and cheaper")
    details = {"candidates": [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in s.items() if k != "resampled"}
                              for s in scored],
               "best": best["strategy"], "winner": chosen["strategy"], "why": why, "rule": "one standard error",
               "metric": metric,
               "bootstrap": BOOTSTRAP, "validation_texts": int(len(references))}
    return chosen["strategy"], details
