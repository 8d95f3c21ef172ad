"""Transfer strategies: which parameters train, per-layer learning rates, gradual unfreezing."""

from __future__ import annotations

import math

from textxfer.errors import TextxferError
from textxfer.transformer.pooling import unused_parameters

STRATEGIES = ("full", "freeze-embeddings", "head-only", "gradual-unfreeze", "contrastive")


def encoder_parts(model):
    """``(embeddings, [layer, ...], head_modules)`` of a BERT/RoBERTa-family classification model."""
    base = model.base_model
    embeddings = getattr(base, "embeddings", None)
    encoder = getattr(base, "encoder", None)
    layers = list(getattr(encoder, "layer", []) or [])
    if embeddings is None or not layers:
        raise TextxferError(
            f"{type(model).__name__}: cannot find embeddings / encoder layers (BERT/RoBERTa layout expected); "
            "use --strategy full with this model"
        )
    in_encoder = {id(p) for p in base.parameters()}
    head = [p for p in model.parameters() if id(p) not in in_encoder]
    return embeddings, layers, head


def head_module(model):
    """The model's classifier head (``model.classifier``: BERT/RoBERTa-family classification models)."""
    head = getattr(model, "classifier", None)
    if head is None:
        raise TextxferError(f"{type(model).__name__}: no `classifier` head found; --strategy head-only needs one")
    return head


def apply_strategy(model, strategy: str) -> None:
    """Set ``requires_grad`` for the start of training under ``strategy``.

    ``full``: everything trains. ``freeze-embeddings``: the embedding block is frozen (for multilingual
    encoders it holds most parameters, so steps get much cheaper). ``head-only``: only the classifier
    head trains. ``gradual-unfreeze``: starts like ``head-only``; :class:`GradualUnfreeze` opens layers.
    ``contrastive``: the body without its embeddings trains on pairs (:mod:`textxfer.transformer.contrastive`), then the
    head is fitted on frozen features.
    """
    if strategy not in STRATEGIES:
        raise TextxferError(f"unknown strategy {strategy!r}; choose one of {list(STRATEGIES)}")
    embeddings, layers, _ = encoder_parts(model)
    for parameter in model.parameters():
        parameter.requires_grad = True
    if strategy in ("freeze-embeddings", "contrastive"):
        for parameter in embeddings.parameters():
            parameter.requires_grad = False
    elif strategy in ("head-only", "gradual-unfreeze"):
        for parameter in model.base_model.parameters():
            parameter.requires_grad = False
        pooler = getattr(model.base_model, "pooler", None)
        if pooler is not None and strategy == "gradual-unfreeze":
            for parameter in pooler.parameters():
                parameter.requires_grad = True
    for parameter in unused_parameters(model):  # BERT's first-token pooler under mean pooling
        parameter.requires_grad = False


def unfreeze_top_layers(model, count: int) -> None:
    """Make the top ``count`` encoder layers trainable (and the embeddings once all layers are)."""
    embeddings, layers, _ = encoder_parts(model)
    for layer in layers[max(0, len(layers) - count):]:
        for parameter in layer.parameters():
            parameter.requires_grad = True
    if count > len(layers):
        for parameter in embeddings.parameters():
            parameter.requires_grad = True


def layers_per_epoch(model, epochs: float) -> int:
    """How many more layers gradual unfreezing opens at each epoch so all are open by the last one."""
    _, layers, _ = encoder_parts(model)
    return max(1, math.ceil(len(layers) / max(1, math.ceil(epochs) - 1))) if epochs > 1 else len(layers)


def parameter_groups(model, learning_rate: float, weight_decay: float, layer_decay: float,
                     head_learning_rate: float | None = None) -> list[dict]:
    """AdamW parameter groups: per-layer learning rates (``lr × decay^(depth from the top)``), the head
    and pooler at ``head_learning_rate`` (default ``learning_rate``), and no weight decay on biases and
    layer norms. All parameters are included, frozen or not, so layers that gradual unfreezing opens
    later are already known to the optimizer."""
    embeddings, layers, head = encoder_parts(model)
    depth_of = {}
    for depth, layer in enumerate(reversed(layers), start=1):
        for parameter in layer.parameters():
            depth_of[id(parameter)] = depth
    for parameter in embeddings.parameters():
        depth_of[id(parameter)] = len(layers) + 1
    groups: dict[tuple[int, bool], list] = {}
    for name, parameter in model.named_parameters():
        depth = depth_of.get(id(parameter), 0)  # head and pooler: depth 0, at the head learning rate
        no_decay = parameter.ndim < 2 or "norm" in name.lower()
        groups.setdefault((depth, no_decay), []).append(parameter)
    head = learning_rate if head_learning_rate is None else head_learning_rate
    return [{"params": params, "lr": head if depth == 0 else learning_rate * layer_decay ** depth,
             "weight_decay": 0.0 if no_decay else weight_decay}
            for (depth, no_decay), params in sorted(groups.items())]


def gradual_unfreeze_callback(model, epochs: float):
    """A ``TrainerCallback`` opening ``layers_per_epoch`` more top layers at each epoch after the first."""
    from transformers import TrainerCallback

    step = layers_per_epoch(model, epochs)

    class GradualUnfreeze(TrainerCallback):
        """Epoch 1: head only; epoch k: the top (k − 1) × step layers as well."""

        def on_epoch_begin(self, args, state, control, **kwargs):
            epoch = int(round(state.epoch or 0))
            if epoch >= 1:
                unfreeze_top_layers(model, epoch * step)

    return GradualUnfreeze()
