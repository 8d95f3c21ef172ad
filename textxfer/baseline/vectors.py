"""Word vectors for the baseline: train with gensim or read pretrained ones; save as safetensors + JSON;
turn tokenized texts into weighted averages of their word vectors."""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from textxfer.errors import TextxferError

VECTORS_FILE = "vectors.safetensors"
VOCAB_FILE = "vocab.json"


@dataclass
class WordVectors:
    """A vocabulary, its vectors (``[len(vocab), dim]`` float32) and one averaging weight per word."""

    vocab: list[str]
    vectors: np.ndarray
    weights: np.ndarray

    def __post_init__(self) -> None:
        self.index = {word: i for i, word in enumerate(self.vocab)}

    @property
    def dim(self) -> int:
        """Vector size."""
        return int(self.vectors.shape[1])

    def embed(self, tokenized: Sequence[Sequence[str]]) -> tuple[np.ndarray, int]:
        """Weighted mean vector per text (zeros for a text with no known word) and how many had none.

        Computed as one sparse (texts × vocab) weight matrix times the vector matrix, so it stays fast
        for large batches.
        """
        from scipy.sparse import csr_matrix

        index, indptr, columns = self.index, [0], []
        for tokens in tokenized:
            columns.extend(i for i in map(index.get, tokens) if i is not None)
            indptr.append(len(columns))
        cols = np.asarray(columns, dtype=np.int64)
        values = self.weights[cols].astype(np.float32)
        matrix = csr_matrix((values, cols, np.asarray(indptr)), shape=(len(indptr) - 1, len(self.vocab)))
        totals = np.asarray(matrix.sum(axis=1)).ravel()
        empty = int((totals == 0).sum())
        totals[totals == 0] = 1.0
        return (matrix @ self.vectors) / totals[:, None].astype(np.float32), empty

    def save(self, folder: Path) -> dict[str, str]:
        """Write the vectors and weights (safetensors) and the vocabulary (JSON); return the file names."""
        from safetensors.numpy import save_file

        save_file({"vectors": np.ascontiguousarray(self.vectors, dtype=np.float32),
                   "weights": np.ascontiguousarray(self.weights, dtype=np.float32)}, str(folder / VECTORS_FILE))
        (folder / VOCAB_FILE).write_text(json.dumps(self.vocab, ensure_ascii=False), encoding="utf-8")
        return {"vectors": VECTORS_FILE, "vocab": VOCAB_FILE}

    @classmethod
    def load(cls, folder: Path) -> "WordVectors":
        """Read what :meth:`save` wrote, checking that the pieces fit together."""
        from safetensors.numpy import load_file

        try:
            tensors = load_file(str(folder / VECTORS_FILE))
            vocab = json.loads((folder / VOCAB_FILE).read_text(encoding="utf-8"))
        except Exception as exc:  # safetensors raises its own error types for corrupt files
            raise TextxferError(f"{folder}: cannot read the word vectors ({exc}); re-train or restore the folder") from None
        vectors, weights = tensors.get("vectors"), tensors.get("weights")
        if (not isinstance(vocab, list) or vectors is None or weights is None or vectors.ndim != 2
                or vectors.shape[0] != len(vocab) or weights.shape != (len(vocab),)):
            raise TextxferError(f"{folder}: {VECTORS_FILE} and {VOCAB_FILE} do not match; re-train or restore the folder")
        return cls([str(w) for w in vocab], vectors, weights)


def train_word2vec(sentences: list[list[str]], vector_size: int, window: int, min_count: int, epochs: int,
                   sg: bool, negative: int, sample: float, workers: int, seed: int, progress: bool,
                   exclude: frozenset[str] = frozenset()) -> tuple[list[str], np.ndarray]:
    """Train gensim ``Word2Vec``; return its vocabulary and vectors (minus ``exclude``d helper tokens).

    Shows an epoch progress bar when ``progress`` is set.
    """
    from gensim.models import Word2Vec
    from gensim.models.callbacks import CallbackAny2Vec

    class EpochBar(CallbackAny2Vec):
        def __init__(self) -> None:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=epochs, desc="word2vec", unit="epoch", leave=False, disable=not progress)

        def on_epoch_end(self, model) -> None:
            self.bar.update(1)

        def on_train_end(self, model) -> None:
            self.bar.close()

    if not any(sentences):
        raise TextxferError("the training texts produced no tokens; check --text-column and --tokenizer")
    model = Word2Vec(sentences, vector_size=vector_size, window=window, min_count=min_count, epochs=epochs,
                     sg=int(sg), negative=negative, sample=sample, workers=workers, seed=seed,
                     hashfxn=_stable_hash, callbacks=[EpochBar()])
    keep = [i for i, word in enumerate(model.wv.index_to_key) if word not in exclude]
    if not keep:
        raise TextxferError(f"no word occurs at least --min-count={min_count} times in the training texts; lower --min-count")
    return [model.wv.index_to_key[i] for i in keep], model.wv.vectors[keep].astype(np.float32)


def _stable_hash(text: str) -> int:
    """gensim seeds each word's initial vector with ``hashfxn(word + seed)``; Python's own ``hash`` is
    randomised per process, so use a stable one to make single-worker training reproducible."""
    return zlib.crc32(text.encode("utf-8"))


def read_pretrained(path: str) -> tuple[list[str], np.ndarray]:
    """Read word2vec vectors in text (``.txt``/``.vec``) or binary (``.bin``) format."""
    from gensim.models import KeyedVectors

    file = Path(path)
    if not file.is_file():
        raise TextxferError(f"{path}: no such vectors file")
    binary = file.suffix.lower() == ".bin"
    try:
        keyed = KeyedVectors.load_word2vec_format(str(file), binary=binary, unicode_errors="replace")
    except (ValueError, EOFError, UnicodeDecodeError) as exc:
        kind = "binary" if binary else "text"
        raise TextxferError(f"{path}: not a word2vec {kind} file ({exc}); name binary files *.bin and text files *.txt/*.vec") from None
    return list(keyed.index_to_key), keyed.vectors.astype(np.float32)
