"""The shallow student: the teacher's fine-tuned model with only every k-th transformer layer kept.

DistilBERT initialised its 6-layer student from every other layer of BERT-base (with the embeddings); here the
student keeps layers ``k-1, 2k-1, …, n-1`` of the teacher's ``n`` — every k-th counted from the top, so the last
layer, whose output the teacher's classifier head was trained to read, stays under that head — with the teacher's
embeddings, pooling and head. ``--keep-every 4`` on the 12-layer bundled encoder keeps layers 4, 8 and 12 (3 of
12). The student then trains on the teacher's probabilities with the ``Trainer`` (:mod:`textxfer.distill.students`),
its word-embedding matrix frozen, as the teacher's own default recipe freezes it: on the bundled encoder that matrix
is 96M of the 3-layer student's 102M parameters. Trainable, a step of 16 reviews took 2.5–3 s (measured while tests
shared the 2 cores, so not a clean ratio); frozen, 0.25 s on idle cores.
"""

from __future__ import annotations

import copy
from pathlib import Path

from textxfer.errors import TextxferError


def kept_layers(count: int, every: int) -> list[int]:
    """The 0-based layers kept of ``count``: every ``every``-th counted from the top (the last always kept)."""
    if every < 1:
        raise TextxferError(f"--keep-every must be at least 1, got {every}")
    return [i for i in range(count) if (count - 1 - i) % every == 0]


def layer_list(model):
    """The ``ModuleList`` of transformer layers of a BERT/RoBERTa-family classifier (``model.<base>.encoder.layer``)."""
    import torch

    encoder = getattr(getattr(model, "base_model", None), "encoder", None)
    layers = getattr(encoder, "layer", None)
    if not isinstance(layers, torch.nn.ModuleList) or not len(layers):
        raise TextxferError(f"{type(model).__name__}: no encoder.layer list to take layers from (BERT/RoBERTa-family "
                            "models have one); use --student static or baseline")
    return layers


def write_student(teacher_model, tokenizer, every: int, folder: Path) -> dict:
    """Save to ``folder`` a copy of ``teacher_model`` (a transformers sequence classifier) keeping every ``every``-th
    layer, with ``tokenizer``; returns what was kept."""
    import torch

    count = len(layer_list(teacher_model))
    keep = kept_layers(count, every)
    student = copy.deepcopy(teacher_model).cpu().float()
    layers = layer_list(student)
    student.base_model.encoder.layer = torch.nn.ModuleList([layers[i] for i in keep])
    student.config.num_hidden_layers = len(keep)
    from textxfer.transformer.models import quiet_progress

    with quiet_progress():
        student.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    parameters = {name: sum(p.numel() for p in m.parameters()) for name, m in (("teacher", teacher_model),
                                                                              ("student", student))}
    return {"keep_every": every, "layers_kept": [i + 1 for i in keep], "teacher_layers": count,
            "parameters": parameters}
