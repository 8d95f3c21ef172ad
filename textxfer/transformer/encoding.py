"""Turn texts into model inputs: the max-length choice and the long-text policy (truncate / head-tail)."""

from __future__ import annotations

import math
import threading
from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np

from textxfer.errors import TextxferError
from textxfer.data.tables import unicode_safe

LONG_TEXT_POLICIES = ("truncate", "head-tail")
HEAD_SHARE = 0.25  # head-tail keeps the first quarter and the last three quarters of the budget
_TOKENIZER_LOCK = threading.Lock()  # see encode()
LENGTH_SAMPLE = 4000  # texts measured to choose --max-length automatically
MIN_AUTO_LENGTH = 16


# RoBERTa-style position ids start after the padding index: their table is 2 longer than the usable length.
OFFSET_POSITION_MODELS = ("roberta", "xlm-roberta", "camembert")


def model_max_length(tokenizer, config) -> int:
    """The longest input the model accepts (position embeddings, or the tokenizer's own limit)."""
    limits = [getattr(config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    usable = [int(v) for v in limits if isinstance(v, int) and 0 < v < 1_000_000]
    limit = min(usable) if usable else 512
    if getattr(config, "model_type", "") in OFFSET_POSITION_MODELS and limit == getattr(config, "max_position_embeddings", -1):
        limit -= 2
    return limit


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide transformers' "sequence longer than the maximum" warning: untruncated lengths are wanted
    here and cut to ``max_length`` afterwards."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)


def token_lengths(tokenizer, texts: Sequence) -> np.ndarray:
    """Token counts including special tokens, for at most ``LENGTH_SAMPLE`` evenly spaced texts (or ``(text, second
    text)`` pairs, counted as the one input they are encoded into)."""
    step = max(1, math.ceil(len(texts) / LENGTH_SAMPLE))
    sample = list(texts[::step])
    with _quiet_transformers():
        if sample and isinstance(sample[0], tuple):
            encoded = tokenizer([a for a, _ in sample], [b for _, b in sample], add_special_tokens=True,
                                truncation=False)["input_ids"]
        else:
            encoded = tokenizer(sample, add_special_tokens=True, truncation=False)["input_ids"]
    return np.array([len(ids) for ids in encoded])


def choose_max_length(tokenizer, config, texts: Sequence, requested: int | None) -> tuple[int, dict]:
    """``requested`` if given, else the 99th percentile of the token lengths of ``texts`` (or pairs), capped at the
    model's limit. Also returns how many of ``texts`` are longer than the choice (truncated)."""
    limit = model_max_length(tokenizer, config)
    lengths = token_lengths(tokenizer, texts)
    if requested is not None:
        if requested < 4:
            raise TextxferError(f"--max-length must be at least 4, got {requested}")
        chosen = min(requested, limit)
    else:
        chosen = int(min(limit, max(MIN_AUTO_LENGTH, np.percentile(lengths, 99)))) if len(lengths) else limit
    longer = float((lengths > chosen).mean()) if len(lengths) else 0.0
    return chosen, {"max_length": chosen, "model_limit": limit, "p99_tokens": int(np.percentile(lengths, 99)) if len(lengths) else 0,
                    "share_truncated": round(longer, 4)}


def encode(tokenizer, texts: Sequence, max_length: int, policy: str, prefix: str = "") -> dict[str, list[list[int]]]:
    """Token ids (with special tokens) of ``prefix`` + each text, no longer than ``max_length``, by ``policy``.

    ``truncate`` keeps the beginning. ``head-tail`` keeps the first quarter and the last three quarters
    of the token budget: in reviews the verdict is often at the end (Sun et al., 2019, "How to Fine-Tune
    BERT for Text Classification?", found head+tail best for long texts).

    ``(text, second text)`` pairs become one input, the tokenizer's own ``tokenizer(a, b)`` layout (its separator
    and, for BERT, segment ids); ``prefix`` goes before the first text. An over-long pair loses tokens from its
    longer text first (the tokenizer's ``longest_first``), each text then cut by ``policy``.
    """
    if policy not in LONG_TEXT_POLICIES:
        raise TextxferError(f"unknown long-text policy {policy!r}; choose one of {list(LONG_TEXT_POLICIES)}")
    # Only the ends of a very long text can be kept, so only they are tokenized: a token covers at most
    # CHARS_PER_TOKEN characters (WordPiece's longest word), so this never changes the result.
    keep = max_length * CHARS_PER_TOKEN
    clean = lambda t: _ends(unicode_safe(t if isinstance(t, str) else str(t)), keep, policy)  # noqa: E731
    if len(texts) and isinstance(texts[0], tuple):
        firsts, seconds = [prefix + clean(a) for a, _ in texts], [clean(b) for _, b in texts]
        with _TOKENIZER_LOCK:
            return _encode_pairs(tokenizer, firsts, seconds, max_length, policy)
    texts = [prefix + clean(t) for t in texts]
    with _TOKENIZER_LOCK:  # a fast tokenizer's truncation settings are shared state: one caller at a time
        return _encode(tokenizer, texts, max_length, policy)


def _encode(tokenizer, texts: list[str], max_length: int, policy: str) -> dict[str, list[list[int]]]:
    if policy == "truncate":
        return dict(tokenizer(texts, truncation=True, max_length=max_length))
    prefix, suffix = special_tokens_around(tokenizer)
    budget = max_length - len(prefix) - len(suffix)
    ids_list = []
    with _quiet_transformers():
        untruncated = tokenizer(texts, add_special_tokens=False, truncation=False)["input_ids"]
    for ids in untruncated:
        ids_list.append(prefix + _cut(ids, budget, policy) + suffix)
    return {"input_ids": ids_list, "attention_mask": [[1] * len(ids) for ids in ids_list]}


def _cut(ids: list[int], budget: int, policy: str) -> list[int]:
    """``ids`` in at most ``budget`` tokens: the start (truncate), or the first quarter and the rest from the end."""
    if len(ids) <= budget:
        return ids
    if policy == "truncate":
        return ids[:budget]
    head = int(budget * HEAD_SHARE)
    return ids[:head] + ids[len(ids) - (budget - head):]


def pair_budgets(first: int, second: int, budget: int) -> tuple[int, int]:
    """Tokens kept of each text of a pair whose texts have ``first`` and ``second`` tokens, ``budget`` in all: the
    longer text gives up tokens until the two are equal, then both alternately (the tokenizer's ``longest_first``;
    ``tests/test_shapes_finetune.py`` checks the two agree)."""
    if first + second <= budget:
        return first, second
    short = min(first, second)
    kept = (budget - short, short) if short <= budget // 2 else (budget - budget // 2, budget // 2)  # (longer, shorter)
    return kept if first > second else kept[::-1]  # equal lengths: the odd token to the second text, as transformers


def _encode_pairs(tokenizer, firsts: list[str], seconds: list[str], max_length: int, policy: str) -> dict:
    layout = pair_layout(tokenizer)
    budget = max_length - sum(len(layout[part]) for part in ("prefix", "middle", "suffix"))
    if budget < 2:
        raise TextxferError(f"--max-length {max_length} leaves no room for two texts between the special tokens")
    with _quiet_transformers():
        a_ids = tokenizer(firsts, add_special_tokens=False, truncation=False)["input_ids"]
        b_ids = tokenizer(seconds, add_special_tokens=False, truncation=False)["input_ids"]
    encoded = {"input_ids": [], "attention_mask": []}
    types = layout["types"]
    if types is not None:
        encoded["token_type_ids"] = []
    for a, b in zip(a_ids, b_ids):
        keep_a, keep_b = pair_budgets(len(a), len(b), budget)
        a, b = _cut(a, keep_a, policy), _cut(b, keep_b, policy)
        ids = layout["prefix"] + a + layout["middle"] + b + layout["suffix"]
        encoded["input_ids"].append(ids)
        encoded["attention_mask"].append([1] * len(ids))
        if types is not None:
            encoded["token_type_ids"].append([types[0]] * (len(layout["prefix"]) + len(a) + len(layout["middle"]))
                                             + [types[1]] * (len(b) + len(layout["suffix"])))
    return encoded


def _ends(text: str, keep: int, policy: str) -> str:
    """The first ``keep`` characters (truncate) or the first and last ``keep`` (head-tail) of ``text``."""
    if policy == "truncate":
        return text[:keep]
    return text if len(text) <= 2 * keep else text[:keep] + " " + text[-keep:]


def special_tokens_around(tokenizer) -> tuple[list[int], list[int]]:
    """The special token ids the tokenizer puts before and after a single text (e.g. [CLS] / [SEP])."""
    probe = "a"
    plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return full[:start], full[start + len(plain):]
    raise TextxferError("cannot tell where this tokenizer puts its special tokens; use --long-text truncate")


def pair_layout(tokenizer) -> dict:
    """Where the tokenizer puts its special tokens around a pair: ``prefix``, ``middle`` and ``suffix`` token ids
    (BERT: [CLS] a [SEP] b [SEP]; XLM-R: <s> a </s></s> b </s>) and ``types``, the segment ids of the first and
    second part (None for a tokenizer without ``token_type_ids``)."""
    a, b = (tokenizer(probe, add_special_tokens=False)["input_ids"] for probe in ("a", "b"))
    full = tokenizer("a", "b", add_special_tokens=True)
    ids = full["input_ids"]
    for start in range(len(ids) - len(a) + 1):
        if ids[start:start + len(a)] != a:
            continue
        for second in range(start + len(a), len(ids) - len(b) + 1):
            if ids[second:second + len(b)] == b:
                types = full.get("token_type_ids")
                return {"prefix": ids[:start], "middle": ids[start + len(a):second], "suffix": ids[second + len(b):],
                        "types": None if types is None else (int(types[start]), int(types[second]))}
    raise TextxferError("cannot tell where this tokenizer puts its special tokens around a text pair")


CHARS_PER_TOKEN = 100  # the longest word WordPiece splits (longer ones become one [UNK] token)

# Texts per forward pass when predicting on a CPU. Measured with a fine-tuned multilingual-e5-small on
# 600 sample test texts, 2 cores: 4 → 23.6, 8 → 26.9, 16 → 26.8, 32 → 23.7, 64 → ~14 texts/s (larger
# batches spill out of cache; CPU inference is compute-bound, so batching buys little beyond this).
CPU_PREDICT_BATCH = 16


def predict_batch_size(requested: int | None) -> int:
    """``requested`` if given (at least 1), else :data:`CPU_PREDICT_BATCH`."""
    if requested is not None:
        if requested < 1:
            raise TextxferError(f"batch size must be at least 1, got {requested}")
        return requested
    return CPU_PREDICT_BATCH


# Prediction batches on a CPU also stop growing once padding would exceed this share of real tokens:
# CPU inference is compute-bound, so padded positions cost as much as real ones. 16 random reviews
# padded to their longest ran at 11 texts/s against 19 one at a time (fine-tuned e5-small, 2 cores).
CPU_MAX_PADDING = 0.25

# On a GPU, prediction batches are sized by padded tokens (count × longest), not by a count: short texts
# go many to a batch, long ones few, so every forward pass is about equally large and none runs out of
# memory on a run of long texts. The count is capped too (a batch of 1,000 one-token texts is no faster).
GPU_TOKEN_BUDGET = 32_768
GPU_MAX_BATCH = 512


def length_groups(lengths: Sequence[int], batch_size: int, max_padding: float | None = None,
                  max_tokens: int | None = None) -> list[np.ndarray]:
    """Row indices in batches of at most ``batch_size``, shortest texts first.

    With ``max_padding``, a batch is also closed before a text whose length would make the padded
    size (count × longest) exceed ``(1 + max_padding)`` × the real tokens; with ``max_tokens``, before
    the padded size would exceed ``max_tokens`` (a text longer than that alone still gets a batch).
    """
    order = np.argsort(np.asarray(lengths), kind="stable")
    groups, current, tokens = [], [], 0
    for row in order:
        length = int(lengths[row])
        padded = (len(current) + 1) * length
        if current and (len(current) == batch_size
                        or (max_padding is not None and padded > (1 + max_padding) * (tokens + length))
                        or (max_tokens is not None and padded > max_tokens)):
            groups.append(np.asarray(current))
            current, tokens = [], 0
        current.append(int(row))
        tokens += length
    if current:
        groups.append(np.asarray(current))
    return groups


def prediction_batches(tokenizer, features: dict[str, list[list[int]]], requested: int | None, on_gpu: bool,
                       return_tensors: str) -> Iterator[tuple[np.ndarray, dict]]:
    """:func:`padded_batches` for prediction. On a CPU: ``requested`` texts (default
    :data:`CPU_PREDICT_BATCH`) with a padding cap. On a GPU: a ``requested`` count as asked, else batches of
    up to :data:`GPU_TOKEN_BUDGET` padded tokens (at most :data:`GPU_MAX_BATCH` texts)."""
    if on_gpu:
        if requested is not None:
            return padded_batches(tokenizer, features, predict_batch_size(requested), return_tensors)
        return padded_batches(tokenizer, features, GPU_MAX_BATCH, return_tensors, max_tokens=GPU_TOKEN_BUDGET)
    return padded_batches(tokenizer, features, predict_batch_size(requested), return_tensors, CPU_MAX_PADDING)


def padded_batches(tokenizer, features: dict[str, list[list[int]]], batch_size: int,
                   return_tensors: str = "np", max_padding: float | None = None,
                   max_tokens: int | None = None) -> Iterator[tuple[np.ndarray, dict]]:
    """Yield ``(row indices, padded batch)`` over encoded ``features``, shortest texts first.

    Sorting by length keeps padding small (``max_padding``: see :func:`length_groups`); the row
    indices let callers put results back in input order. Padding follows the tokenizer
    (``DataCollatorWithPadding``); ``return_tensors`` is ``"pt"`` for PyTorch models and ``"np"`` for
    ONNX Runtime, so both runtimes see exactly the same batches.
    """
    from transformers import DataCollatorWithPadding

    collator = DataCollatorWithPadding(tokenizer, return_tensors=return_tensors)
    for rows in length_groups([len(ids) for ids in features["input_ids"]], batch_size, max_padding, max_tokens):
        yield rows, collator([{k: v[i] for k, v in features.items()} for i in rows])


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (so each row sums to 1 within float64 rounding)."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)
