# Every target sets up .venv first when it is missing or older than requirements.lock.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SWEEP ?= init=zeros,ones,uniform01,trunc_normal
LESSON_INITS := zeros,ones,uniform01,uniform_neg1to1,uniform_neg01to01,uniform_neg001to001,uniform_neg0001to0001,general_rule,normal,trunc_normal
SEEDS ?= 3
STORE ?= $(or $(MLFLOW_TRACKING_URI),sqlite:///$(CURDIR)/mlflow.db)
PORT ?= 5000

.DEFAULT_GOAL := help
.PHONY: help setup run report lesson test test-fast bench ui lock clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	touch $(STAMP)

setup: $(STAMP) ## create .venv and install the pinned dependencies
	@true

run: $(STAMP) ## set up, then train the card's four inits (SWEEP=... to change)
	$(PY) -m src.train -m $(SWEEP)

report: $(STAMP) ## rebuild the lesson's figures and stats from the store into multirun_outputs/report/
	$(PY) -m src.report

lesson: $(STAMP) ## the whole lesson: all ten inits x SEEDS seeds (default 3, seeds 42...), then the report
	$(PY) -m src.train -m init=$(LESSON_INITS) "seed=range(42,$$((42 + $(SEEDS))))"
	$(PY) -m src.report

test: $(STAMP) ## set up, then run every test, end-to-end ones on real MNIST included
	$(PY) -m pytest

test-fast: $(STAMP) ## the tests without the end-to-end runs
	$(PY) -m pytest -m "not e2e"

bench: $(STAMP) ## speed: pipeline vs hand-written TF loop vs Keras fit vs the lesson script, sweeps (~11 min)
	$(PY) -m benchmarks.bench

ui: $(STAMP) ## MLflow UI on http://127.0.0.1:5000 (PORT=..., MLFLOW_TRACKING_URI honoured)
	$(VENV)/bin/mlflow ui --backend-store-uri "$(STORE)" --host 127.0.0.1 --port $(PORT)

lock: $(STAMP) ## rewrite requirements.lock from what .venv has installed
	{ sed -n '1,2p' requirements.lock; $(PY) -m pip freeze --exclude-editable; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean: ## delete Hydra outputs and caches (keeps mlflow.db, the MNIST cache and .venv)
	find multirun_outputs -mindepth 1 ! -name .gitkeep -exec rm -rf {} +
	rm -rf .pytest_cache
	find . -path ./.venv -prune -o -name __pycache__ -type d -exec rm -rf {} +
