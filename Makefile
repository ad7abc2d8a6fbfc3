# The two commands: `make study` (set up + the main job) and `make test` (set up + the test suite).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed


.PHONY: install sysdeps test test-fast test-multinode study bench bench-scale clean

# constraints/cpu.txt pins torch==2.13.0 so that pip takes the CPU wheel, not a multi-GB CUDA build.
$(STAMP): pyproject.toml constraints/cpu.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	set -o pipefail; $(BIN)/python -m pip install -q -c constraints/cpu.txt -e '.[dev,dashboard]' 2>&1 | { grep -v "is neither a file nor a directory" || true; }
	$(BIN)/python -c "import torch, ray; print('torch', torch.__version__, '| ray', ray.__version__)"
	touch $@

install: $(STAMP)

# Tools the tests drive from outside Python: headless Chromium (report page check) and
# shellcheck (SLURM script). Installed with apt when missing and we are root (CI, sandboxes).
sysdeps:
	@missing=""; command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v shellcheck >/dev/null || missing="$$missing shellcheck"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "note:$$missing not installed; the tests that need them will be skipped"; fi; \
	fi

test: $(STAMP) sysdeps
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

test-multinode: $(STAMP)
	$(BIN)/python -m pytest -m multinode

# A second `make study` resumes the experiment in runs/quick (finished trials are kept, an
# interrupted run completes) and writes the report again.
study: $(STAMP)
	if [ -f runs/quick/tuner.pkl ]; then resume=--resume; else resume=; fi; \
	$(BIN)/gumbel-study run experiments/quick.toml --storage runs $$resume
	$(BIN)/gumbel-study report runs/quick
	@echo "study results: runs/quick   report: runs/quick/report/index.html"

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

# Every trial of experiments/tradeoff.toml (1,344 x 32 seeds, 21 evaluations) with training and
# probes cut, then its report: Tune's costs at scale (benchmarks/scale.py; about 30 minutes on 2 cores,
# run it on a quiet machine). SCALE_ARGS="--trials 336" runs a quarter and extrapolates.
bench-scale: $(STAMP)
	$(BIN)/python benchmarks/scale.py $(SCALE_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
