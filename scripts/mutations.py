"""Plant one bug at a time, run the test files that should catch it, restore the file; print a Markdown row each.

    python scripts/mutations.py          # every mutation (about 15 minutes on 2 cores)
    python scripts/mutations.py 0 4      # only mutations 0 and 4

A row that says NONE is a bug the suite does not catch. The file is restored even when pytest fails or is
interrupted; run it on a clean checkout (it refuses a file whose line to replace is not there exactly once).
Figures: BENCHMARKS.md, "The layout and the test suite".
"""
import os
import pathlib
import subprocess
import sys

R = pathlib.Path(__file__).resolve().parents[1]
M = [
 ("fine-tuning: training labels shuffled before training", "textxfer/transformer/pipeline.py",
  "        train = _subset(train, cfg.max_train_samples, cfg.seed)\n",
  "        train = _subset(train, cfg.max_train_samples, cfg.seed)\n        import random as _r; _l = list(train.labels); _r.Random(0).shuffle(_l); import dataclasses as _d; train = _d.replace(train, labels=_l)\n",
  ["tests/test_finetune.py"]),
 ("baseline: training labels shuffled", "textxfer/baseline/pipeline.py",
  "        y = self.labels.targets(train.labels)\n",
  "        y = np.random.default_rng(0).permutation(self.labels.targets(train.labels))\n",
  ["tests/test_baseline.py"]),
 ("ensemble: weights reversed when predicting", "textxfer/ensemble/pipeline.py",
  "        return mix([m.predict_proba(texts) for _, m in used], [w for w, _ in used], self.labels.multi_label)\n",
  "        return mix([m.predict_proba(texts) for _, m in used], [w for w, _ in used][::-1], self.labels.multi_label)\n",
  ["tests/test_ensemble.py"]),
 ("ensemble: auto weights returned reversed", "textxfer/ensemble/weights.py",
  "    return weights, record\n", "    return weights[::-1], record\n", ["tests/test_ensemble.py", "tests/test_compare.py"]),
 ("--strategy auto: fine-tuning threshold 129 -> 10000", "textxfer/transformer/recipe.py",
  "HEAD_ONLY_BELOW = 129", "HEAD_ONLY_BELOW = 10000", ["tests/test_recipe.py"]),
 ("--strategy auto: contrastive threshold 65 -> 64", "textxfer/transformer/recipe.py",
  "CONTRASTIVE_BELOW = 65", "CONTRASTIVE_BELOW = 64", ["tests/test_recipe.py"]),
 ("scorer: macro-F1 averages classes without rows as 0", "textxfer/core/metrics.py",
  "            present = [i for i in ids if support[i] > 0] or ids", "            present = ids",
  ["tests/test_metrics.py", "tests/test_report.py"]),
 ("fine-tuning: seed not set before the model loads", "textxfer/transformer/pipeline.py",
  "        set_seed(cfg.seed)\n", "        pass\n", ["tests/test_finetune.py"]),
 ("--strategy auto: the costliest candidate within noise wins", "textxfer/transformer/auto_choice.py",
  'chosen = min((s for s in scored if s["within_noise"]), key=lambda s: s["seconds"])',
  'chosen = max((s for s in scored if s["within_noise"]), key=lambda s: s["seconds"])', ["tests/test_auto_choice.py"]),
 ("--strategy auto: starting weights not restored between candidates", "textxfer/transformer/auto_search.py",
  "        restore(model, start)\n", "", ["tests/test_auto_choice.py"]),
 ("memory: a step's passes not accumulated into one step", "textxfer/transformer/training.py",
  "gradient_accumulation_steps=cfg.gradient_accumulation * passes,", "gradient_accumulation_steps=cfg.gradient_accumulation,",
  ["tests/test_memory.py"]),
 ("memory: attention dropout left as the model's", "textxfer/transformer/memory.py",
  "            module.dropout.p = float(probability)\n", "            pass\n", ["tests/test_memory.py"]),
 ("--unlabelled: the second model kept whatever validation says", "textxfer/evaluation/self_training.py",
  'kept = "with" if after > before else "without"', 'kept = "with"', ["tests/test_self_training.py"]),
 ("--unlabelled: validation and test texts not refused", "textxfer/data/unlabelled.py",
  "        if overlap:\n", "        if False:\n", ["tests/test_self_training.py"]),
 ("study: a killed cell ends the study", "textxfer/evaluation/study.py",
  "            except (ChildKilled, CellSkipped) as exc:", "            except CellSkipped as exc:", ["tests/test_study.py"]),
]
only = sys.argv[1:]
env = dict(os.environ, PYTHONPATH=str(R), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
for i, (name, f, old, new, tests) in enumerate(M):
    if only and str(i) not in only: continue
    path = R / f; original = path.read_text()
    assert original.count(old) == 1, (name, original.count(old))
    path.write_text(original.replace(old, new))
    try:
        r = subprocess.run([str(R/'.venv/bin/python'), '-m', 'pytest', '-q', '-p', 'no:cacheprovider', *tests],
                           cwd=R, env=env, capture_output=True, text=True, timeout=1200)
    finally:
        path.write_text(original)
    failed = sorted({l.split(' ')[1].split('[')[0] for l in r.stdout.splitlines() if l.startswith('FAILED') or l.startswith('ERROR')})
    print(f"| {name} | `{f}` | {len(failed)} failed: {', '.join(x.split('::')[-1] for x in failed) or 'NONE'} |", flush=True)
