# rvos-kit: every target bootstraps its own environment in $(VENV).
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
KIT := $(VENV)/bin/rvos-kit
STAMP := $(VENV)/.rvos-kit-installed
# The published models' own environment, for tests/test_infer_upstream.py (spec
# inference.md 12): torch 2.14.1 + torchvision from local disk, numpy<2, ...
UPSTREAM_VENV ?= .venv-upstream
UPSTREAM_STAMP := $(UPSTREAM_VENV)/.rvos-kit-installed
PYTEST_ARGS ?=
# Pipelines run with the kit's environment first on PATH; DVC never phones home.
RUN := PATH="$(abspath $(VENV))/bin:$$PATH" DVC_NO_ANALYTICS=1

.PHONY: help venv upstream-venv test lint lock lock-upstream bench clean demo demo-check \
	reproduce audit dag images base-image readme

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | sort

$(STAMP): pyproject.toml constraints.txt requirements-nodeps.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q pip==26.3
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	$(PY) -m pip install -q --no-deps --require-hashes -r requirements-nodeps.txt
	@touch $@

venv: $(STAMP) ## create $(VENV) with the kit and its test tools

$(UPSTREAM_STAMP): requirements-upstream.txt constraints-upstream.txt pyproject.toml
	$(PYTHON) -m venv $(UPSTREAM_VENV)
	$(UPSTREAM_VENV)/bin/python -m pip install -q pip==26.3
	$(UPSTREAM_VENV)/bin/python -m pip install -q -c constraints-upstream.txt -r requirements-upstream.txt
	$(UPSTREAM_VENV)/bin/python -m pip install -q --no-deps -c constraints-upstream.txt imgaug==0.4.0
	$(UPSTREAM_VENV)/bin/python -m pip install -q --no-deps -e .
	@touch $@

upstream-venv: $(UPSTREAM_STAMP) ## create $(UPSTREAM_VENV): the published models' test environment

test: $(STAMP) $(UPSTREAM_STAMP) ## run the test suite (creates both environments first)
	RVOS_UPSTREAM_PYTHON=$(abspath $(UPSTREAM_VENV))/bin/python $(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP) ## ruff on the code
	$(VENV)/bin/ruff check src tests bench tools
	$(VENV)/bin/ruff format --check src tests bench tools
	$(VENV)/bin/hadolint docker/rvos.Dockerfile docker/uninext.Dockerfile

lock: $(STAMP) ## regenerate constraints.txt from the current environment
	$(PY) -m pip freeze --exclude-editable --exclude rvos-kit --exclude deaotpy \
	  | sed -E 's/^torch==([0-9.]+)\+cpu$$/torch==\1/' > constraints.txt

lock-upstream: $(UPSTREAM_STAMP) ## regenerate constraints-upstream.txt from $(UPSTREAM_VENV)
	$(UPSTREAM_VENV)/bin/python -m pip freeze --exclude-editable --exclude rvos-kit \
	  > constraints-upstream.txt

dag: $(STAMP) ## regenerate every dvc.yaml from its params.yaml
	$(RUN) rvos-kit dag --params params.yaml
	$(RUN) rvos-kit dag --params demo/params.yaml
	$(RUN) rvos-kit dag --params audit/params.yaml

demo: $(STAMP) ## the whole DAG on a generated sample (CPU): J&F table, HTML report, plot
	$(RUN) rvos-kit dag --params demo/params.yaml
	$(RUN) dvc repro demo/dvc.yaml
	@echo; echo "J&F per node (demo/outputs/metrics/summary.csv):"; cat demo/outputs/metrics/summary.md
	@echo; echo "submission: $$(cat demo/submission.sha256)"
	@echo "report (self-contained, opens offline): demo/outputs/report/index.html"
	@echo "J&F per node as a picture: demo/outputs/report/jf.svg"

demo-check: $(STAMP) ## run the demo from scratch; fail if any output hash differs from demo/dvc.lock
	test -f demo/dvc.lock && cp demo/dvc.lock .demo-check.lock
	rm -rf demo/outputs demo/sample
	$(RUN) rvos-kit dag --params demo/params.yaml --check
	$(RUN) dvc repro --force demo/dvc.yaml
	$(RUN) rvos-kit dag --params demo/params.yaml --compare-outs .demo-check.lock
	git diff --exit-code --stat -- demo/submission.sha256 demo/outputs/metrics
	@rm -f .demo-check.lock; echo "demo reproduced byte for byte: $$(cat demo/submission.sha256)"

reproduce: $(STAMP) ## the real pipeline (params.yaml): checks inputs, then dvc repro
	@$(RUN) rvos-kit preflight --params params.yaml
	$(RUN) rvos-kit dag --params params.yaml
	$(RUN) dvc repro dvc.yaml

audit: $(STAMP) ## download the released trees, recompute stage 2 from them and compare
	$(RUN) rvos-kit fetch --params audit/params.yaml
	@$(RUN) rvos-kit preflight --params audit/params.yaml
	$(RUN) rvos-kit dag --params audit/params.yaml
	$(RUN) dvc repro audit/dvc.yaml || { echo "audit: disagreements found, see audit/outputs/report/index.html"; exit 1; }
	@echo "audit: every frame pixel-identical; report: audit/outputs/report/index.html"

# Docker images for the GPU stages (docs/docker.md). Keep the tags equal to runner.images
# in params.yaml. The base is built FROM tag@digest once docker/base-images.lock has it.
KIT_VERSION := $(shell sed -nE 's/^version = "(.*)"/\1/p' pyproject.toml)
RVOS_IMAGE ?= rvos-kit/rvos:$(KIT_VERSION)
UNINEXT_IMAGE ?= rvos-kit/uninext:$(KIT_VERSION)

base-image: ## pull the CUDA base image by its locked digest (records it on first use)
	docker/base-images.sh verify

images: base-image ## build both Docker images (`make -n images` prints the exact commands)
	docker build --file docker/rvos.Dockerfile --build-arg CUDA_IMAGE=$(shell docker/base-images.sh ref) --tag $(RVOS_IMAGE) .
	docker build --file docker/uninext.Dockerfile --build-arg CUDA_IMAGE=$(shell docker/base-images.sh ref) --tag $(UNINEXT_IMAGE) .

readme: $(STAMP) ## rewrite README.md's generated blocks (J&F table, stage counts, timings)
	$(PY) tools/readme.py

bench: $(STAMP) ## print throughput numbers (fusion, evaluation, import, propagation)
	$(PY) bench/fusion.py
	$(PY) bench/evaluate.py
	$(PY) bench/import_pth.py
	$(PY) bench/propagate.py

clean: ## remove the environment and caches
	rm -rf $(VENV) $(UPSTREAM_VENV) .pytest_cache .ruff_cache
