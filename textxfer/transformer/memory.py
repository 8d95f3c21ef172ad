"""Bounded memory of training at the model's full length (512 tokens): what a step keeps alive.

Two measured choices (BENCHMARKS.md, "Memory at 512 tokens"), both for every training path — fine-tuning
and the contrastive pair stage; scoring keeps no activations for a backward pass and stays small:

- **No dropout on the attention probabilities** (``--attention-dropout``, default 0). PyTorch's fused
  scaled-dot-product attention (transformers' ``sdpa``, its default) has no dropout on the CPU: with the
  model's own 0.1 it falls back to the plain path, which keeps every layer's full score matrix for the
  backward pass (texts × heads × 512 × 512 floats). Measured on 2 cores, multilingual-e5-small, 8 texts of
  512 tokens: peak RSS 6.3 GB and 10.9 s a step with 0.1; 2.8 GB and 4.9 s with 0 — and the same time at
  64 tokens. The hidden-state dropout (the other 0.1 in BERT's recipe) is kept.
- **Token-budgeted passes on the CPU**: a step of ``batch`` texts is run as passes of at most
  :data:`CPU_TOKENS_PER_PASS` tokens with gradient accumulation — the same optimizer step, the same texts, the
  same mean loss; only the number of texts alive at once changes. A pass is sized at the 90th percentile of the
  texts' token lengths (length-grouped batches pad to about their own longest text), and at most twice the budget
  at the run's max length (a pass of the very longest texts). 16 texts of 512 tokens: 2 passes of 8; a
  contrastive step of 16 pairs (32 texts) of 512 tokens: 4 passes of 4 pairs; the sample reviews (90th
  percentile about 110 tokens, max length 273): fine-tuning in one pass, pairs in 2 passes of 8. Sizing by the
  max length alone split those reviews' pair steps into 4 passes of 4, and passes of 8 short texts cost 1.28 ×
  the time of one pass (BENCHMARKS.md). GPUs size their batches by memory already
  (:mod:`textxfer.transformer.batch_size`).
"""

from __future__ import annotations

CPU_TOKENS_PER_PASS = 4096  # 8 texts of 512 tokens: 2.5 GB peak with the fused attention (6.2 GB without)
TYPICAL_PERCENTILE = 90  # a pass is sized by this percentile of the texts' token lengths (and at most 2 × at the max)
ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout")  # BERT/RoBERTa/XLM-R; DistilBERT/others


def set_attention_dropout(model, probability: float | None) -> float | None:
    """Set the dropout on attention probabilities of ``model`` to ``probability`` (None: leave the model's own);
    returns the model's own value before (None when the model names no such setting)."""
    import torch

    config = model.config
    key = next((k for k in ATTENTION_DROPOUT_KEYS if isinstance(getattr(config, k, None), (int, float))), None)
    before = None if key is None else float(getattr(config, key))
    if probability is None or key is None:
        return before
    setattr(config, key, float(probability))  # saved with the model: what it was trained with
    for name, module in model.named_modules():
        # transformers' attention modules keep their dropout as `dropout` (read as `.p` by the sdpa path)
        if name.endswith(("attention.self", "attention", "attn")) and isinstance(getattr(module, "dropout", None), torch.nn.Dropout):
            module.dropout.p = float(probability)
    return before


def passes(batch: int, typical_tokens: int, longest_tokens: int | None = None, budget: int | None = None) -> tuple[int, int]:
    """``(texts per pass, passes per step)`` for a step of ``batch`` texts: the largest divisor of ``batch`` whose
    pass holds at most ``budget`` tokens (default :data:`CPU_TOKENS_PER_PASS`) at ``typical_tokens`` a text, and at
    most twice that at ``longest_tokens`` a text (the worst case, a pass of the longest texts: 8,192 tokens, about
    4.5 GB; at least one text a pass)."""
    budget = CPU_TOKENS_PER_PASS if budget is None else budget
    longest = typical_tokens if longest_tokens is None else longest_tokens
    for per_pass in range(batch, 0, -1):
        fits = per_pass * typical_tokens <= budget and per_pass * longest <= 2 * budget
        if batch % per_pass == 0 and (fits or per_pass == 1):
            return per_pass, batch // per_pass
    return batch, 1


def plan(classifier, texts: list[str], batch: int, texts_per_item: int = 1) -> tuple[int, int, int, int]:
    """``(per pass, passes, typical, longest)`` for steps of ``batch`` items (a text, or a pair: ``texts_per_item``
    2) drawn from ``texts``: typical = the :data:`TYPICAL_PERCENTILE` th percentile of their token lengths (length-
    grouped batches pad to about their own longest text), longest = the run's max length."""
    import numpy as np

    lengths = [len(ids) for ids in classifier.encode(texts)["input_ids"]] or [classifier.max_length_]
    typical = texts_per_item * int(np.ceil(np.percentile(lengths, TYPICAL_PERCENTILE)))
    longest = texts_per_item * int(classifier.max_length_)
    return (*passes(batch, typical, longest), typical, longest)


def describe(batch: int, per_pass: int, typical_tokens: int, what: str = "texts") -> str | None:
    """The recipe sentence for a split step (None when the step runs in one pass)."""
    if per_pass >= batch:
        return None
    return (f"a step of {batch} {what} runs as {batch // per_pass} passes of {per_pass} (at most "
            f"{CPU_TOKENS_PER_PASS:,} tokens a pass at {typical_tokens} tokens per {what[:-1]}, the {TYPICAL_PERCENTILE}th "
            "percentile; gradients accumulated, the same step) to bound memory on the CPU")
