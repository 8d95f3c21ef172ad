"""Explanations of a prediction: each word's contribution to the predicted label's probability.

Words are jieba words for Chinese and regex words otherwise (:func:`textxfer.data.words.word_spans`), never a
model's sub-word pieces, so two models' explanations of one text line up word by word. Every model kind explains by
**occlusion** — a word's contribution is the drop in the predicted label's (calibrated) probability when the word is
removed from the text — and a kind may add its own method (a fine-tuned model: integrated gradients on its input
embeddings, :mod:`textxfer.transformer.gradients`), chosen by ``ClassifierBase.explain(method=…)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MAX_WORDS = 200  # words scored per text (per text of a pair); occlusion predicts the text once per word
PREDICT_CHUNK = 256  # occluded variants predicted per call


@dataclass(frozen=True)
class Word:
    """One word of an input: its characters ``text[start:end]`` in text ``part`` (0, or 1 for a pair's second)."""

    text: str
    start: int
    end: int
    part: int = 0


@dataclass
class Explanation:
    """Why a model gave ``label``: each word with its contribution to ``label``'s probability (``score``)."""

    input: str | tuple[str, str]
    label: str | int
    score: float
    method: str
    words: list[Word]
    contributions: list[float]
    notes: list[str] = field(default_factory=list)

    def top(self, k: int = 3) -> list[tuple[Word, float]]:
        """The ``k`` words that raised the label's probability most."""
        order = np.argsort(-np.asarray(self.contributions), kind="stable")[:k]
        return [(self.words[i], self.contributions[i]) for i in order]

    def listed(self, sign: int = 1, shown: int = 5) -> str:
        """The ``shown`` words that raised (``sign`` 1) or lowered (−1) the label's probability most, strongest
        first, as "word +0.123, …" ("—" when none did)."""
        pairs = sorted(zip(self.words, self.contributions), key=lambda pair: -sign * pair[1])
        chosen = [(w, c) for w, c in pairs if sign * c > 0][:shown]
        return ", ".join(f"{w.text} {c:+.3f}" for w, c in chosen) or "—"

    def to_dict(self) -> dict:
        """JSON-ready form (the API's and ``predict --explain``'s)."""
        return {"label": self.label, "score": round(float(self.score), 6), "method": self.method,
                "words": [{"word": w.text, "start": w.start, "end": w.end, **({"part": w.part} if w.part else {}),
                           "contribution": round(float(c), 6)} for w, c in zip(self.words, self.contributions)],
                **({"notes": self.notes} if self.notes else {})}


def words_of(item, max_words: int = MAX_WORDS) -> tuple[list[Word], list[str]]:
    """The words of one input (a text, or a ``(text, second text)`` pair: both texts' words), at most ``max_words``
    per text, and a note when some were left unscored."""
    from textxfer.data.words import word_spans

    parts = item if isinstance(item, tuple) else (item,)
    words, notes = [], []
    for part, text in enumerate(parts):
        spans = word_spans(text)
        if len(spans) > max_words:
            notes.append(f"{'the second text' if part else 'the text'} has {len(spans):,} words; the first "
                         f"{max_words:,} are scored")
        words += [Word(text[a:b], a, b, part) for a, b in spans[:max_words]]
    return words, notes


def without(item, word: Word):
    """``item`` with ``word`` removed (from its text of a pair)."""
    parts = list(item if isinstance(item, tuple) else (item,))
    text = parts[word.part]
    parts[word.part] = text[:word.start] + text[word.end:]
    return tuple(parts) if isinstance(item, tuple) else parts[0]


def occlusion(model, inputs: list, label_ids: np.ndarray, words: list[list[Word]],
              full: np.ndarray | None = None) -> list[np.ndarray]:
    """Per input, each word's contribution: the predicted label's probability minus that of the input without the
    word (positive: the word speaks for the label). ``full``: the inputs' probabilities, when known."""
    variants = [(i, without(item, word)) for i, (item, ws) in enumerate(zip(inputs, words)) for word in ws]
    if full is None:
        full = model.predict_proba(inputs)
    base = full[np.arange(len(inputs)), label_ids]
    dropped = np.empty(len(variants))
    for start in range(0, len(variants), PREDICT_CHUNK):
        chunk = variants[start:start + PREDICT_CHUNK]
        probabilities = model.predict_proba([v for _, v in chunk])
        dropped[start:start + len(chunk)] = probabilities[np.arange(len(chunk)), [label_ids[i] for i, _ in chunk]]
    out, position = [], 0
    for i, ws in enumerate(words):
        out.append(base[i] - dropped[position:position + len(ws)])
        position += len(ws)
    return out


def to_words(token_spans: list[tuple[int, int, int]], token_scores: np.ndarray, words: list[Word]) -> np.ndarray:
    """Sub-word scores summed into words: each token ``(part, start, end)`` adds its score to every word of its text
    whose characters it overlaps (special tokens and the text prefix overlap none)."""
    out = np.zeros(len(words))
    for (part, start, end), score in zip(token_spans, token_scores):
        if end <= start:
            continue
        for j, word in enumerate(words):
            if word.part == part and word.start < end and start < word.end:
                out[j] += score
    return out
