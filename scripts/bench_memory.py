"""Memory and step time of training at 512 tokens: the attention dropout, passes and gradient checkpointing.

Each setting runs in its own fresh process (peak RSS is per process), on the bundled multilingual-e5-small with
its embeddings frozen (the default fine-tuning and contrastive paths), 2 threads: three optimizer steps on random
token ids of ``--length`` tokens (half the texts padded to half length, so the attention mask is used), the
fastest step reported. Settings (``texts a pass × passes``):

- ``dropout 0.1, 8×1``: the model's own attention dropout — PyTorch's fused attention cannot run it on the CPU, so
  the plain path keeps every layer's score matrices (the old default; 16 × 512 in one pass doubles it again);
- ``dropout 0, 8×1``: textxfer's default (``--attention-dropout 0``): the fused attention;
- ``dropout 0, 8×1, checkpointing``: gradient checkpointing on top (activations recomputed in the backward pass);
- ``dropout 0, 4×2``: a step of 8 in two passes of 4 (the token budget halved).

Prints a table (peak RSS above the loaded model, step time, time per text against the default) and writes
``bench_memory.json`` into ``--output``. Run: ``python scripts/bench_memory.py [--length 512]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = [("dropout 0.1, 8×1", 0.1, 8, 1, False), ("dropout 0, 8×1", 0.0, 8, 1, False),
            ("dropout 0, 8×1, checkpointing", 0.0, 8, 1, True), ("dropout 0, 4×2", 0.0, 4, 2, False)]

CHILD = """
import json, resource, sys, time
import torch
from transformers import AutoModelForSequenceClassification
from textxfer.transformer.bundled import resolve_bundled
from textxfer.transformer.memory import set_attention_dropout
dropout, per_pass, passes, checkpointing, length = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1", int(sys.argv[5])
torch.set_num_threads(2)
torch.manual_seed(0)
model = AutoModelForSequenceClassification.from_pretrained(str(resolve_bundled("multilingual-e5-small")), num_labels=3)
set_attention_dropout(model, dropout)
model.train()
for p in model.base_model.embeddings.parameters():
    p.requires_grad = False
if checkpointing:
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
ids = torch.randint(5, 1000, (per_pass, length))
mask = torch.ones_like(ids)
mask[: per_pass // 2, length // 2:] = 0
labels = torch.randint(0, 3, (per_pass,))
times = []
for _ in range(3):
    began = time.perf_counter()
    for _ in range(passes):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss / passes
        loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    times.append(time.perf_counter() - began)
print(json.dumps({"loaded_mib": loaded, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "step_seconds": min(times), "texts": per_pass * passes}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--passes-of", type=int, default=0,
                        help="instead of the four settings: a step of this many texts (dropout 0) in 1, 2, 4 and 8 passes "
                             "— what splitting costs at --length")
    parser.add_argument("--output", default=str(ROOT / "runs" / "bench_memory"))
    args = parser.parse_args()
    results = []
    settings = SETTINGS if not args.passes_of else [
        (f"dropout 0, {args.passes_of // k}×{k}", 0.0, args.passes_of // k, k, False) for k in (1, 2, 4, 8)
        if args.passes_of % k == 0]
    for name, dropout, per_pass, passes, checkpointing in settings:
        done = subprocess.run([sys.executable, "-c", CHILD, str(dropout), str(per_pass), str(passes),
                               "1" if checkpointing else "0", str(args.length)], capture_output=True, text=True)
        if done.returncode:
            results.append({"setting": name, "error": done.stderr.strip().splitlines()[-1]})
            continue
        results.append({"setting": name, **json.loads(done.stdout.strip().splitlines()[-1])})
        print(results[-1], flush=True)
    reference = next(r for r in results if r["setting"] == ("dropout 0, 8×1" if not args.passes_of else settings[0][0]))
    per_text = reference["step_seconds"] / reference["texts"]
    lines = [f"{args.length} tokens a text, 2 threads; peak RSS of the process and above the loaded model", "",
             "| setting | peak RSS | above the loaded model | step | per text | × the default's time per text |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['setting']} | failed: {r['error']} | | | | |")
            continue
        lines.append(f"| {r['setting']} | {r['peak_mib'] / 1024:.2f} GB | {(r['peak_mib'] - r['loaded_mib']) / 1024:.2f} GB "
                     f"| {r['step_seconds']:.2f} s | {r['step_seconds'] / r['texts']:.3f} s | "
                     f"{r['step_seconds'] / r['texts'] / per_text:.2f} |")
    print("\n".join(lines))
    Path(args.output).mkdir(parents=True, exist_ok=True)
    (Path(args.output) / f"bench_memory{'-' + str(args.passes_of) if args.passes_of else ''}-{args.length}.json").write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
