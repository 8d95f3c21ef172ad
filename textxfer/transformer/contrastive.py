"""Contrastive tuning of the encoder body before the head is fitted (``--strategy contrastive``; SetFit's idea).

With a few dozen labelled texts a classifier head trained end to end has too little signal, and frozen
features are only as good as the encoder's notion of similarity. SetFit (Tunstall et al., 2022) first
tunes the sentence encoder on *pairs* of training texts — same label: cosine similarity pulled to 1,
different labels: pushed to 0 (``CosineSimilarityLoss``: mean squared error on the cosine) — and then fits
a logistic regression on the tuned embeddings. ``n`` texts give ``n × (n − 1) / 2`` pairs, so 32 texts
already give hundreds of training examples.

Here the pairs run through the Hugging Face ``Trainer`` (:class:`PairEncoder` wraps the model's own body
and pooling; no training loop of ours), the embedding block stays frozen (most of a multilingual
encoder's parameters; the steps get much cheaper), and the head is then fitted by :mod:`textxfer.transformer.head_fit`
on the tuned, frozen features — so the result is an ordinary fine-tuned folder.
"""

from __future__ import annotations

import math
import tempfile
import time

import numpy as np

from textxfer.transformer import memory
from textxfer.transformer.batch_size import nominal
from textxfer.errors import TextxferError

PAIR_ITERATIONS = 20  # SetFit's classic setting: per iteration, one same-label and one other-label partner per text
WARMUP_RATIO = 0.1


MULTILABEL_PAIRS = ("shared-label", "label-set")


def pairs(labels, iterations: int, seed: int, multilabel_rule: str = "shared-label") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(first, second, target)``: for every text and iteration a partner of the same label (target 1)
    and one of another label (target 0), drawn at random — SetFit's pair generation. A class with one
    text pairs it with itself.

    Multi-label ``labels`` (a 0/1 ``(texts, labels)`` array) under ``shared-label``: the partner of target 1 has a
    label drawn from the text's own, the partner of target 0 shares none of its labels (a text without labels:
    its partners are another text without labels, and one with any) — pairs that agree with one classifier per
    label. Under ``label-set``: each distinct set of labels is treated as one class (a text with labels {a, b} is
    pushed away from one with {a}, against what label a's classifier needs).
    """
    labels = np.asarray(labels)
    if labels.ndim == 2:
        if multilabel_rule not in MULTILABEL_PAIRS:
            raise TextxferError(f"unknown multi-label pair rule {multilabel_rule!r}; choose one of {list(MULTILABEL_PAIRS)}")
        if multilabel_rule == "label-set":
            labels = np.unique(labels, axis=0, return_inverse=True)[1].reshape(-1)
        else:
            return _shared_label_pairs(labels, iterations, seed)
    if len(set(labels.tolist())) < 2:
        raise TextxferError("--strategy contrastive needs training texts of at least two classes")
    rng = np.random.default_rng(seed)
    same = {label: np.flatnonzero(labels == label) for label in set(labels.tolist())}
    other = {label: np.flatnonzero(labels != label) for label in same}
    first, second, target = [], [], []
    for _ in range(iterations):
        for row, label in enumerate(labels.tolist()):
            first += [row, row]
            second += [int(rng.choice(same[label])), int(rng.choice(other[label]))]
            target += [1.0, 0.0]
    return np.array(first), np.array(second), np.array(target, dtype=np.float32)


def _shared_label_pairs(indicators: np.ndarray, iterations: int, seed: int):
    """:func:`pairs`'s ``shared-label`` rule for 0/1 ``indicators``."""
    indicators = indicators.astype(bool)
    if len(np.unique(indicators, axis=0)) < 2:
        raise TextxferError("--strategy contrastive needs training texts with at least two different label sets")
    rng = np.random.default_rng(seed)
    holders = [np.flatnonzero(column) for column in indicators.T]
    unlabelled, labelled = np.flatnonzero(~indicators.any(axis=1)), np.flatnonzero(indicators.any(axis=1))
    # Texts sharing no label with a row: rows whose indicators have no 1 in common with it.
    disjoint = {}
    first, second, target = [], [], []
    for _ in range(iterations):
        for row, own in enumerate(indicators):
            own_labels = np.flatnonzero(own)
            if len(own_labels):
                key = tuple(own_labels.tolist())
                if key not in disjoint:
                    disjoint[key] = np.flatnonzero(~(indicators[:, own_labels].any(axis=1)))
                alike, unlike = holders[int(rng.choice(own_labels))], disjoint[key]
            else:
                alike, unlike = (unlabelled if len(unlabelled) > 1 else np.array([row])), labelled
            partners = [(int(rng.choice(alike)), 1.0)] + ([(int(rng.choice(unlike)), 0.0)] if len(unlike) else [])
            for partner, same in partners:
                first.append(row)
                second.append(partner)
                target.append(same)
    return np.array(first), np.array(second), np.array(target, dtype=np.float32)


def planned_steps(train_texts: int, batch_size: int, iterations: int = PAIR_ITERATIONS) -> int:
    """Optimizer steps of the contrastive stage: ``2 × iterations × texts`` pairs, ``batch_size`` per step."""
    return math.ceil(2 * iterations * train_texts / max(1, batch_size))


def PairEncoder(model):  # noqa: N802 - a factory that builds an nn.Module lazily (torch import)
    """An ``nn.Module`` over ``model``'s body: ``forward(input_ids, attention_mask, labels)`` embeds a batch
    whose first half holds the pairs' first texts and second half their partners, pooled as the classifier
    reads them (mean over the attention mask, or the first token), and returns the cosine-similarity loss."""
    import torch

    from textxfer.transformer.pooling import masked_mean, of as pooling_of

    mean = pooling_of(model) == "mean"

    class _PairEncoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = model.base_model

        def forward(self, input_ids, attention_mask, labels=None, token_type_ids=None):
            extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            hidden = self.body(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
            pooled = masked_mean(hidden, attention_mask) if mean else hidden[:, 0]
            half = pooled.shape[0] // 2
            cosine = torch.nn.functional.cosine_similarity(pooled[:half].float(), pooled[half:].float(), dim=-1)
            loss = None if labels is None else torch.nn.functional.mse_loss(cosine, labels.float())
            return {"loss": loss, "logits": cosine}

    return _PairEncoder()


def _collator(tokenizer, encoded: dict):
    """Batches of pair rows → one padded batch: the first texts, then their partners."""
    import torch

    def collate(rows: list[dict]) -> dict:
        order = [row["first"] for row in rows] + [row["second"] for row in rows]  # the "length" column is not an input
        batch = tokenizer.pad([{k: encoded[k][i] for k in encoded} for i in order], return_tensors="pt")
        batch["labels"] = torch.tensor([row["target"] for row in rows], dtype=torch.float32)
        return batch

    return collate


def tune_body(classifier, texts: list, y: np.ndarray, progress: bool, device: dict) -> dict:
    """Tune what is trainable in ``classifier.model_``'s body on pairs of ``texts`` (strings, or text pairs read as
    one input each; ``y`` class ids or multi-label 0/1 rows: :func:`pairs`) (the caller's
    ``apply_strategy(model, "contrastive")`` froze the embeddings); returns the stage's stats."""
    import datasets
    import torch
    from transformers import Trainer, TrainingArguments

    from textxfer.transformer import train_log
    from textxfer.transformer.models import quiet_progress

    cfg, model = classifier.config, classifier.model_
    first, second, target = pairs(y, cfg.pair_iterations, cfg.seed, cfg.multilabel_pairs)
    encoder = PairEncoder(model)
    encoded = classifier.encode(texts)  # each text tokenised once, with the prefix and max length of the classifier
    tokens = np.array([len(ids) for ids in encoded["input_ids"]])
    # A pair's padded cost is its longer text: batches of similar such lengths (the Trainer's length grouping)
    # pad far less than random ones.
    train_set = datasets.Dataset.from_dict({"first": first, "second": second, "target": target,
                                            "length": np.maximum(tokens[first], tokens[second])})
    trainable = [p for p in encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.pair_learning_rate, weight_decay=cfg.weight_decay,
                                  fused=device.get("_fused") or None)
    batch = nominal(cfg.batch_size)  # SetFit's 16 for auto: the pair stage runs below 65 texts
    # On the CPU a step of `batch` pairs runs in passes of at most memory.CPU_TOKENS_PER_PASS tokens (the same step)
    per_pass, passes = memory.plan(classifier, texts, batch, 2)[:2] if device.get("use_cpu") else (batch, 1)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="textxfer-contrastive-") as scratch:  # nothing is saved there
        arguments = TrainingArguments(
            output_dir=scratch, num_train_epochs=1, per_device_train_batch_size=per_pass,
            gradient_accumulation_steps=passes,
            learning_rate=cfg.pair_learning_rate, warmup_steps=math.ceil(WARMUP_RATIO * len(first) / batch),
            save_strategy="no", eval_strategy="no", logging_strategy="steps", logging_steps=cfg.logging_steps,
            report_to="none", seed=cfg.seed, data_seed=cfg.seed, disable_tqdm=not progress,
            remove_unused_columns=False,
            train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
            **{k: v for k, v in device.items() if not k.startswith("_")})
        trainer = Trainer(model=encoder, args=arguments, train_dataset=train_set,
                          data_collator=_collator(classifier.tokenizer_, encoded), optimizers=(optimizer, None))
        train_log.install(trainer, progress)
        with quiet_progress():
            result = trainer.train()
    for parameter in model.parameters():  # the head is fitted next on frozen features
        parameter.requires_grad = False
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {"pairs": int(len(first)), "pair_iterations": cfg.pair_iterations, "steps": trainer.state.global_step,
            "learning_rate": cfg.pair_learning_rate, "seconds": round(time.perf_counter() - started, 2),
            "train_loss": round(float(result.training_loss), 6),
            "first_logged_loss": losses[0] if losses else None, "last_logged_loss": losses[-1] if losses else None,
            "trainable_parameters": int(sum(p.numel() for p in trainable)), "log_history": trainer.state.log_history}


def describe(stats: dict) -> str:
    """One line announcing the contrastive stage."""
    return (f"contrastive: {stats['pairs']:,} pairs ({stats['pair_iterations']} per text and label side), "
            f"{stats['steps']} steps at {stats['learning_rate']:g} in {stats['seconds']:.0f} s, "
            f"loss {stats['train_loss']:.4f}; embeddings frozen")
