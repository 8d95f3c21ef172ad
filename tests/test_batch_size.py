"""``--batch-size auto`` and the GPU training settings; GPU availability and memory are faked (CPU only)."""

from __future__ import annotations

import math

import pytest
import torch

from textxfer.transformer import batch_size

from textxfer import classifier
from textxfer.transformer.batch_size import CPU_BATCH, MAX_AUTO_BATCH, MIN_STEPS_PER_EPOCH, TOKENS_PER_STEP
from textxfer.errors import TextxferError
from textxfer.transformer.pipeline import FinetuneConfig
from textxfer.transformer.training import device_settings, resolve_batch


def test_values_auto_or_a_whole_number():
    assert FinetuneConfig().batch_size == "auto"
    assert FinetuneConfig(batch_size="32").batch_size == 32 and FinetuneConfig(batch_size=" AUTO ").batch_size == "auto"
    for bad in ("0", "many", 2.5, True, -3):
        with pytest.raises(TextxferError, match="batch_size must be"):
            FinetuneConfig(batch_size=bad)


def test_the_cpu_keeps_its_measured_batch_and_says_nothing():
    assert batch_size.choose("auto", 13_891, 120.0, on_gpu=False) == (CPU_BATCH, None)
    assert batch_size.choose(64, 13_891, 120.0, on_gpu=True) == (64, None)  # given: kept, on any device


def test_a_gpu_batch_follows_the_tokens_the_steps_and_the_cap():
    batch, why = batch_size.choose("auto", 13_891, 120.0, on_gpu=True)
    assert batch == TOKENS_PER_STEP // 120 and "token budget" in why
    batch, why = batch_size.choose("auto", 1_000, 30.0, on_gpu=True)  # short texts, little data
    assert batch == 1_000 // MIN_STEPS_PER_EPOCH and f"at least {MIN_STEPS_PER_EPOCH} steps per epoch" in why
    batch, why = batch_size.choose("auto", 200, 30.0, on_gpu=True)
    assert batch == CPU_BATCH and "never below" in why
    batch, why = batch_size.choose("auto", 1_000_000, 8.0, on_gpu=True)
    assert batch == MAX_AUTO_BATCH and "cap" in why
    # Four processes share the epoch, so each takes a quarter of the texts.
    assert batch_size.choose("auto", 40_000, 8.0, on_gpu=True, world_size=4)[0] == 40_000 // (MIN_STEPS_PER_EPOCH * 4)


def test_the_rate_follows_the_square_root_of_the_effective_batch():
    assert batch_size.scaled_rate(5e-5, 16) == (5e-5, None)
    rate, why = batch_size.scaled_rate(5e-5, 64)
    assert rate == pytest.approx(1e-4) and "√(64/16)" in why
    assert batch_size.scaled_rate(5e-5, 32, world_size=2)[0] == pytest.approx(1e-4)
    assert batch_size.scaled_rate(5e-5, 16, world_size=1, accumulation=4)[0] == pytest.approx(1e-4)


def test_the_batch_is_halved_until_a_step_fits_in_memory():
    tried = []

    def probe(batch):
        tried.append(batch)
        if batch > 40:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    batch, why = batch_size.fit_memory(136, probe)
    assert (batch, tried) == (34, [136, 68, 34]) and "136 texts at the max length did not fit" in why
    assert batch_size.fit_memory(32, lambda b: None) == (32, None)
    with pytest.raises(ValueError, match="not memory"):  # other errors are not swallowed
        batch_size.fit_memory(32, lambda b: (_ for _ in ()).throw(ValueError("not memory")))
    with pytest.raises(TextxferError, match="even one text at the max length"):
        batch_size.fit_memory(4, lambda b: (_ for _ in ()).throw(RuntimeError("CUDA error: out of memory")))


def test_the_probe_runs_one_step_and_leaves_no_gradients(trained_models):
    model = classifier.load(trained_models["finetune"], device="cpu")
    before = [p.detach().clone() for p in model.model_.parameters()]
    batch_size.memory_probe(model.model_, 24, "fp32")(3)
    assert all(p.grad is None for p in model.model_.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.model_.parameters()))  # no step was taken


@pytest.fixture
def fake_gpu(monkeypatch):
    import transformers.utils

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(transformers.utils, "is_torch_tf32_available", lambda: True)


def test_gpu_training_settings(fake_gpu):
    settings = device_settings("auto")
    assert settings["bf16"] and not settings["fp16"] and not settings["use_cpu"] and settings["tf32"]
    assert settings["_fused"] and settings["dataloader_num_workers"] == 2 and settings["dataloader_pin_memory"]
    assert device_settings("fp32", compile_model=True)["torch_compile"] is True


def test_cpu_training_settings_are_the_measured_recipe(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    settings = device_settings("auto")
    assert (settings["_precision"], settings["dataloader_num_workers"], settings["_fused"]) == ("fp32", 0, False)
    assert "tf32" not in settings


def test_resolve_on_a_gpu_sizes_probes_and_scales(trained_models, fake_gpu, monkeypatch):
    from textxfer.data.dataset import TextDataset

    model = classifier.load(trained_models["finetune"], device="cpu")
    model.config.batch_size, model.config.learning_rate, model.config.strategy = "auto", 5e-5, "full"
    texts = ["好" * 20] * 6_000
    train = TextDataset(texts, ["positive"] * 6_000, list(range(1, 6_001)), "fixture")
    monkeypatch.setattr(batch_size, "memory_probe", lambda *a: lambda b: None)
    config, why = resolve_batch(model, train, "cls", 1, device_settings("auto"))
    tokens = 22  # 20 characters + [CLS] + [SEP]
    expected = min(TOKENS_PER_STEP // tokens, 6_000 // MIN_STEPS_PER_EPOCH)
    assert config.batch_size == expected and config.learning_rate == pytest.approx(5e-5 * math.sqrt(expected / 16))
    assert len(why) == 2 and why[0].startswith(f"batch size {expected} per device")

    def small_gpu(*_):
        def probe(batch):
            if batch > 50:
                raise torch.cuda.OutOfMemoryError("out of memory")
        return probe

    monkeypatch.setattr(batch_size, "memory_probe", small_gpu)
    config, why = resolve_batch(model, train, "cls", 1, device_settings("auto"))
    assert config.batch_size == expected // 4 and any("halved" in line for line in why)
    # A fitted head (head-only, contrastive) and the CPU keep 16.
    model.config.strategy = "head-only"
    assert resolve_batch(model, train, "cls", 1, device_settings("auto"))[0].batch_size == CPU_BATCH


def test_auto_on_the_cpu_trains_at_16_with_the_rate_as_given(tiny_bert):
    from conftest import make_rows
    from textxfer.data.dataset import TextDataset
    from textxfer.data.labels import LabelSet
    from textxfer.transformer.pipeline import FinetuneClassifier

    rows = make_rows(48, seed=5)
    train = TextDataset([t for t, _ in rows], [y for _, y in rows], list(range(1, 49)), "fixture")
    config = FinetuneConfig(model=str(tiny_bert), strategy="full", max_steps=3, learning_rate=3e-3, logging_steps=1000,
                            early_stopping=0, warmup=0.0, min_steps=0)
    model = FinetuneClassifier(config).fit(train, None, LabelSet.from_labels(train.labels))
    recipe = model.fit_stats_["recipe"]
    assert (recipe["batch_size"], recipe["learning_rate"], recipe["steps_per_epoch"]) == (16, 3e-3, 3)
    assert config.batch_size == "auto"  # the saved settings still say auto
    assert model.fit_stats_["attention"] == "sdpa"  # PyTorch's fused attention, on every device
