# rvos-kit: every target bootstraps its own environment in $(VENV).
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
KIT := $(VENV)/bin/rvos-kit
STAMP := $(VENV)/.rvos-kit-installed
PYTEST_ARGS ?=

.PHONY: help venv test lint lock bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | sort

$(STAMP): pyproject.toml constraints.txt requirements-nodeps.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q pip==26.3
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	$(PY) -m pip install -q --no-deps --require-hashes -r requirements-nodeps.txt
	@touch $@

venv: $(STAMP) ## create $(VENV) with the kit and its test tools

test: $(STAMP) ## run the test suite (creates $(VENV) first)
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP) ## ruff on the code
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

lock: $(STAMP) ## regenerate constraints.txt from the current environment
	$(PY) -m pip freeze --exclude-editable --exclude rvos-kit --exclude deaotpy \
	  | sed -E 's/^torch==([0-9.]+)\+cpu$$/torch==\1/' > constraints.txt

bench: $(STAMP) ## print throughput numbers (fusion)
	$(PY) bench/fusion.py

clean: ## remove the environment and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache
