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


@pytest.fixture
def loads(monkeypatch):
    """An empty model cache for the test, and the list of ``(folder name, device, precision)`` it loaded."""
    done = []
    real = classifier.load
    monkeypatch.setattr(classifier, "_CACHE", {})
    monkeypatch.setattr(classifier, "_KEYS", {})  # and the resolved keys: the tests fake the GPUs
    monkeypatch.setattr(classifier, "load", lambda path, device="auto", precision="auto":
                        done.append((path.name, device, precision)) or real(path, device, precision))
    return done


@pytest.fixture(scope="module")
def ensembles(trained_models, tmp_path_factory):
    """Saved ensembles: ``cpu`` of two baseline members (it runs on the CPU whatever is asked), ``mixed`` of
    the baseline and the fine-tuned model (placed as its fine-tuned member is)."""
    from textxfer.ensemble.pipeline import EnsembleClassifier, EnsembleConfig
    from textxfer.registry import load

    folders = {}
    for name, kinds in (("cpu", ("baseline", "baseline")), ("mixed", ("baseline", "finetune"))):
        folders[name] = tmp_path_factory.mktemp(f"{name}-ensemble") / "model"
        members = [load(trained_models[kind], "cpu") for kind in kinds]
        EnsembleClassifier(members, EnsembleConfig("equal")).fit(None, None).save(folders[name])
    return folders


def test_without_a_gpu_auto_and_cpu_share_one_cached_load(trained_models, ensembles, gpus, loads):
    gpus(0)
    first = classifier.cached(trained_models["finetune"], "cpu")
    assert classifier.cached(trained_models["finetune"], "cpu") is first
    assert classifier.cached(trained_models["finetune"], "auto") is first  # auto is the CPU here: no second load
    assert classifier.cached(trained_models["finetune"], "auto", "fp32") is first  # and fp32 is its precision
    assert classifier.cached(str(trained_models["finetune"])) is first
    assert loads == [("finetune", "cpu", "auto")]
    with pytest.raises(TextxferError, match="no CUDA GPU is visible"):  # an absent GPU is still refused
        classifier.cached(trained_models["finetune"], "cuda")
    with pytest.raises(TextxferError, match="needs a GPU"):
        classifier.cached(trained_models["finetune"], "cpu", "bf16")
    # models that run on the CPU whatever is asked load once, even for a GPU this machine lacks
    for folder in (trained_models["baseline"], ensembles["cpu"]):
        model = classifier.cached(folder, "cuda")
        assert classifier.cached(folder, "auto") is model and classifier.cached(folder, "cpu", "fp32") is model
    assert [name for name, *_ in loads] == ["finetune", "finetune", "finetune", "baseline", "model"]
    ensemble = classifier.cached(ensembles["mixed"], "cpu")  # a fine-tuned member: auto is the CPU here too
    assert classifier.cached(ensembles["mixed"], "auto") is ensemble and len(loads) == 6


def test_with_a_gpu_auto_is_cached_as_that_gpu_and_apart_from_the_cpu(trained_models, ensembles, gpus, loads,
                                                                       monkeypatch):
    monkeypatch.setattr(torch.nn.Module, "to", lambda self, *a, **k: self)  # the fake GPU holds nothing
    gpus(2)
    monkeypatch.setenv("LOCAL_RANK", "1")
    on_gpu = classifier.cached(trained_models["finetune"])
    assert on_gpu.precision_ == "bf16"
    assert classifier.cached(trained_models["finetune"], "cuda:1") is on_gpu  # what auto stands for here
    assert classifier.cached(trained_models["finetune"], "cuda", "bf16") is on_gpu
    on_cpu = classifier.cached(trained_models["finetune"], "cpu")
    other_gpu = classifier.cached(trained_models["finetune"], "cuda:0")
    in_fp32 = classifier.cached(trained_models["finetune"], "auto", "fp32")
    assert len({id(on_gpu), id(on_cpu), id(other_gpu), id(in_fp32)}) == 4
    assert on_cpu.precision_ == "fp32" and in_fp32.precision_ == "fp32"
    assert loads == [("finetune", "auto", "auto"), ("finetune", "cpu", "auto"), ("finetune", "cuda:0", "auto"),
                     ("finetune", "auto", "fp32")]
    # an ensemble is placed as its members are: with a fine-tuned member it follows the device, …
    ensemble = classifier.cached(ensembles["mixed"])
    assert classifier.cached(ensembles["mixed"], "cuda:1") is ensemble
    assert classifier.cached(ensembles["mixed"], "cpu") is not ensemble
    # … one of CPU-only members, and a baseline, are one load whatever is asked
    for folder in (trained_models["baseline"], ensembles["cpu"]):
        assert classifier.cached(folder) is classifier.cached(folder, "cpu") is classifier.cached(folder, "cuda:0")
    assert len(loads) == 4 + 2 + 2


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
