# Each target sets up its own virtual environment in .venv (idempotent: redone only when
# pyproject.toml or constraints.txt change), so `make sweep` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup sweep test test-fast lint bench ui dashboard compare services services-stop services-status

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

## The default sweep: Adam vs SGD on the bundled digits data, recorded under mlruns/.
sweep: $(STAMP)
	$(PY) -m sweeps.run -m optimizer=adam,sgd $(ARGS)

## The whole test suite (what CI runs): two pytest workers (pytest-xdist), each test file kept on one worker
## (its module fixtures, servers and order stay together). TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(ARGS)

## The unit tests alone (under a minute): no training to the end, no subprocess, no server.
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" $(ARGS)

## Style (ruff check and ruff format), types, and the layers of sweeps/ (a lower layer importing a higher one fails here).
lint: $(STAMP)
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
