# One-command set-up and runs. Every target bootstraps .venv idempotently (re-done when pyproject.toml or
# the bootstrap script changes). scripts/bootstrap.py prints one line per step; pip's output only on failure.
VENV    ?= .venv
PYTHON  ?= python3
TORCH   ?= torch==2.13.0
# Tried for torch alone, only when no torch is installed and pip finds no local wheel of $(TORCH).
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.textxfer-installed

.PHONY: setup demo test bench study bench-small-data clean browser

$(STAMP): pyproject.toml scripts/bootstrap.py
	@$(PYTHON) scripts/bootstrap.py --venv $(VENV) --torch "$(TORCH)" --cpu-index "$(TORCH_CPU_INDEX)" --stamp $(STAMP)

setup: $(STAMP)

# The main job on the sample data, sized for 2 CPU cores (under 10 minutes): both pipelines on one split,
# the fine-tuned model trained on a stratified 2,000-text subset for 1 epoch (125 steps: --finetune-min-steps 0
# keeps the step floor from doubling it, which took the demo past 10 minutes). Full recipe: see README.
DEMO_FLAGS ?= --finetune-max-train-samples 2000 --finetune-epochs 1 --finetune-min-steps 0

demo: $(STAMP)
	$(VENV)/bin/textxfer compare --data sample_data/reviews.csv --output runs/demo $(DEMO_FLAGS)

# Little data: a learning-curve study sized for 2 CPU cores (textxfer study; finished cells are reused):
# 16 cells (4 of them ensembles of the baseline and finetune cells), a 4% validation split (694 texts) so that
# evaluations stay cheap; test stays 10%. 80 and 200 texts:
# below 65 the defaults run the contrastive pair stage (228 s alone for 32 texts, growing with the texts).
# Measured on 2 cores: 28 min 3 s with the ensemble variant, peak RSS 5.9 GB (BENCHMARKS.md, "Ensembles").
STUDY_FLAGS ?= --variants baseline finetune finetune:strategy=head-only ensemble:baseline+finetune --sizes 80 200 --seeds 2 --validation-size 0.04

study: $(STAMP)
	$(VENV)/bin/textxfer study --data sample_data/reviews.csv --output runs/study $(STUDY_FLAGS)

# textxfer's defaults against SetFit (same encoder) and TF-IDF + LR on the same subsets (SetFit: dev-only extra).
bench-small-data: $(STAMP)
	$(VENV)/bin/pip install -q -e '.[bench]'
	$(PY) scripts/bench_small_data.py

# Best effort: Debian's Chromium for tests/test_serve_browser.py (as root with apt-get only; never fails).
browser:
	@$(PYTHON) scripts/bootstrap.py --only-browser

test: $(STAMP) browser
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q

bench: $(STAMP)
	$(PY) scripts/bench_baseline.py
	$(PY) scripts/bench_predict.py

clean:
	rm -rf $(VENV) runs .pytest_cache
