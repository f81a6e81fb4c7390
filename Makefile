# The README's promise: `make run` and `make test` work on a fresh machine with
# nothing but Python installed (the venv is created and filled on first use).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed-stamp

# Telemetry off; tool state inside the project; the venv's tools first on PATH.
export DO_NOT_TRACK := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1
export HF_HUB_OFFLINE := 1
export GX_ANALYTICS_ENABLED := false
# `mlflow ui`/`server` would also start MLflow 3's job runner and task consumers: 10 processes and 2.2 GB
# idle against 2 and 270 MB without them (measured); the project runs no MLflow jobs.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION := false
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 90
export PATH := $(BIN):$(PATH)
# `make test` runs this many pytest-xdist workers: most of the slow tests wait on servers and
# subprocesses, so two workers on two cores took 11m25s where one process took 19m26s (measured).
TEST_JOBS ?= auto

.PHONY: help install lock run flow test test-fast test-slow lint plots mlflow-ui prefect-server deploy worker bench-worker clean

help:  ## list the targets, in the order a newcomer needs them
	@awk 'BEGIN {FS = ":.*## "} /^##@ / {printf "\n%s\n", substr($$0, 5)} /^[a-z-]+:.*## / {printf "  make %-15s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

##@ Start here
run: install  ## run the whole pipeline on the default dataset (the Prefect flow: each stage by `dvc repro`, independent ones side by side), then print the model table
	$(BIN)/python -m flows.pipeline
	@echo && cat reports/models.md

test: install  ## the full test suite (what CI runs), one pytest-xdist worker per core (TEST_JOBS=1: one process)
	$(BIN)/python -m pytest -n $(TEST_JOBS)

plots: install  ## training curves, codebook usage and the model comparison as dvc_plots/index.html (`dvc plots show`)
	$(BIN)/dvc plots show
	@echo "offline: the same pictures as PNGs in reports/ (models.png, codebook_usage.png)"

mlflow-ui: install  ## browse the runs at http://127.0.0.1:5000 (one parent run per pipeline run, a nested run per stage)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

prefect-server: install  ## a Prefect server on http://127.0.0.1:4200 (shows the flow runs of `make run`)
	$(BIN)/prefect server start --host 127.0.0.1 --port 4200

##@ Operations
flow: install  ## run the pipeline through the Prefect flow (ephemeral server unless PREFECT_API_URL is set)
	$(BIN)/python -m flows.pipeline

deploy: install  ## register weekly-retrain and bench-run on their process pools (needs PREFECT_API_URL)
	$(BIN)/prefect work-pool create s2gr-process --type process --overwrite
	$(BIN)/prefect work-pool create s2gr-bench --type process --overwrite
	$(BIN)/prefect --no-prompt deploy --name weekly-retrain --name bench-run

worker: install  ## a process worker that runs scheduled retrains
	$(BIN)/prefect worker start --pool s2gr-process

bench-worker: install  ## a process worker for benchmark grids (`bench/gr.py ... --deployment s2gr-bench-run/bench-run`)
	$(BIN)/prefect worker start --pool s2gr-bench

clean:  ## remove pipeline outputs and local tracking state (keeps the DVC cache)
	rm -rf data metrics reports checkpoints mlflow.db mlartifacts .prefect

##@ Development
# Exactly requirements.lock (every package pinned), then the project itself without dependencies.
$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) infra/lock.py --check
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)  ## create .venv if missing and install the project (requirements.lock)

lock:  ## re-resolve pyproject.toml in a scratch venv and rewrite requirements.lock
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q --upgrade pip
	.lock-venv/bin/python -m pip install -q -e '.[dev]'
	.lock-venv/bin/python infra/lock.py
	rm -rf .lock-venv

test-fast: install  ## unit tests only (no end-to-end pipeline, no servers)
	$(BIN)/python -m pytest -n $(TEST_JOBS) -m "not e2e and not servers and not team"

test-slow: install  ## the slower tier: the team profile on a real S3 engine (SeaweedFS, installed into the venv)
	$(BIN)/python -m pytest -m slow_tier

lint: install  ## ruff
	$(BIN)/ruff check s2gr s2gr_core flows tasks tests bench infra
