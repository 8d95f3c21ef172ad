"""Text augmentation of the training split (``--augment``): random word dropout or adjacent-word swaps.

Each training text gets ``copies`` altered copies with its label (or label set; of a text pair, both texts are
altered) (validation and test are never touched).
Words are jieba words for Chinese texts (at least 10 % CJK characters, the baseline's rule), else
whitespace-separated words; a text of one word is copied unchanged. ``word-dropout`` drops each word with
probability :data:`RATE` (at least one word stays); ``word-swap`` swaps ``max(1, RATE × words)`` random pairs of
neighbouring words (EDA's random swap, Wei & Zou, 2019, restricted to neighbours so the text stays readable).
The literature finds no consistent gain for pretrained encoders (Longpre et al., 2020); the study variant
``finetune:augment=word-dropout`` measures it (BENCHMARKS.md).
"""

from __future__ import annotations

import random

from textxfer.errors import TextxferError

AUGMENTATIONS = ("none", "word-dropout", "word-swap")
RATE = 0.1


def _splitter(texts: list[str]):
    """``(split, joiner)`` for these texts: jieba words joined by nothing for Chinese, else whitespace words."""
    from textxfer.data.words import jieba_engine, resolve_tokenizer

    if resolve_tokenizer("auto", texts) == "jieba":
        _, cut = jieba_engine()
        return (lambda text: [w for w in cut(text) if w]), ""
    return str.split, " "


def _alter(words: list[str], method: str, rng: random.Random) -> list[str]:
    if len(words) < 2:
        return list(words)
    if method == "word-dropout":
        kept = [w for w in words if rng.random() >= RATE]
        return kept or [rng.choice(words)]
    altered = list(words)
    for _ in range(max(1, int(RATE * len(words)))):
        i = rng.randrange(len(altered) - 1)
        altered[i], altered[i + 1] = altered[i + 1], altered[i]
    return altered


def augment(dataset, method: str, copies: int, seed: int):
    """``dataset`` (a ``TextDataset``) followed by ``copies`` altered copies of each text; itself for ``none``."""
    from textxfer.data.dataset import TextDataset

    if method not in AUGMENTATIONS:
        raise TextxferError(f"unknown augmentation {method!r}; choose one of {list(AUGMENTATIONS)}")
    if method == "none" or copies < 1 or not len(dataset):
        return dataset
    split, joiner = _splitter(dataset.texts + (dataset.pairs or []))
    rng = random.Random(seed)
    alter = lambda text: joiner.join(_alter(split(text), method, rng))  # noqa: E731
    texts, labels, rows = list(dataset.texts), list(dataset.labels), list(dataset.rows)
    pairs = None if dataset.pairs is None else list(dataset.pairs)
    for _ in range(copies):
        for i, (text, label, row) in enumerate(zip(dataset.texts, dataset.labels, dataset.rows)):
            texts.append(alter(text))
            if pairs is not None:  # a pair: both texts altered
                pairs.append(alter(dataset.pairs[i]))
            labels.append(label)
            rows.append(row)
    return TextDataset(texts, labels, rows, dataset.origin, pairs, dataset.shape)
