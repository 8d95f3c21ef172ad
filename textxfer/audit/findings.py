"""What the audit flags, row by row: labels the out-of-fold probabilities contradict (confident learning, with
``cleanlab``), near-duplicates that carry different labels, texts with no words or longer than the model reads, and
texts in another script than the rest.

Every function returns ``{index: Flag}`` over the audited rows (indices into the audited dataset).
"""

from __future__ import annotations

import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Sequence

import numpy as np

DUPLICATE_SIMILARITY = 0.98  # cosine of centred features at or above which two texts count as near-duplicates
MAJORITY_SCRIPT = 0.8  # a script is the corpus's when at least this share of its texts are mostly in it
SCRIPT_NAMES = {"CJK": "Han (Chinese)", "LATIN": "Latin", "CYRILLIC": "Cyrillic", "ARABIC": "Arabic", "GREEK": "Greek",
                "HANGUL": "Hangul (Korean)", "HIRAGANA": "Japanese kana", "KATAKANA": "Japanese kana",
                "DEVANAGARI": "Devanagari", "HEBREW": "Hebrew", "THAI": "Thai"}
# Scripts written in words separated by spaces: a run of their letters counts once; others count per character.
WORD_SCRIPTS = {"LATIN", "CYRILLIC", "ARABIC", "GREEK", "DEVANAGARI", "HEBREW"}


@dataclass
class Flag:
    """One reason a row is suspect: the reason, a detail for the reader, and the label it probably should have."""

    reason: str
    detail: str
    suggested: str | None = None


def label_issues(targets: np.ndarray, probabilities: np.ndarray, names: Sequence[str], multi_label: bool
                 ) -> tuple[dict[int, Flag], np.ndarray, list[int]]:
    """Confident learning over out-of-fold ``probabilities``: ``(flags, scores, ranked)`` — a flag for each row whose
    given label cleanlab finds contradicted (single-label: by its default filter or its lowest-self-confidence one;
    multi-label: its default filter), every row's label quality (the out-of-fold
    self-confidence: the probability of its given label; multi-label: cleanlab's aggregate over labels), and the
    flagged rows most suspect first."""
    if multi_label:
        from cleanlab.multilabel_classification import filter as multilabel_filter
        from cleanlab.multilabel_classification import rank as multilabel_rank

        given = [list(np.flatnonzero(row)) for row in targets]
        scores = multilabel_rank.get_label_quality_scores(given, probabilities)
        ranked = multilabel_filter.find_label_issues(given, probabilities, return_indices_ranked_by="self_confidence")
        suggested = {i: "|".join(names[j] for j in np.flatnonzero(probabilities[i] >= 0.5)) for i in ranked}
        given_names = {i: "|".join(names[j] for j in given[i]) for i in ranked}
    else:
        from cleanlab import filter as cleanlab_filter
        from cleanlab import rank as cleanlab_rank

        scores = cleanlab_rank.get_label_quality_scores(targets, probabilities, method="self_confidence")
        # The rows either of two cleanlab filters flags, lowest self-confidence first: its default
        # (prune_by_noise_rate) skips rows whose probability is spread over several other classes, which the
        # lowest-self-confidence filter catches; that one alone flags fewer rows than were flipped on BBC
        # (scripts/bench_audit_views.py and bench_audit.py, BENCHMARKS.md "Label audit").
        flagged = set()
        for how in ("prune_by_noise_rate", "low_self_confidence"):
            mask = cleanlab_filter.find_label_issues(targets, probabilities, filter_by=how)  # a boolean per row
            flagged.update(int(i) for i in np.flatnonzero(mask))
        ranked = sorted(flagged, key=lambda i: (float(scores[i]), i))
        suggested = {i: names[int(probabilities[i].argmax())] for i in ranked}
        given_names = {i: names[targets[i]] for i in ranked}
    flags = {int(i): Flag("label-issue", f"out-of-fold probability of {given_names[i]!r}: {scores[i]:.3f}; the "
                                          f"model says {suggested[i] or '(no label)'!r}", suggested[i])
             for i in ranked}
    return flags, np.asarray(scores, dtype=np.float64), [int(i) for i in ranked]


def normalised(text: str) -> str:
    """``text`` for exact-duplicate matching: NFKC, case-folded, with every character that is not a letter or digit
    removed (so punctuation, spacing and emoji do not hide a repeat)."""
    return "".join(ch for ch in unicodedata.normalize("NFKC", text).casefold() if ch.isalnum())


def conflicting_duplicates(keys: Sequence[str], label_keys: Sequence[str], rows: Sequence[int],
                           features: np.ndarray | None, similarity: float = DUPLICATE_SIMILARITY) -> dict[int, Flag]:
    """Rows whose text (``keys``, already :func:`normalised`) repeats another row's — exactly, or with centred-feature
    cosine ≥ ``similarity`` — under a different label (``label_keys``); the suggested label is the one most of the
    group carries."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        if key:
            groups[key].append(i)
    partners: dict[int, set[int]] = defaultdict(set)
    for members in groups.values():
        if len({label_keys[i] for i in members}) > 1:
            for i in members:
                partners[i].update(j for j in members if j != i)
    if features is not None and len(features) > 1:
        for i, j in _near_pairs(features, similarity):
            if label_keys[i] != label_keys[j]:
                partners[i].add(j)
                partners[j].add(i)
    flags = {}
    for i, others in partners.items():
        others = sorted(o for o in others if label_keys[o] != label_keys[i]) or sorted(others)
        votes = Counter(label_keys[o] for o in (*others, i))
        top = max(votes.values())
        majority = sorted(label for label, n in votes.items() if n == top)
        listed = ", ".join(f"row {rows[o]} ({label_keys[o]!r})" for o in others[:3])
        more = f" and {len(others) - 3} more" if len(others) > 3 else ""
        flags[i] = Flag("duplicate-conflict", f"the same or nearly the same text as {listed}{more} under another label",
                        majority[0] if len(majority) == 1 and majority[0] != label_keys[i] else None)
    return flags


def _near_pairs(features: np.ndarray, similarity: float, block: int = 2048) -> list[tuple[int, int]]:
    """Index pairs ``i < j`` whose centred, unit-length features have cosine ≥ ``similarity`` (blocked matrix products,
    so memory stays at ``block`` × n)."""
    x = np.asarray(features, dtype=np.float32)
    x = x - x.mean(axis=0)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    pairs = []
    for start in range(0, len(x), block):
        sims = x[start:start + block] @ x.T
        for a, b in zip(*np.nonzero(sims >= similarity)):
            i = start + int(a)
            if i < int(b):
                pairs.append((i, int(b)))
    return pairs


def script_of(text: str) -> str | None:
    """The script most of ``text``'s words are written in (a run of letters counts once for scripts written in words,
    each character for Han, kana and Hangul), or None for a text with no letters."""
    counts: Counter = Counter()
    previous = None
    for ch in text:
        if not ch.isalpha():
            previous = None
            continue
        try:
            script = unicodedata.name(ch).split()[0]
        except ValueError:
            previous = None
            continue
        if script not in WORD_SCRIPTS or script != previous:
            counts[script] += 1
        previous = script
    return counts.most_common(1)[0][0] if counts else None


def text_problems(texts: Sequence[str], token_counts: Sequence[int] | None, max_tokens: int | None) -> dict[int, Flag]:
    """Texts with no letter or digit (nothing to read), texts longer than the model reads (``token_counts`` above
    ``max_tokens``; without a tokenizer: more than 10 × the median length in characters), and texts whose script
    (:func:`script_of`) is not the one at least :data:`MAJORITY_SCRIPT` of the texts are in."""
    flags: dict[int, Flag] = {}
    scripts = [script_of(text) for text in texts]
    known = Counter(s for s in scripts if s)
    majority, count = known.most_common(1)[0] if known else (None, 0)
    if count < MAJORITY_SCRIPT * max(sum(known.values()), 1):
        majority = None  # a mixed corpus has no "other" script
    median = float(np.median([len(t) for t in texts])) if texts else 0.0
    for i, text in enumerate(texts):
        if not any(ch.isalnum() for ch in text):
            flags[i] = Flag("empty", "no letter or digit: nothing for a model to read")
        elif token_counts is not None and max_tokens and token_counts[i] > max_tokens:
            flags[i] = Flag("overlong", f"{token_counts[i]:,} tokens; the model reads {max_tokens:,} (the rest is cut)")
        elif token_counts is None and median and len(text) > 10 * median:
            flags[i] = Flag("overlong", f"{len(text):,} characters, over 10 × the median {median:,.0f}")
        elif majority and scripts[i] and scripts[i] != majority:
            flags[i] = Flag("other-script", f"written mostly in {SCRIPT_NAMES.get(scripts[i], scripts[i].title())}; "
                                            f"{count / sum(known.values()):.0%} of the texts are in "
                                            f"{SCRIPT_NAMES.get(majority, majority.title())}")
    return flags
