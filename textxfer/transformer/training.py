"""Glue between textxfer's fine-tuning config and the Hugging Face ``Trainer`` (no hand-rolled loop)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from textxfer.transformer import memory, schedules
from textxfer.transformer.batch_size import nominal
from textxfer.data.dataset import TextDataset
from textxfer.errors import TextxferError
from textxfer.core.metrics import score
from textxfer.transformer.pooling import of as pooling_of
from textxfer.transformer.recipe import describe, fits_head, plan
from textxfer.transformer.strategies import apply_strategy, gradual_unfreeze_callback, head_module, parameter_groups


def device_settings(precision: str, compile_model: bool = False) -> dict:
    """``TrainingArguments`` for the device (keys starting with ``_`` are textxfer's own).

    On a GPU: mixed precision (bf16 where supported, else fp16), TF32 matrix products where the GPU has
    them, two data-loading workers with pinned memory (collation off the training thread) and a fused
    AdamW (``_fused``); on the CPU: fp32 and collation in the training process (the measured 2-core
    recipe). ``compile_model``: ``torch.compile`` through the Trainer (``--compile``)."""
    import torch

    cuda = torch.cuda.is_available()
    if precision == "auto":
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "fp32"
    if precision in ("bf16", "fp16") and not cuda:
        raise TextxferError(f"--precision {precision} needs a GPU; use --precision fp32 (or auto) on CPU")
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    settings = {"bf16": precision == "bf16", "fp16": precision == "fp16", "use_cpu": not cuda,
                **({"ddp_backend": "gloo"} if distributed and not cuda else {}), "_precision": precision,
                "_fused": cuda, "dataloader_num_workers": GPU_LOADER_WORKERS if cuda else 0,
                "dataloader_pin_memory": cuda, "torch_compile": compile_model}
    if cuda:
        from transformers.utils import is_torch_tf32_available

        settings["tf32"] = bool(is_torch_tf32_available())
    return settings


GPU_LOADER_WORKERS = 2


def _dataset(features: dict, labels: np.ndarray):
    """A ``datasets.Dataset`` of model inputs and targets: class ids, or a multi-label row's 0/1 vector as floats
    (what binary cross-entropy takes)."""
    import datasets

    labels = np.asarray(labels)
    targets = labels.astype(np.float32).tolist() if labels.ndim == 2 else labels.tolist()
    return datasets.Dataset.from_dict({**features, "labels": targets})


def best_metric(label_set) -> str:
    """The validation figure that picks the best checkpoint and drives early stopping: macro-F1, or for a
    multi-label model micro-F1 at thresholds tuned on validation (:func:`textxfer.core.thresholds.tuned_micro_f1`)."""
    return "micro_f1" if label_set.multi_label else "macro_f1"


def _compute_metrics(label_set):
    from textxfer.core.thresholds import tuned_micro_f1

    def compute(evaluation) -> dict[str, float]:
        logits = evaluation.predictions[0] if isinstance(evaluation.predictions, tuple) else evaluation.predictions
        # label_ids come back in the same (possibly length-grouped) order as the predictions.
        logits, truth = np.asarray(logits, dtype=np.float64), np.asarray(evaluation.label_ids)
        if label_set.multi_label:
            return {"micro_f1": tuned_micro_f1(truth, 1 / (1 + np.exp(-logits)))}
        result = score(truth, logits.argmax(axis=-1), label_set)
        return {"accuracy": result["accuracy"], "macro_f1": result["macro_f1"]}

    return compute


def _class_weighted_loss(targets: np.ndarray, num_labels: int):
    """The loss weighted against imbalance (``compute_loss_func`` of the Trainer): cross-entropy weighted by inverse
    class frequency, or for multi-label targets binary cross-entropy whose positives of each label weigh its
    negatives ÷ positives (``pos_weight``: a label on 2 % of the texts counts its positives 49 ×)."""
    import torch

    targets = np.asarray(targets)
    multi = targets.ndim == 2
    if multi:
        positives = targets.sum(axis=0).astype(np.float64)
        weights = torch.tensor(np.where(positives > 0, (len(targets) - positives) / np.maximum(positives, 1), 1.0),
                               dtype=torch.float32)
    else:
        counts = np.bincount(targets, minlength=num_labels).astype(np.float64)
        weights = torch.tensor(len(targets) / (num_labels * np.maximum(counts, 1)), dtype=torch.float32)

    def loss(outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        logits, weight = logits.view(-1, num_labels).float(), weights.to(logits.device)
        if multi:
            labels = labels.view(-1, num_labels).float()
            per_entry = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, pos_weight=weight,
                                                                             reduction="none")
            if num_items_in_batch is None:
                return per_entry.mean()
            return per_entry.sum() / torch.as_tensor(num_items_in_batch, device=logits.device, dtype=per_entry.dtype)
        labels = labels.view(-1)
        if num_items_in_batch is None:
            return torch.nn.functional.cross_entropy(logits, labels, weight=weight)
        # A step run as several passes (gradient accumulation, token-budgeted passes): the Trainer sums what each
        # pass returns, so each returns its weighted sum over the texts of the whole step (a weighted mean per step).
        summed = torch.nn.functional.cross_entropy(logits, labels, weight=weight, reduction="sum")
        return summed / torch.as_tensor(num_items_in_batch, device=summed.device, dtype=summed.dtype)

    return loss


def _arguments(cfg, output_dir: str, has_validation: bool, progress: bool, device: dict, grouping: bool,
               recipe: dict, per_pass: int | None = None, passes: int = 1):
    """``TrainingArguments`` of a run: a step of ``cfg.batch_size`` texts as ``passes`` passes of ``per_pass``
    (the CPU's token budget, :mod:`textxfer.transformer.memory`) times ``--gradient-accumulation``."""
    from transformers import TrainingArguments

    epochs, eval_strategy, eval_steps = recipe["epochs"], recipe["eval_strategy"], recipe["eval_steps"]
    evaluating = has_validation and eval_strategy != "no"
    strategy = eval_strategy if evaluating else ("steps" if eval_strategy == "steps" else "epoch")
    warmup = cfg.warmup if cfg.warmup < 1 else int(cfg.warmup)
    schedule = schedules.trainer_settings(cfg.lr_scheduler, recipe["planned_steps"] / recipe["steps_per_epoch"],
                                          evaluating)
    return TrainingArguments(
        output_dir=output_dir, num_train_epochs=epochs, max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay, warmup_steps=warmup,
        per_device_train_batch_size=per_pass or cfg.batch_size, per_device_eval_batch_size=cfg.eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation * passes,
        eval_strategy=strategy if evaluating else "no", save_strategy=strategy, eval_steps=eval_steps,
        save_steps=eval_steps, save_total_limit=2,
        load_best_model_at_end=evaluating, metric_for_best_model=recipe["best_metric"] if evaluating else None,
        greater_is_better=True, logging_strategy="steps", logging_steps=cfg.logging_steps, report_to="none",
        seed=cfg.seed, data_seed=cfg.seed, disable_tqdm=not progress, **schedule,
        train_sampling_strategy="group_by_length" if grouping else "random",
        **{k: v for k, v in device.items() if not k.startswith("_")},
    )


def _memory_choices(classifier, cfg, strategy: str, device: dict, texts: list[str]) -> list[str]:
    """Set the attention dropout of a run that trains the encoder (``--attention-dropout``) and say what
    bounds its memory (:mod:`textxfer.transformer.memory`): sentences for the recipe line."""
    if strategy == "head-only":
        return []  # the encoder only runs in evaluation mode
    out = []
    own = memory.set_attention_dropout(classifier.model_, cfg.attention_dropout)
    if own is not None and cfg.attention_dropout is not None and own != cfg.attention_dropout:
        out.append(f"attention dropout {cfg.attention_dropout:g} (the model's own {own:g}; PyTorch's fused attention "
                   "then keeps no score matrices: less memory and faster steps on long texts; --attention-dropout "
                   "none keeps the model's)")
    if device["use_cpu"]:
        if strategy == "contrastive":
            pairs = nominal(cfg.batch_size)
            per_pass, _, typical, _ = memory.plan(classifier, texts, pairs, 2)
            why = memory.describe(pairs, per_pass, typical, "pairs")
        else:
            per_pass, _, typical, _ = memory.plan(classifier, texts, cfg.batch_size)
            why = memory.describe(cfg.batch_size, per_pass, typical)
        out += [why] if why else []
    return out


def _last_checkpoint(folder: str) -> str | None:
    """The newest complete checkpoint in ``folder``: one whose trainer state was written.

    ``Trainer`` writes ``trainer_state.json`` after the weights and optimizer state, so a checkpoint
    without it was cut off mid-save (a killed run) and is skipped in favour of the one before.
    """
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    if not Path(folder).is_dir():
        return None
    found = [p for p in Path(folder).glob(f"{PREFIX_CHECKPOINT_DIR}-*") if p.name.split("-")[-1].isdigit()]
    for path in sorted(found, key=lambda p: int(p.name.split("-")[-1]), reverse=True):
        if (path / "trainer_state.json").is_file():
            return str(path)
    return None


def resolve_batch(classifier, train: TextDataset, pooling: str, world_size: int, device: dict):
    """``(config with the batch and learning rate this run uses, sentences for what was chosen)``.

    ``--batch-size auto`` (``textxfer.transformer.batch_size``): 16 on the CPU and for strategies that fit a head rather
    than train the model in steps; on a GPU sized by tokens, steps per epoch and free memory (one probed
    step), with the learning rate scaled. Every process of a multi-GPU run takes the smallest batch any chose."""
    from dataclasses import replace

    from textxfer.transformer import batch_size
    from textxfer.transformer.recipe import choose_strategy

    cfg = classifier.config
    if cfg.batch_size != "auto":
        return cfg, []
    strategy, _ = choose_strategy(cfg, len(train), pooling)
    if device["use_cpu"] or strategy in ("contrastive", "head-only"):
        return replace(cfg, batch_size=batch_size.CPU_BATCH), []
    lengths = [len(ids) for ids in classifier.encode(train.inputs)["input_ids"]]
    batch, why = batch_size.choose("auto", len(train), float(np.mean(lengths)), True, world_size,
                                   cfg.gradient_accumulation)
    batch, memory = batch_size.fit_memory(batch, batch_size.memory_probe(classifier.model_, classifier.max_length_,
                                                                         device["_precision"]))
    batch = _smallest_over_processes(batch, world_size)
    rate, rate_why = batch_size.scaled_rate(cfg.learning_rate, batch, world_size, cfg.gradient_accumulation)
    return replace(cfg, batch_size=batch, learning_rate=rate), [w for w in (why, memory, rate_why) if w]


def _smallest_over_processes(batch: int, world_size: int) -> int:
    """The smallest ``batch`` of all processes (their free memory can differ; they must step together)."""
    if world_size <= 1:
        return batch
    import torch
    from accelerate import PartialState

    state = PartialState()  # the process group the Trainer will use (set up now if it is not yet)
    value = torch.tensor([batch], device=state.device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MIN)
    return int(value.item())


def _soft_target_loss(num_labels: int):
    """Cross-entropy against a teacher's class probabilities (``compute_loss_func`` of a distillation): KL(teacher ‖
    student) plus the teacher's entropy, a constant, so the same gradients as KL. Validation rows carry class ids,
    which ``cross_entropy`` takes as well."""
    import torch

    def loss(outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        logits = logits.view(-1, num_labels).float()
        rows = torch.as_tensor(num_items_in_batch if num_items_in_batch is not None else len(logits),
                               device=logits.device, dtype=torch.float32)
        if labels.dim() == 2:  # the Trainer counted each row's probabilities as items: a row is num_labels of them
            labels, rows = labels.float(), rows / num_labels
        if num_items_in_batch is None:
            return torch.nn.functional.cross_entropy(logits, labels)
        # A step run as several passes: each returns its share of the step's mean over rows (see _class_weighted_loss).
        return torch.nn.functional.cross_entropy(logits, labels, reduction="sum") / rows

    return loss


def train_model(classifier, train: TextDataset, validation: TextDataset | None, progress: bool,
                soft_targets: np.ndarray | None = None):
    """Train ``classifier.model_`` in place with the ``Trainer``; returns ``(log_history, stats)``. ``soft_targets``
    (a distillation's teacher probabilities, one row per training text): the body and head train on them (strategy
    ``full`` or ``freeze-embeddings``; a multi-label model's outputs by binary cross-entropy on each label's
    probability) instead of on ``train``'s labels."""
    import torch
    from transformers import DataCollatorWithPadding, EarlyStoppingCallback, Trainer, default_data_collator

    cfg, model, labels = classifier.config, classifier.model_, classifier.labels
    pooling = pooling_of(model)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    no_search = None
    if soft_targets is not None and cfg.strategy not in ("full", "freeze-embeddings"):
        raise TextxferError(f"training on a teacher's probabilities needs --strategy full or freeze-embeddings, not "
                            f"{cfg.strategy!r}")
    if cfg.strategy == "auto":  # choose on validation (textxfer.transformer.auto_choice) where there is one
        from textxfer.transformer import auto_choice, auto_search

        no_search = auto_choice.searches(len(train), validation is not None and len(validation) > 0, world_size)
        if no_search is None:
            return auto_search.search(classifier, train, validation, progress, train_model)
    device = device_settings(cfg.precision, cfg.compile)
    cfg, sizing = resolve_batch(classifier, train, pooling, world_size, device)  # --batch-size auto
    recipe = plan(cfg, len(train), world_size, pooling)
    if no_search:  # the strategy's sentence comes first among the plan's choices
        recipe["choices"][0] += f"; no search on validation: {no_search}"
    recipe = {**recipe, "pooling": pooling, "text_prefix": getattr(classifier, "text_prefix_", ""),
              "best_metric": best_metric(labels),
              "choices": [*getattr(classifier, "input_choices_", []), *sizing, *recipe["choices"]]}
    strategy = recipe["strategy"]
    recipe["choices"] += _memory_choices(classifier, cfg, strategy, device, train.inputs)
    announcement = describe(recipe)
    if announcement and int(os.environ.get("RANK", "0")) == 0:
        print(announcement, flush=True)
    apply_strategy(model, strategy)
    y_train = labels.targets(train.labels) if soft_targets is None else np.asarray(soft_targets, dtype=np.float32)
    if labels.multi_label and not fits_head(strategy, cfg.head_solver) and soft_targets is None:
        start_at_label_shares(model, y_train)
    y_validation = labels.targets(validation.labels) if validation is not None else np.zeros(0, dtype=np.int64)
    features = lambda texts, module: classifier_inputs(  # noqa: E731
        classifier, texts, module, cfg.feature_cache, progress)
    if fits_head(strategy, cfg.head_solver):
        from textxfer.transformer import contrastive
        from textxfer.transformer.head_fit import describe as describe_head, fit_head

        if cfg.resume and int(os.environ.get("RANK", "0")) == 0:
            print(f"--resume: strategy {strategy} keeps no checkpoints (the head is fitted, not trained in steps); "
                  "training from the start", flush=True)
        tuned = None
        if strategy == "contrastive":
            tuned = contrastive.tune_body(classifier, train.inputs, y_train, progress, device)
            if int(os.environ.get("RANK", "0")) == 0:
                print(contrastive.describe(tuned), flush=True)
        log, stats = fit_head(classifier, train.inputs, y_train, validation.inputs if validation is not None else [],
                              y_validation, features)
        if int(os.environ.get("RANK", "0")) == 0:
            print(describe_head(stats), flush=True)
        if tuned is not None:
            log = tuned.pop("log_history") + log
            stats = {**stats, "steps": tuned["steps"], "train_seconds": round(stats["train_seconds"] + tuned["seconds"], 2),
                     "trainable_parameters_at_end": stats["trainable_parameters_at_end"] + tuned["trainable_parameters"],
                     "contrastive": tuned}
        return log, {**stats, "strategy": strategy, "recipe": recipe}
    if strategy == "head-only":
        # Feature extraction: the frozen encoder runs once per text; the head then trains on cached features.
        trained = HeadOnly(model, cfg.class_weighted and _class_weighted_loss(y_train, len(labels)))
        head = head_module(model)
        train_set = _dataset({"features": features(train.inputs, head)}, y_train)
        validation_set = (_dataset({"features": features(validation.inputs, head)}, y_validation)
                          if validation is not None else None)
        collator, grouping = default_data_collator, False
    else:
        trained = model
        train_set = _dataset(classifier.encode(train.inputs), y_train)
        validation_set = _dataset(classifier.encode(validation.inputs), y_validation) if validation is not None else None
        collator, grouping = DataCollatorWithPadding(classifier.tokenizer_), cfg.group_by_length
    temporary = None
    output_dir = cfg.checkpoint_dir
    if output_dir is None:
        temporary = tempfile.TemporaryDirectory(prefix="textxfer-checkpoints-")
        output_dir = temporary.name
    resume_from = _last_checkpoint(output_dir) if cfg.resume else None
    if cfg.resume and resume_from is None:
        raise TextxferError(f"--resume: no checkpoint in {output_dir}; start without --resume")
    per_pass, passes = (memory.plan(classifier, train.inputs, cfg.batch_size)[:2] if device["use_cpu"] and trained is model
                        else (cfg.batch_size, 1))
    arguments = _arguments(cfg, output_dir, validation_set is not None, progress, device, grouping, recipe,
                           per_pass, passes)
    if strategy == "head-only":
        groups = [{"params": list(trained.parameters()), "weight_decay": cfg.weight_decay,
                   "lr": recipe["head_learning_rate"]}]
    else:
        groups = parameter_groups(model, cfg.learning_rate, cfg.weight_decay, cfg.layer_lr_decay,
                                  recipe["head_learning_rate"])  # the recipe's: 20× while the step floor binds
    optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate, fused=device["_fused"] or None)
    callbacks = []
    if validation_set is not None and recipe["eval_strategy"] != "no" and cfg.early_stopping > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping))
    if strategy == "gradual-unfreeze":
        callbacks.append(gradual_unfreeze_callback(model, recipe["epochs"]))
    loss = _class_weighted_loss(y_train, len(labels)) if cfg.class_weighted and strategy != "head-only" else None
    if soft_targets is not None:  # a multi-label model's own loss is binary cross-entropy, which takes probabilities
        loss = None if labels.multi_label else _soft_target_loss(len(labels))
    trainer = Trainer(model=trained, args=arguments, data_collator=collator, train_dataset=train_set,
                      eval_dataset=validation_set, processing_class=classifier.tokenizer_ if trained is model else None,
                      compute_metrics=_compute_metrics(labels), compute_loss_func=loss, callbacks=callbacks,
                      optimizers=(optimizer, None))
    from textxfer.transformer import train_log
    from textxfer.transformer.models import quiet_progress

    train_log.install(trainer, progress)
    try:
        with quiet_progress():  # hides the "Writing model shards" bar of each checkpoint save, not the training bar
            result = trainer.train(resume_from_checkpoint=resume_from)
    finally:
        if temporary is not None:
            temporary.cleanup()
    trainable = sum(p.numel() for p in trained.parameters() if p.requires_grad)
    stats = {
        "strategy": strategy, "precision": device["_precision"], "device": str(next(model.parameters()).device),
        "attention": getattr(model.config, "_attn_implementation", None),  # sdpa: transformers' default where supported
        "world_size": trainer.args.world_size, "steps": trainer.state.global_step,
        "train_seconds": round(result.metrics.get("train_runtime", 0.0), 2),
        "train_samples_per_second": result.metrics.get("train_samples_per_second"),
        f"best_validation_{recipe['best_metric']}": trainer.state.best_metric, "trainable_parameters_at_end": trainable,
        "resumed_from": resume_from, "recipe": recipe,
        "lr_scheduler": {"name": cfg.lr_scheduler, "trainer_type": schedules.SCHEDULES[cfg.lr_scheduler],
                         "options": dict(arguments.lr_scheduler_kwargs or {})},
    }
    return trainer.state.log_history, stats


def start_at_label_shares(model, targets: np.ndarray) -> None:
    """Multi-label: start each output's bias at the log-odds of its label's share of the training texts (clipped to
    [1e-4, 1 − 1e-4]), so the untrained head already predicts each label's base rate. A fresh head starts every
    sigmoid near 0.5; with labels on a few percent of texts the first many steps are then spent pushing all of
    them down (RetinaNet's prior initialisation, Lin et al., 2017)."""
    import torch

    from textxfer.transformer.head_fit import last_linear

    share = np.clip(np.asarray(targets, dtype=np.float64).mean(axis=0), 1e-4, 1 - 1e-4)
    with torch.no_grad():
        bias = last_linear(head_module(model)).bias
        bias.copy_(torch.as_tensor(np.log(share / (1 - share)), dtype=bias.dtype))


def classifier_inputs(classifier, texts: list, module, cache: str | None = None, progress: bool = False) -> np.ndarray:
    """What ``module`` (part of the frozen model's classifier head) receives for each text — the first
    token only for a module fed whole sequences — computed once; kept in ``cache`` (a folder) when given;
    ``progress``: a bar over the texts."""
    import torch
    from tqdm.auto import tqdm

    from textxfer.transformer import feature_cache

    key = feature_cache.key(classifier, texts, module) if cache else None
    if key is not None and (cached := feature_cache.read(cache, key, len(texts))) is not None:
        return cached
    captured: list[np.ndarray] = []

    def keep(_, inputs):
        features = inputs[0]
        captured.append((features[:, :1] if features.ndim == 3 else features).detach().float().cpu().numpy())

    from textxfer.transformer import devices

    model = classifier.model_.eval()
    device = str(next(model.parameters()).device)
    handle = module.register_forward_pre_hook(keep)
    features = None
    try:  # the precision prediction uses too (bf16 on a GPU), so the fitted head sees the features it will get
        with torch.inference_mode(), devices.autocast(device, getattr(classifier, "precision_", "fp32")), \
                tqdm(total=len(texts), desc="frozen features", unit="text", leave=False, disable=not progress) as bar:
            for rows, batch in classifier.batches(texts):
                model(**batch)
                bar.update(len(rows))
                if features is None:
                    features = np.empty((len(texts), *captured[-1].shape[1:]), dtype=np.float32)
                features[rows] = captured.pop()
    finally:
        handle.remove()
    if key is not None:
        feature_cache.write(cache, key, features)
    return features


def HeadOnly(model, loss_function):  # noqa: N802 - a factory that builds an nn.Module lazily (torch import)
    """An ``nn.Module`` wrapping ``model``'s classifier head: ``forward(features, labels)``."""
    import torch
    from transformers.modeling_outputs import SequenceClassifierOutput

    class _HeadOnly(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = head_module(model)

        def forward(self, features, labels=None):
            logits = self.head(features)
            loss = None
            if labels is not None and loss_function:
                loss = loss_function({"logits": logits}, labels)
            elif labels is not None and labels.ndim == 2:  # multi-label: one sigmoid per label
                loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.float())
            elif labels is not None:
                loss = torch.nn.functional.cross_entropy(logits.float(), labels)
            return SequenceClassifierOutput(loss=loss, logits=logits)

    return _HeadOnly()
