"""Where a fine-tuned model predicts and in which precision; GPU availability is faked (these run on the CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from textxfer import classifier

from textxfer.transformer import devices
from textxfer.cli import main
from textxfer.transformer.encoding import GPU_MAX_BATCH, GPU_TOKEN_BUDGET, length_groups, prediction_batches
from textxfer.errors import TextxferError


@pytest.fixture
def gpus(monkeypatch):
    """Fake ``count`` visible GPUs (bf16-capable unless ``bf16=False``)."""

    def fake(count: int, bf16: bool = True) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)

    monkeypatch.delenv("LOCAL_RANK", raising=False)
    return fake


def test_auto_is_the_cpu_without_a_gpu_and_asking_for_one_is_a_clear_error(gpus):
    gpus(0)
    assert devices.resolve("auto") == devices.resolve(None) == "cpu"
    assert devices.resolve("CPU") == "cpu"
    with pytest.raises(TextxferError, match=r"--device cuda: no CUDA GPU is visible .* use --device cpu or auto"):
        devices.resolve("cuda")
    with pytest.raises(TextxferError, match="unknown device 'gpu'"):
        devices.resolve("gpu")


def test_auto_takes_the_local_ranks_gpu(gpus, monkeypatch):
    gpus(2)
    assert devices.resolve("auto") == "cuda:0"
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert devices.resolve("auto") == devices.resolve("cuda") == "cuda:1"
    monkeypatch.setenv("LOCAL_RANK", "3")  # more processes than GPUs: shared round-robin
    assert devices.resolve("auto") == "cuda:1"
    assert devices.resolve("cuda:0") == "cuda:0"  # an explicit index wins over the rank
    with pytest.raises(TextxferError, match=r"--device cuda:2: this machine has 2 GPUs \(cuda:0 … cuda:1\)"):
        devices.resolve("cuda:2")
    with pytest.raises(TextxferError, match="this machine has 2 GPUs"):
        devices.resolve("cuda:x")


def test_precision_bf16_on_a_gpu_fp16_without_bf16_fp32_on_the_cpu(gpus):
    gpus(1)
    assert devices.inference_precision("cuda:0") == "bf16"
    assert devices.inference_precision("cuda:0", "fp32") == "fp32"
    gpus(1, bf16=False)
    assert devices.inference_precision("cuda:0") == "fp16"
    assert devices.inference_precision("cpu") == "fp32"
    with pytest.raises(TextxferError, match="--precision bf16 needs a GPU"):
        devices.inference_precision("cpu", "bf16")
    with pytest.raises(TextxferError, match="unknown precision 'fp8'"):
        devices.inference_precision("cuda:0", "fp8")


@pytest.mark.filterwarnings("ignore:CUDA is not available")
def test_autocast_only_on_a_gpu_below_fp32():
    from contextlib import nullcontext

    assert isinstance(devices.autocast("cpu", "fp32"), nullcontext)
    assert isinstance(devices.autocast("cuda:0", "fp32"), nullcontext)
    assert isinstance(devices.autocast("cuda:0", "bf16"), torch.autocast)


def test_a_loaded_model_goes_to_the_chosen_gpu_in_bf16(trained_models, gpus, monkeypatch):
    from textxfer.transformer.pipeline import FinetuneClassifier

    moved = []
    monkeypatch.setattr(torch.nn.Module, "to", lambda self, *a, **k: moved.append(a[0]) or self)
    gpus(2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    model = classifier.load(trained_models["finetune"])  # auto
    assert isinstance(model, FinetuneClassifier) and moved == ["cuda:1"] and model.precision_ == "bf16"
    model = classifier.load(trained_models["finetune"], device="cuda:0", precision="fp32")
    assert moved[-1] == "cuda:0" and model.precision_ == "fp32"


def test_on_the_cpu_the_model_stays_there_and_predicts_in_fp32(trained_models, gpus):
    gpus(0)
    model = classifier.load(trained_models["finetune"], device="auto")
    assert model.device == "cpu" and model.precision_ == "fp32"
    with pytest.raises(TextxferError, match="no CUDA GPU is visible"):
        classifier.load(trained_models["finetune"], device="cuda")
    baseline = classifier.load(trained_models["baseline"], device="cuda")  # other kinds run on the CPU anyway
    assert baseline.kind == "baseline"


def test_cached_models_are_kept_per_device(trained_models, gpus):
    gpus(0)
    first = classifier.cached(trained_models["finetune"], "cpu")
    assert classifier.cached(trained_models["finetune"], "cpu") is first
    assert classifier.cached(trained_models["finetune"], "auto") is not first


def test_cli_asks_for_a_missing_gpu_in_one_line(trained_models, gpus, capsys):
    gpus(0)
    assert main(["predict", "--model", str(trained_models["finetune"]), "--device", "cuda", "好"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no CUDA GPU is visible" in err


def test_gpu_batches_follow_a_token_budget():
    rng = np.random.default_rng(0)
    lengths = list(rng.integers(5, 400, size=3000)) + [2000]  # one text longer than the whole budget
    groups = length_groups(lengths, GPU_MAX_BATCH, max_tokens=GPU_TOKEN_BUDGET)
    assert sorted(np.concatenate(groups).tolist()) == list(range(len(lengths)))
    padded = [len(g) * max(lengths[i] for i in g) for g in groups]
    assert all(p <= GPU_TOKEN_BUDGET for p, g in zip(padded, groups) if len(g) > 1)
    assert [len(g) for g in groups if 2000 in [lengths[i] for i in g]] == [1]  # alone, not dropped
    sizes = [len(g) for g in groups]
    assert sizes[0] > 5 * sizes[-2]  # many short texts to a batch, few long ones
    assert np.mean(padded[:-2]) > 0.9 * GPU_TOKEN_BUDGET  # and every batch is nearly full
    assert {len(g) for g in length_groups([3] * 2000, GPU_MAX_BATCH, max_tokens=GPU_TOKEN_BUDGET)} == {512, 464}


def test_prediction_batches_choose_by_device(tiny_bert):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert))
    features = tokenizer(["好" * n for n in range(1, 41)])
    cpu = list(prediction_batches(tokenizer, features, None, False, "pt"))
    gpu = list(prediction_batches(tokenizer, features, None, True, "pt"))
    asked = list(prediction_batches(tokenizer, features, 7, True, "pt"))
    assert max(len(rows) for rows, _ in cpu) <= 16 and len(gpu) == 1 and [len(r) for r, _ in asked][:5] == [7] * 5
