"""Words of a text: jieba words for Chinese, a regex word tokenizer otherwise — the baseline's tokenizers, and the
word split of text augmentation (:mod:`textxfer.data.augment`)."""

from __future__ import annotations

import logging
import re
from typing import Callable, Iterable, Sequence

from textxfer.errors import TextxferError

TOKENIZERS = ("auto", "jieba", "words", "chars")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff]")
_WORD = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]", re.UNICODE)
AUTO_CJK_SHARE = 0.1  # texts whose characters are at least 10% CJK count as Chinese


def resolve_tokenizer(name: str, sample: Sequence[str]) -> str:
    """Turn ``auto`` into ``jieba`` (mostly-Chinese sample) or ``words``; check other names."""
    if name not in TOKENIZERS:
        raise TextxferError(f"unknown tokenizer {name!r}; choose one of {list(TOKENIZERS)}")
    if name != "auto":
        return name
    text = "".join(sample[:2000])
    visible = sum(not ch.isspace() for ch in text) or 1
    return "jieba" if len(_CJK.findall(text)) / visible >= AUTO_CJK_SHARE else "words"


def jieba_engine() -> tuple[str, Callable[[str], list[str]]]:
    """The jieba segmenter: ``rjieba`` (jieba-rs, the same dictionary and algorithm, ~35× faster)
    when installed, else the pure-Python ``jieba``."""
    try:
        import rjieba

        return "rjieba", rjieba.cut
    except ImportError:
        import jieba

        jieba.setLogLevel(logging.WARNING)
        return "jieba", jieba.lcut


def make_tokenizer(name: str) -> Callable[[str], list[str]]:
    """A function text → tokens for a resolved tokenizer name (lower-cased, no whitespace tokens)."""
    if name == "jieba":
        _, cut = jieba_engine()
        return lambda text: [token for token in cut(text.lower()) if not token.isspace()]
    if name == "words":
        return lambda text: _WORD.findall(text.lower())
    if name == "chars":
        return lambda text: [ch for ch in text.lower() if not ch.isspace()]
    raise TextxferError(f"unknown tokenizer {name!r}; choose one of {list(TOKENIZERS[1:])}")



# The characters one text contributes to the baseline: the first and the last half of this many. A 50 MB
# text otherwise became tens of millions of word tokens (2 GB of memory to predict one text); an average
# of word vectors does not move after the first few thousand words, and reviews put their verdict at the
# start or the end (the transformers' head-tail policy, for the same reason).
MAX_TEXT_CHARS = 100_000


def capped(text: str) -> str:
    """``text`` itself, or its first and last ``MAX_TEXT_CHARS / 2`` characters when it is longer."""
    if len(text) <= MAX_TEXT_CHARS:
        return text
    half = MAX_TEXT_CHARS // 2
    return text[:half] + "\n" + text[-half:]


def tokenize(texts: Iterable[str], name: str, progress: bool = False, total: int | None = None) -> list[list[str]]:
    """Tokenize every text with tokenizer ``name`` (already resolved), with an optional progress bar; a text
    longer than :data:`MAX_TEXT_CHARS` contributes its head and tail (:func:`capped`)."""
    cut = make_tokenizer(name)
    if progress:
        from tqdm.auto import tqdm

        texts = tqdm(texts, total=total, desc=f"tokenizing ({name})", unit="text", leave=False)
    return [cut(capped(text)) for text in texts]


def word_spans(text: str) -> list[tuple[int, int]]:
    """The ``(start, end)`` character spans of ``text``'s words, in order: jieba's words for a text that is at least
    :data:`AUTO_CJK_SHARE` Chinese, else regex words; whitespace and pure punctuation are not words (emoji and other
    symbols are). What an explanation scores (:mod:`textxfer.core.explain`)."""
    import unicodedata

    if resolve_tokenizer("auto", [text]) == "jieba":
        _, cut = jieba_engine()
        spans, position = [], 0
        for token in cut(text):
            start = text.find(token, position)
            if start < 0:  # the segmenter changed the characters: fall back to where we are
                start = position
            spans.append((start, start + len(token)))
            position = start + len(token)
    else:
        spans = [m.span() for m in _WORD.finditer(text)]
    return [(a, b) for a, b in spans
            if any(not ch.isspace() and not unicodedata.category(ch).startswith("P") for ch in text[a:b])]
