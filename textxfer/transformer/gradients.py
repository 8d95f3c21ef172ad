"""Integrated gradients (Sundararajan et al., 2017) of a fine-tuned model's predicted label, with ``captum``.

The path runs from a baseline input — every token replaced by the padding token, the special tokens kept — to the
text, in the input-embedding space (``LayerIntegratedGradients`` on the model's input embeddings); each token's
attribution is summed over the embedding dimensions. What is attributed is the predicted label's *calibrated*
probability (softmax, or a multi-label model's sigmoid, of the logits divided by the model's temperature), so the
attributions add up (up to the integral's error) to that probability minus the baseline input's. Sub-word tokens
are summed into the words of :func:`textxfer.core.explain.words_of` through the tokenizer's character offsets.
"""

from __future__ import annotations

import numpy as np

from textxfer.core.explain import Word, to_words

STEPS = 32  # points on the path (captum's Riemann sum); more: a smaller integral error, slower


def integrated_gradients(classifier, inputs: list, label_ids: np.ndarray, words: list[list[Word]],
                         steps: int = STEPS) -> list[np.ndarray]:
    """Per input, its words' attributions to the probability of label ``label_ids[i]``."""
    import torch
    from captum.attr import LayerIntegratedGradients

    model = classifier.model_.eval()
    device = next(model.parameters()).device
    multi, temperature = classifier.labels.multi_label, classifier.temperature

    def forward(input_ids, attention_mask, token_type_ids=None):
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        logits = model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits.float() / temperature
        return torch.sigmoid(logits) if multi else torch.softmax(logits, dim=-1)

    method = LayerIntegratedGradients(forward, model.get_input_embeddings())
    out = []
    for item, label, item_words in zip(inputs, label_ids, words):
        encoded, spans = _encoded(classifier, item)
        ids = encoded["input_ids"].to(device)
        special = torch.tensor(classifier.tokenizer_.get_special_tokens_mask(
            ids[0].tolist(), already_has_special_tokens=True), dtype=torch.bool, device=device)
        pad = classifier.tokenizer_.pad_token_id if classifier.tokenizer_.pad_token_id is not None else 0
        baseline = torch.where(special, ids[0], torch.full_like(ids[0], pad))[None]
        extra = (encoded["attention_mask"].to(device),)
        if "token_type_ids" in encoded:
            extra += (encoded["token_type_ids"].to(device),)
        attributions = method.attribute(ids, baselines=baseline, target=int(label), additional_forward_args=extra,
                                        n_steps=steps, internal_batch_size=steps)
        out.append(to_words(spans, attributions.sum(dim=-1)[0].detach().float().cpu().numpy(), item_words))
    return out


def _encoded(classifier, item) -> tuple[dict, list[tuple[int, int, int]]]:
    """The model input of one text (or pair) — its text prefix before the first text, cut at the model's max length
    from the end — and each token's ``(part, start, end)`` in the original text(s) (``end <= start``: a special
    token or one of the prefix)."""
    first, second = item if isinstance(item, tuple) else (item, None)
    prefix = getattr(classifier, "text_prefix_", "") or ""
    encoded = classifier.tokenizer_(prefix + first, second, truncation=True, max_length=classifier.max_length_,
                                    return_offsets_mapping=True, return_tensors="pt")
    offsets = encoded.pop("offset_mapping")[0].tolist()
    spans = []
    for part, (start, end) in zip(encoded.sequence_ids(0), offsets):
        if part is None:
            spans.append((0, 0, 0))
        elif part == 0:
            spans.append((0, start - len(prefix), end - len(prefix)) if start >= len(prefix) else (0, 0, 0))
        else:
            spans.append((1, start, end))
    return encoded, spans
