"""``--batch-size auto`` (the default): the training batch and its learning rate for the device.

- **On the CPU**: 16 texts per step and the learning rate as given — the measured 2-core recipe
  (BENCHMARKS.md, "Fine-tuning: the recipe"), unchanged.
- **On a GPU**: batches are sized by tokens, so that a step is large enough to keep the chip busy: about
  :data:`TOKENS_PER_STEP` real tokens per device and step (the training texts' mean length decides the count),
  at most :data:`MAX_AUTO_BATCH` texts, never fewer than :data:`CPU_BATCH`. Two limits keep it honest:
  at least :data:`MIN_STEPS_PER_EPOCH` optimizer steps per epoch (a small data set is not trained in a
  handful of giant steps; the step floor of ``textxfer.transformer.recipe`` still applies on top), and the memory
  that is free: one forward and backward pass at the batch's worst case (every text at the max length)
  is tried first, and the batch is halved until it fits — said in one line, never an out-of-memory crash.
- **The learning rate follows the batch** by the square-root rule: ``--learning-rate`` is the rate for a
  batch of :data:`REFERENCE_BATCH` and is multiplied by √(effective batch / 16), where the effective batch
  counts every device and accumulation step (64 texts: × 2). The issue's own measurement on a GPU —
  batch 64 at 1e-4 against batch 16 at 5e-5 — is this rule. An explicit ``--batch-size N`` keeps the
  rate as given.
"""

from __future__ import annotations

import math

from textxfer.errors import TextxferError

CPU_BATCH = 16
REFERENCE_BATCH = 16  # the batch at which the default learning rate was measured
TOKENS_PER_STEP = 16_384  # real tokens per device and step on a GPU
MAX_AUTO_BATCH = 256
MIN_STEPS_PER_EPOCH = 50


def parse(value) -> int | str:
    """``"auto"`` or a whole number ≥ 1 (from a flag, a config file or a study variant)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if isinstance(value, bool) or not isinstance(value, (int, str)) or (isinstance(value, str) and not value.strip().isdigit()):
        raise TextxferError(f"batch_size must be auto or a whole number of texts, got {value!r}")
    number = int(value)
    if number < 1:
        raise TextxferError(f"batch_size must be at least 1, got {number}")
    return number


def nominal(value) -> int:
    """The batch the CPU recipe uses for ``value`` (16 for ``auto``): what plans and estimates count with."""
    return CPU_BATCH if value == "auto" else int(value)


def choose(requested, train_texts: int, mean_tokens: float, on_gpu: bool, world_size: int = 1,
           accumulation: int = 1) -> tuple[int, str | None]:
    """``(texts per device and step, why)`` before the memory check; ``why`` is None when nothing was chosen."""
    if requested != "auto":
        return int(requested), None
    if not on_gpu:
        return CPU_BATCH, None  # the CPU recipe, unchanged: nothing new to announce
    by_tokens = TOKENS_PER_STEP // max(1, math.ceil(mean_tokens))
    by_steps = train_texts // max(1, MIN_STEPS_PER_EPOCH * world_size * accumulation)
    batch = max(CPU_BATCH, min(by_tokens, by_steps, MAX_AUTO_BATCH))
    limit = ("the token budget" if by_tokens <= min(by_steps, MAX_AUTO_BATCH) else
             f"at least {MIN_STEPS_PER_EPOCH} steps per epoch" if by_steps < MAX_AUTO_BATCH else f"the cap of {MAX_AUTO_BATCH}")
    if batch == CPU_BATCH and min(by_tokens, by_steps) < CPU_BATCH:
        limit = f"never below {CPU_BATCH}"
    return batch, (f"batch size {batch} per device (--batch-size auto on a GPU: about {TOKENS_PER_STEP:,} tokens per "
                   f"step at {mean_tokens:.0f} tokens per text; limited by {limit})")


def scaled_rate(rate: float, batch: int, world_size: int = 1, accumulation: int = 1) -> tuple[float, str | None]:
    """``(learning rate, why)`` for an automatically chosen batch: √(effective batch / 16) × ``rate``."""
    effective = batch * max(1, world_size) * max(1, accumulation)
    if effective == REFERENCE_BATCH:
        return rate, None
    scaled = rate * math.sqrt(effective / REFERENCE_BATCH)
    return scaled, (f"learning rate {scaled:.3g} (--learning-rate {rate:g} × √({effective}/{REFERENCE_BATCH}): "
                    "square-root scaling for the automatic batch)")


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is a GPU out-of-memory error (torch raises ``OutOfMemoryError`` or a RuntimeError)."""
    import torch

    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()


def fit_memory(batch: int, probe) -> tuple[int, str | None]:
    """``(the largest batch ≤ batch for which probe(batch) runs, why)``: halved on every out-of-memory error."""
    tried = batch
    while True:
        try:
            probe(batch)
        except Exception as error:  # noqa: BLE001 - only out-of-memory errors are handled, the rest re-raised
            if not is_out_of_memory(error):
                raise
            if batch <= 1:
                raise TextxferError("even one text at the max length does not fit in the GPU's free memory; "
                                    "lower --max-length, or free the GPU") from None
            batch //= 2
            continue
        if batch == tried:
            return batch, None
        return batch, (f"batch size {batch} per device: {tried} texts at the max length did not fit in the GPU's free "
                       "memory, so it was halved until one training step fit")


def memory_probe(model, max_length: int, precision: str):
    """``probe(batch)``: one forward and backward pass of ``batch`` texts of ``max_length`` tokens on the model's
    GPU (its worst case under length grouping), then gradients and cached memory are freed."""
    import torch

    from textxfer.transformer import devices

    def probe(batch: int) -> None:
        device = next(model.parameters()).device
        ids = torch.full((batch, max_length), 1, dtype=torch.long, device=device)
        try:
            model.train()
            with devices.autocast(str(device), precision):
                output = model(input_ids=ids, attention_mask=torch.ones_like(ids),
                               labels=torch.zeros(batch, dtype=torch.long, device=device))
            output.loss.backward()
            if device.type == "cuda":  # AdamW's two fp32 states per trainable weight come on top, at the first step
                states = 8 * sum(p.numel() for p in model.parameters() if p.requires_grad)
                if torch.cuda.mem_get_info(device)[0] < states:
                    raise torch.cuda.OutOfMemoryError("no room left for the optimizer's states")
        finally:
            model.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()

    return probe
