# Each target sets up its own virtual environment in .venv (idempotent: redone only when
# pyproject.toml or constraints.txt change), so `make sweep` and `make test` work on a fresh clone.
# `make sweep` installs what sweeps run on; `make test` and `make lint` add the test and lint tools (the
# `dev` extra: pytest, Playwright, mypy, ruff, import-linter; about 280 MB). Each step says what it does
# and how long it took; pip's own lines show its progress.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
PIP := $(PY) -m pip install --disable-pip-version-check --progress-bar on -c constraints.txt
SINCE = echo "setup: $(1) ($$(( $$(date +%s) - t ))s)"

.PHONY: setup setup-dev sweep test test-fast lint bench ui dashboard compare services services-stop services-status

$(STAMP): pyproject.toml constraints.txt
	@echo "setup: a virtual environment in $(VENV) with PyTorch, Lightning, MLflow, Optuna and the rest" \
		"(about 2 GB; 2 to 4 minutes on a fresh clone)"
	@t=$$(date +%s); $(PYTHON) -m venv $(VENV) && $(call SINCE,$(VENV) made)
	@t=$$(date +%s); $(PIP) -e . && $(call SINCE,sweeplab and its dependencies installed)
	@touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	@t=$$(date +%s); $(PIP) -e '.[dev]' && $(call SINCE,the test and lint tools installed)
	@touch $(DEV_STAMP)

setup: $(STAMP)

setup-dev: $(DEV_STAMP)

## The default sweep: Adam vs SGD on the bundled digits data, recorded under mlruns/.
sweep: $(STAMP)
	$(PY) -m sweeps.run -m optimizer=adam,sgd $(ARGS)

## The whole test suite (what CI runs): two pytest workers (pytest-xdist), each test file kept on one worker
## (its module fixtures, servers and order stay together). TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
test: $(DEV_STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(ARGS)

## The unit tests alone (under a minute): no training to the end, no subprocess, no server.
test-fast: $(DEV_STAMP)
	$(PY) -m pytest -m "not slow" $(ARGS)

## Style (ruff check and ruff format), types, and the layers of sweeps/ (a lower layer importing a higher one fails here).
lint: $(DEV_STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

## Speed measurements (ratios side by side; a few minutes each).
bench: $(STAMP)
	$(PY) bench/overhead.py
	$(PY) bench/steps.py
	$(PY) bench/tracking.py
	$(PY) bench/sweep.py
	$(PY) bench/peers.py
	$(PY) bench/gpu.py
	$(PY) bench/finetune.py
	$(PY) bench/finetune.py --transformer
	$(PY) bench/lora_lr.py
	$(PY) bench/journal_check.py --mb 25

## The MLflow UI over the local store, on this machine only (127.0.0.1); it prints the address of the sweeps'
## runs table once the server answers. PORT=5000 by default.
PORT ?= 5000
ui: $(STAMP)
	$(PY) -m sweeps.ui --port $(PORT) --store sqlite:///mlruns/mlflow.db

## optuna-dashboard over the study storage, on this machine only (127.0.0.1). DASHBOARD_PORT=8080 by default;
## STORAGE=... for another storage (e.g. STORAGE="$$(python -m sweeps.services url)" for the PostgreSQL one).
DASHBOARD_PORT ?= 8080
STORAGE ?= mlruns/optuna.journal
dashboard: $(STAMP)
	$(VENV)/bin/optuna-dashboard --host 127.0.0.1 --port $(DASHBOARD_PORT) "$(STORAGE)"

## The latest sweep's leaderboard from the store (ARGS="<sweep run id>" for another).
compare: $(STAMP)
	$(PY) -m sweeps.compare $(ARGS)

## PostgreSQL and an MLflow server on 127.0.0.1 for several workers on one study (README "Scaling out");
## state, data and the generated password under mlruns/services/.
services: $(STAMP)
	$(PY) -m sweeps.services start

services-stop: $(STAMP)
	$(PY) -m sweeps.services stop

services-status: $(STAMP)
	$(PY) -m sweeps.services status
