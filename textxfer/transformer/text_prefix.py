"""A string put before every text, for encoders trained to expect one: ``--text-prefix auto|none|<string>``.

The E5 family (the bundled multilingual-e5-small among them) was trained with ``"query: "`` / ``"passage: "``
before each text; its authors advise ``"query: "`` when the embeddings are used as features, as in
classification. Measured on ``sample_data/`` (multilingual-e5-small frozen, mean pooling, logistic
regression, 3 seeds): 32 training texts 0.767 test accuracy with ``"query: "`` against 0.747 without,
128 texts 0.825 against 0.818 (BENCHMARKS.md, "Pooling and the text prefix"). ``auto`` uses ``"query: "`` for E5 encoders
(not the ``-instruct`` ones, which want a task instruction) and nothing for the rest.

The prefix in effect is saved with the model and used for every prediction (PyTorch and ONNX alike).
"""

from __future__ import annotations

import re
from pathlib import Path

E5_QUERY = "query: "
_E5 = re.compile(r"(^|[^a-z0-9])e5([^a-z0-9]|$)")


def is_e5(name: str) -> bool:
    """Whether ``name`` (a bundled name, hub id or folder) names an E5 encoder, not an instruction-tuned one."""
    base = Path(name.rstrip("/")).name.lower() if name else ""
    return bool(_E5.search(base)) and "instruct" not in base


def choose(setting: str, name: str) -> tuple[str, str | None]:
    """``(prefix, why)``: ``setting`` itself (``none``: no prefix) unless it is ``auto``."""
    if setting == "none":
        return "", None
    if setting != "auto":
        return setting, None
    if is_e5(name):
        return E5_QUERY, (f"text prefix {E5_QUERY!r} ({name} is an E5 encoder, trained with it for features used "
                          "in classification; --text-prefix to set it)")
    return "", None


def apply(prefix: str, texts):
    """``texts`` with ``prefix`` before each (before the first text of a pair; the texts themselves when there is
    none)."""
    if not prefix:
        return texts
    return [(prefix + t[0], t[1]) if isinstance(t, tuple) else prefix + t for t in texts]
