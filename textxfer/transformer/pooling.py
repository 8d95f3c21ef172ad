"""How a fine-tuned model turns token states into the one vector its classifier reads: ``cls`` or ``mean``.

Hugging Face's BERT/RoBERTa classification models classify from the first token (BERT through its
pooler). Sentence-embedding encoders — the bundled multilingual-e5-small and all-MiniLM-L6-v2, and
sentence-transformers models in general — were trained so that the *mean* of the token states over the
attention mask is the text's meaning; their first token was never trained to be. Measured on
``sample_data/`` (multilingual-e5-small frozen, logistic regression, 3 seeds): 32 training texts reach
0.747 test accuracy from mean-pooled features against 0.632 from the first token; 128 texts 0.818 against
0.733 (BENCHMARKS.md, "Pooling and the text prefix"). ``--pooling auto`` (the default) therefore uses ``mean`` for encoders
trained that way and ``cls`` for the rest (for example ``bert-base-chinese``, whose pooler is trained).

Mean pooling is installed on the ordinary classification model by switching its class to a subclass
(same name, so ``config.json`` keeps the usual ``architectures``) whose ``forward`` mean-pools and feeds
the model's own classifier. ``config.json`` records ``textxfer_pooling: "mean"`` and
:func:`restore` re-installs it when textxfer loads the folder; ONNX export traces the pooled forward.
"""

from __future__ import annotations

import json
from pathlib import Path

from textxfer.errors import TextxferError

POOLINGS = ("auto", "cls", "mean")
CONFIG_KEY = "textxfer_pooling"
_SENTENCE_POOLING = "1_Pooling/config.json"  # sentence-transformers' layout: how the model was pooled in training


def _pooling_config(source: str) -> dict | None:
    """The sentence-transformers pooling config of ``source`` (a folder or hub id), None when it has none."""
    path = Path(source) / _SENTENCE_POOLING
    if not path.is_file() and not Path(source).is_dir():
        path = _hub_file(source)
    try:
        value = json.loads(path.read_text(encoding="utf-8")) if path is not None and path.is_file() else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _hub_file(name: str) -> Path | None:
    """``1_Pooling/config.json`` of hub model ``name`` (downloaded like the model's own files; None offline)."""
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(name, _SENTENCE_POOLING))
    except Exception:  # noqa: BLE001 - not a sentence-transformers repo, offline, or not a repo id
        return None


def trained_pooling(name: str, source: str) -> tuple[str | None, str]:
    """``(pooling, evidence)``: how encoder ``name`` (resolved to ``source``) was pooled in its own training,
    or ``(None, why unknown)``."""
    from textxfer.transformer import bundled

    if bundled.is_bundled(name):
        return "mean", f"{name} is a sentence-embedding encoder trained with mean pooling"
    config = _pooling_config(source)
    if config is None:
        return None, f"{name} has no sentence-transformers pooling config ({_SENTENCE_POOLING})"
    if config.get("pooling_mode_mean_tokens"):
        return "mean", f"{name}'s {_SENTENCE_POOLING} says it was trained with mean pooling"
    if config.get("pooling_mode_cls_token"):
        return "cls", f"{name}'s {_SENTENCE_POOLING} says it was trained with first-token pooling"
    return None, f"{name}'s {_SENTENCE_POOLING} names neither mean nor first-token pooling"


def expected(setting: str, name: str) -> str | None:
    """The pooling a run of ``--pooling setting`` on encoder ``name`` will use, without loading the model or
    asking the hub; None when only the hub could tell (``auto`` with a hub id). :func:`choose` decides when the
    model is loaded."""
    if setting != "auto":
        return setting
    from textxfer.transformer import bundled

    if not bundled.is_bundled(name) and not Path(name).is_dir():
        return None
    config = _pooling_config(name) if Path(name).is_dir() else None
    return "mean" if bundled.is_bundled(name) or (config or {}).get("pooling_mode_mean_tokens") else "cls"


def supports_mean(model) -> bool:
    """Whether ``model``'s classifier can read a mean-pooled vector: BERT's (dropout + linear on the pooled
    vector) or RoBERTa's (a head that reads the first position of what it is given)."""
    import torch

    if not type(model).__name__.endswith("ForSequenceClassification") or hasattr(model, "pre_classifier"):
        return False  # token classifiers, DistilBERT (an extra layer before the classifier), …
    head = getattr(model, "classifier", None)
    bert_like = (isinstance(head, torch.nn.Linear) and isinstance(getattr(model, "dropout", None), torch.nn.Dropout)
                 and hasattr(model.base_model, "pooler"))
    roberta_like = head is not None and hasattr(head, "out_proj") and hasattr(head, "dense")
    return bert_like or roberta_like


def choose(asked: str, name: str, source: str, model) -> tuple[str, str | None]:
    """``(pooling, why)``: ``asked`` itself unless it is ``auto`` (then ``why`` says what decided)."""
    if asked not in POOLINGS:
        raise TextxferError(f"unknown pooling {asked!r}; choose one of {list(POOLINGS)}")
    if asked == "mean" and not supports_mean(model):
        raise TextxferError(f"--pooling mean: {type(model).__name__} has no BERT/RoBERTa-style classifier to feed a "
                            "mean-pooled vector; use --pooling cls")
    if asked != "auto":
        return asked, None
    pooling, evidence = trained_pooling(name, source)
    if pooling == "mean" and not supports_mean(model):
        return "cls", f"pooling cls ({evidence}, but {type(model).__name__}'s classifier reads the first token only)"
    if pooling == "mean":
        return "mean", f"pooling mean ({evidence}; --pooling to set it)"
    return "cls", f"pooling cls ({evidence}; --pooling to set it)"


def of(model) -> str:
    """The pooling ``model`` uses."""
    return getattr(model.config, CONFIG_KEY, None) or "cls"


def masked_mean(hidden, attention_mask):
    """Mean of ``hidden`` [batch, tokens, width] over the positions ``attention_mask`` keeps."""
    if attention_mask is None:
        return hidden.mean(dim=1)
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


_MEAN_CLASSES: dict[type, type] = {}


def _mean_pooled_class(cls: type) -> type:
    """A subclass of classification model class ``cls`` whose forward classifies the mean-pooled states."""
    if cls in _MEAN_CLASSES:
        return _MEAN_CLASSES[cls]

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, **kwargs):
        import torch
        from transformers.modeling_outputs import SequenceClassifierOutput

        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids,
                 "position_ids": position_ids, "inputs_embeds": inputs_embeds}
        hidden = self.base_model(**{k: v for k, v in given.items() if v is not None}).last_hidden_state
        pooled = masked_mean(hidden, attention_mask)
        if isinstance(self.classifier, torch.nn.Linear):
            logits = self.classifier(self.dropout(pooled))
        else:  # RoBERTa's head reads position 0 of a sequence
            logits = self.classifier(pooled.unsqueeze(1))
        loss = None
        if labels is not None and self.config.problem_type == "multi_label_classification":  # a sigmoid per label
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.float())
        elif labels is not None:
            loss = torch.nn.functional.cross_entropy(logits.view(-1, self.num_labels).float(), labels.view(-1))
        return SequenceClassifierOutput(loss=loss, logits=logits)

    pooled_class = type(cls.__name__, (cls,), {"forward": forward, "__module__": cls.__module__,
                                               "__doc__": f"{cls.__name__} classifying the mean-pooled token states"})
    _MEAN_CLASSES[cls] = pooled_class
    return pooled_class


def install(model, pooling: str) -> None:
    """Make ``model`` pool as ``pooling`` says, and record it in its config (saved with the model)."""
    if pooling == "mean":
        if not supports_mean(model):
            raise TextxferError(f"{type(model).__name__}: mean pooling needs a BERT/RoBERTa-style classifier")
        if type(model) not in _MEAN_CLASSES.values():
            model.__class__ = _mean_pooled_class(type(model))
    setattr(model.config, CONFIG_KEY, pooling)


def restore(model) -> None:
    """Re-install the pooling recorded in a saved model's config (``cls`` when none is recorded)."""
    pooling = of(model)
    if pooling not in ("cls", "mean"):
        raise TextxferError(f"config.json: {CONFIG_KEY} is {pooling!r}; expected 'cls' or 'mean'")
    install(model, pooling)


def unused_parameters(model) -> list:
    """Parameters the pooled forward never uses (BERT's first-token pooler under mean pooling): kept frozen."""
    pooler = getattr(model.base_model, "pooler", None)
    return list(pooler.parameters()) if of(model) == "mean" and pooler is not None else []
