# CPU development environment, demo and tests. Needs python3.11, 2+ cores, ~12 GiB RAM (make demo: 10 GiB
# at peak), ~6 GiB disk.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.maestro-setup-done
OUT ?= outputs
# pip on these machines warns about every absent local mirror folder; keep the log readable.
QUIET_PIP := grep -v "is ignored: it is neither a file nor a directory" || true

.PHONY: help setup demo test test-fast test-slow lint mutation bench-learning bench-overhead bench-real-model clean

help:
	@echo "make setup   create $(VENV) with the pinned CPU stack (requirements/cpu-lock.txt); a no-op once done"
	@echo "make demo    setup, build SmolLM2-135M-Instruct (offline), train it with MAESTRO GRPO on CPU through OpenRLHF's train_ppo_ray, print a report"
	@echo "make test    setup, then the whole test suite (unit + the end-to-end pipeline test)"
	@echo "make test-fast  the tests that need no Ray/vLLM run"
	@echo "make test-slow  reliability runs too slow for make test (a run killed with SIGKILL, then resumed)"
	@echo "make lint    ruff"
	@echo "make mutation  mutation score (mutmut) of the method, spec, probe, channels, the hook's pure parts and rewards/ against the fast unit tests (about an hour on 2 shared cores; not part of make test)"
	@echo "make bench-learning  MAESTRO against static weights on a two-family CPU task (docs/results.md, ~10 min)"
	@echo "make bench-overhead  MAESTRO's step time against sum and plain GRPO in the real pipeline (~35 min)"
	@echo "make bench-real-model  MAESTRO against gdpo, sum and random on SmolLM2-135M, 3 seeds (~95 min; resumable, SEEDS=0 for a part)"
	@echo "make bench-real-model COMPARISON=target  issue 22: the target meta-reward against sum + the target, maestro and sum, 10 steps (~80 min)"

setup: $(STAMP)

$(STAMP): requirements/cpu-lock.txt requirements/dev.txt setup.py
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; the CPU stack is pinned for Python 3.11 (set PYTHON=...)"; exit 1; }
	@start=$$(date +%s); \
	echo "[setup] creating $(VENV) with the pinned CPU stack (about 5 minutes on a fresh machine)"; \
	$(PYTHON) -m venv $(VENV); \
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -r requirements/cpu-lock.txt 2>&1 | $(QUIET_PIP); \
	echo "[setup] openrlhf 0.11.2 without its CUDA-only pins (flash-attn)"; \
	$(PY) -m pip install -q --disable-pip-version-check --no-deps openrlhf==0.11.2 2>&1 | $(QUIET_PIP); \
	$(PY) -m pip install -q --disable-pip-version-check -c requirements/cpu-lock.txt -r requirements/dev.txt 2>&1 | $(QUIET_PIP); \
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e . 2>&1 | $(QUIET_PIP); \
	$(PY) -c "import torch, vllm, deepspeed, ray, openrlhf, openrlhf_maestro" 2>/dev/null; \
	echo "$$(( $$(date +%s) - start ))" > $(VENV)/.maestro-setup-seconds; \
	touch $@; \
	echo "[setup] done in $$(cat $(VENV)/.maestro-setup-seconds)s"

demo: setup
	PYTHON=$(PY) OUT=$(OUT) SETUP_SECONDS=$$(cat $(VENV)/.maestro-setup-seconds) bash examples/scripts/demo_cpu.sh

test: setup
	$(PY) -m pytest tests -v --durations=10 -m "not slow"

test-slow: setup
	$(PY) -m pytest tests -v --durations=10 -m slow

test-fast: setup
	$(PY) -m pytest tests -v -m "not e2e and not slow"

lint: setup
	$(VENV)/bin/ruff check .

# Mutants are made and tested in a scratch copy, never in the worktree: mutmut reads its configuration from the
# folder it runs in (tests/mutation/mutmut.cfg becomes its setup.cfg) and writes mutants/ there.
MUTATION_DIR := $(OUT)/mutation
MUTATION_JOBS ?= 2
mutation: setup
	rm -rf $(MUTATION_DIR)
	mkdir -p $(MUTATION_DIR)
	cp -r openrlhf_maestro tests examples pytest.ini $(MUTATION_DIR)/
	find $(MUTATION_DIR) -name __pycache__ -prune -exec rm -rf {} +
	cp tests/mutation/mutmut.cfg $(MUTATION_DIR)/setup.cfg
	cd $(MUTATION_DIR) && $(abspath $(VENV))/bin/mutmut run --max-children $(MUTATION_JOBS) > mutmut-run.log 2>&1 \
		|| { tail -c 3000 mutmut-run.log; exit 1; }
	cd $(MUTATION_DIR) && $(abspath $(PY)) $(abspath tests/mutation/score.py) | tee score.txt

bench-learning: setup
	$(PY) bench/bench_learning.py

bench-overhead: setup
	$(PY) bench/bench_overhead.py

SEEDS ?= 0 1 2
# paper: maestro, gdpo, sum, random, maestro-raw; target: issue 22's rows, in outputs/bench-real-model-target
COMPARISON ?= paper
bench-real-model: setup
	$(PY) bench/bench_real_model.py --comparison $(COMPARISON) --seeds $(SEEDS)

clean:
	rm -rf $(OUT) .pytest_cache
