"""Run ``--strategy auto``'s search: train each candidate strategy on one loaded model, keep the winner.

The candidates and the rule are :mod:`textxfer.transformer.auto_choice`'s. Work shared between candidates:
the model is loaded once and its starting weights are restored in memory between candidates (each starts
from the same pretrained body and freshly drawn head, as a run with that ``--strategy`` would); the texts
are tokenized once (``FinetuneClassifier.encode`` keeps them during a fit); head-only runs first, and its
frozen pass over the training and validation texts plus one training step timed on a batch of the user's texts
(:func:`step_seconds`) are what the budget estimates of the other candidates are made from. (An estimate from
the frozen pass alone, a fixed 3 × its cost per token for a training step, came out 2.2 × too low for
fine-tuning at 128 texts of the sample reviews: the evaluations, checkpoints and padding it left out.)
"""

from __future__ import annotations

import os
import time
from dataclasses import replace

import numpy as np

from textxfer.transformer import auto_choice, contrastive, memory
from textxfer.transformer.batch_size import nominal
from textxfer.transformer.recipe import plan
from textxfer.transformer.strategies import encoder_parts


def snapshot(model) -> dict:
    """Copies of every parameter outside the embeddings (no candidate trains those; they stay shared)."""
    embeddings, _, _ = encoder_parts(model)
    shared = {id(p) for p in embeddings.parameters()}
    return {name: p.detach().clone() for name, p in model.named_parameters() if id(p) not in shared}


def restore(model, state: dict) -> None:
    """Put ``snapshot``'s values back into ``model``."""
    import torch

    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            parameters[name].copy_(value)


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def step_seconds(classifier, texts: list[str], batch: int) -> float:
    """Seconds of one training step of ``batch`` training texts (drawn at random, seeded) through the body with its
    embeddings frozen — forward and backward, in the CPU's token-budgeted passes, the attention dropout of the run;
    the second of two tries (the first warms up). No optimizer step: the weights do not move."""
    import torch

    from textxfer.transformer.strategies import apply_strategy

    cfg, model = classifier.config, classifier.model_
    device = next(model.parameters()).device
    rows = np.random.default_rng(cfg.seed).choice(len(texts), size=min(batch, len(texts)), replace=False)
    encoded = classifier.encode(texts)
    per_pass, passes = memory.plan(classifier, texts, len(rows))[:2] if device.type == "cpu" else (len(rows), 1)
    own = memory.set_attention_dropout(model, cfg.attention_dropout)
    apply_strategy(model, "freeze-embeddings")
    model.train()
    seconds = []
    try:
        for _ in range(2):
            began = time.perf_counter()
            for part in np.array_split(rows, passes):
                inputs = classifier.tokenizer_.pad([{k: encoded[k][i] for k in encoded} for i in part], return_tensors="pt")
                inputs = {k: v.to(device) for k, v in inputs.items()}
                logits = model(**inputs).logits
                torch.nn.functional.cross_entropy(logits.float(), torch.zeros(len(part), dtype=torch.long, device=device)).backward()
            seconds.append(time.perf_counter() - began)
            model.zero_grad(set_to_none=True)
    finally:
        model.eval()
        for parameter in model.parameters():
            parameter.requires_grad = False
        memory.set_attention_dropout(model, own)
    return seconds[-1] * batch / len(rows)


def _decisions(probabilities: np.ndarray, references: np.ndarray) -> np.ndarray:
    """A candidate's validation predictions: class ids, or for multi-label ``references`` 0/1 rows at thresholds
    tuned on validation (as its finished model would have them)."""
    if references.ndim == 1:
        return probabilities.argmax(axis=1)
    from textxfer.core.thresholds import decide_tuned

    return decide_tuned(references, probabilities)


def _estimate(strategy: str, cfg, train_texts: int, measured: dict) -> float:
    """Seconds ``strategy`` should take (see :func:`auto_choice.estimate_seconds`) from ``measured``: ``step``,
    ``train_forward`` and ``validation_forward`` seconds."""
    batch = nominal(cfg.batch_size)
    tuned = plan(replace(cfg, strategy="freeze-embeddings"), train_texts)
    evaluations = (max(1, tuned["planned_steps"] // max(1, tuned["eval_steps"])) if tuned["eval_strategy"] == "steps"
                   else max(1, int(np.ceil(tuned["epochs"]))))
    return auto_choice.estimate_seconds(strategy, measured["step"], contrastive.planned_steps(train_texts, batch, cfg.pair_iterations),
                                        tuned["planned_steps"], evaluations, measured["train_forward"],
                                        measured["validation_forward"])


def search(classifier, train, validation, progress: bool, train_one):
    """Train the candidates on ``classifier`` (``train_one(classifier, train, validation, progress)`` trains one
    under ``classifier.config.strategy``), leave the winner's weights in its model; ``(log, stats)`` of the
    winner with the search in ``stats["recipe"]["search"]``."""
    import torch

    cfg, model = classifier.config, classifier.model_
    speak = int(os.environ.get("RANK", "0")) == 0
    budget = auto_choice.budget_minutes(cfg.time_budget, torch.cuda.is_available()) * 60
    train_ids, validation_ids = classifier.encode(train.inputs)["input_ids"], classifier.encode(validation.inputs)["input_ids"]
    tokens = {"train": float(sum(map(len, train_ids))), "validation": float(sum(map(len, validation_ids)))}
    references = classifier.labels.targets(validation.labels)
    start, started = snapshot(model), time.perf_counter()
    own_dropout = memory.set_attention_dropout(model, None)  # the model's own: each candidate starts from it
    results, skipped, kept, measured = [], [], {}, None
    names = auto_choice.candidates(len(train))
    waiting, position = list(names), 0
    while waiting:
        if measured is not None:  # after head-only: the others cheapest-estimated first
            waiting.sort(key=lambda name: _estimate(name, cfg, len(train), measured))
        strategy, position = waiting.pop(0), position + 1
        estimate = None if measured is None else _estimate(strategy, cfg, len(train), measured)
        left = budget - (time.perf_counter() - started)
        if estimate is not None and estimate > left:
            skipped.append({"strategy": strategy, "estimated_seconds": round(estimate, 1),
                            "why": f"estimated {_minutes(estimate)}, more than the {_minutes(max(0.0, left))} left of "
                                   f"the {_minutes(budget)} --time-budget"})
            continue
        if speak:
            print(f"auto: candidate {position} of {len(names)}, strategy {strategy}"
                  + (f" (estimated {_minutes(estimate)})" if estimate is not None else ""), flush=True)
        restore(model, start)
        memory.set_attention_dropout(model, own_dropout)  # so a candidate that trains the encoder sets and says it
        classifier.config = replace(cfg, strategy=strategy)
        began = time.perf_counter()
        try:
            log, stats = train_one(classifier, train, validation, progress)
            predicted = _decisions(classifier.predict_proba(validation.inputs), references)
        finally:
            classifier.config = cfg
        seconds = time.perf_counter() - began
        results.append({"strategy": strategy, "seconds": seconds, "predicted": predicted,
                        "estimated_seconds": None if estimate is None else round(estimate, 1)})
        kept[strategy] = (snapshot(model), log, stats)
        if measured is None and waiting:  # after head-only: its frozen pass over train + validation, and one timed step
            per_token = stats.get("encode_seconds", seconds) / max(1.0, tokens["train"] + tokens["validation"])
            measured = {"train_forward": per_token * tokens["train"], "validation_forward": per_token * tokens["validation"],
                        "step": step_seconds(classifier, train.inputs, nominal(cfg.batch_size))}
    chosen, details = auto_choice.winner(results, references, len(classifier.labels), cfg.seed)
    estimates = {r["strategy"]: r["estimated_seconds"] for r in results}
    for entry in details["candidates"]:
        entry["estimated_seconds"] = estimates[entry["strategy"]]
    state, log, stats = kept[chosen]
    restore(model, state)
    if chosen == "head-only":  # the encoder never trained: its saved config keeps the model's own dropout
        memory.set_attention_dropout(model, own_dropout)
    else:
        memory.set_attention_dropout(model, cfg.attention_dropout)
    details.update({"skipped": skipped, "time_budget_seconds": budget,
                    "search_seconds": round(time.perf_counter() - started, 1),
                    "measured_seconds": None if measured is None else {k: round(v, 3) for k, v in measured.items()}})
    sentence = describe(details)
    if speak:
        print(f"recipe: {sentence}", flush=True)
    recipe = {**stats["recipe"], "strategy_asked": "auto", "search": details}
    recipe["choices"] = [sentence, *recipe["choices"]]
    return log, {**stats, "recipe": recipe}


def describe(details: dict) -> str:
    """The recipe sentence of a search: each candidate's validation macro-F1 and time, the winner and why."""
    key = details["metric"].lower().replace("-", "_")
    tried = ", ".join(f"{c['strategy']} {c[key]:.4f} in {_minutes(c['seconds'])}" for c in details["candidates"])
    sentence = (f"strategy {details['winner']} chosen on validation (--strategy auto; validation {details['metric']} of each "
                f"candidate: {tried}): {details['why']}")
    if details["skipped"]:
        sentence += "; not tried: " + "; ".join(f"{s['strategy']} ({s['why']})" for s in details["skipped"])
    return sentence
