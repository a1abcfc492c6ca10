# rvos-kit: every target bootstraps its own environment in $(VENV).
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
KIT := $(VENV)/bin/rvos-kit
STAMP := $(VENV)/.rvos-kit-installed
# The published models' own environment, for tests/test_infer_upstream.py:
# torch 2.14.1 + torchvision from local disk, numpy<2, ... (requirements-upstream.txt), and
# deaotpy (requirements-nodeps.txt): the kit's propagation runs beside the published AOT code.
# UNINEXT's bundled detectron2 built from the shared archive, CPU-only, its wheel cached
# per machine under ~/.cache/rvos-kit/wheels (tools/build_detectron2.py).
UPSTREAM_VENV ?= .venv-upstream
UPSTREAM_STAMP := $(UPSTREAM_VENV)/.rvos-kit-installed
# The modern stack natively (issue 22, docs/docker.md): the same Python stack as
# $(UPSTREAM_VENV) (requirements-upstream.txt + constraints-upstream.txt: torch 2.14.1 +
# CUDA 13.0) plus the GPU parts, for a machine with a GPU, nvcc and the published code at
# $(UPSTREAM) (a checkout or unpacked archive of the pinned commit): the deformable-attention
# op, patched in a copy (tools/apply_msda_patch.py) and built for MSDA_ARCHS.
MODERN_VENV ?= .venv-modern
MODERN_STAMP := $(MODERN_VENV)/.rvos-kit-installed
UPSTREAM ?= $(RVOS_UPSTREAM_DIR)
MSDA_ARCHS ?= 8.0;8.6;8.9;9.0;10.0;12.0+PTX
PYTEST_ARGS ?=
# Pipelines run with the kit's environment first on PATH; DVC never phones home.
RUN := PATH="$(abspath $(VENV))/bin:$$PATH" DVC_NO_ANALYTICS=1
# The demo's propagate stages (scale.address: local) share one local Ray started for the
# whole run instead of each starting its own (docs/scale.md).
ONE_RAY := $(PY) -m rvos_kit.compute.scale --

.PHONY: help venv upstream-venv modern-venv test lint lock lock-upstream bench clean demo demo-check \
	reproduce audit dag images base-image readme smoke smoke-wheels smoke-gpu

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | sort \
	  | sed -e 's|$$(VENV)|$(VENV)|g' -e 's|$$(UPSTREAM_VENV)|$(UPSTREAM_VENV)|g' \
	        -e 's|$$(MODERN_VENV)|$(MODERN_VENV)|g'
	@echo "(VENV=$(VENV), UPSTREAM_VENV=$(UPSTREAM_VENV), MODERN_VENV=$(MODERN_VENV); set any on the command line)"

$(STAMP): pyproject.toml setup.py src/rvos_kit/trees/_unfilter.c constraints.txt requirements-nodeps.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q pip==26.3
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	$(PY) -m pip install -q --no-deps --require-hashes -r requirements-nodeps.txt
	@touch $@

venv: $(STAMP) ## create $(VENV) with the kit and its test tools

$(UPSTREAM_STAMP): requirements-upstream.txt constraints-upstream.txt requirements-nodeps.txt pyproject.toml tools/build_detectron2.py
	$(PYTHON) -m venv $(UPSTREAM_VENV)
	$(UPSTREAM_VENV)/bin/python -m pip install -q pip==26.3
	$(UPSTREAM_VENV)/bin/python -m pip install -q -c constraints-upstream.txt -r requirements-upstream.txt
	$(UPSTREAM_VENV)/bin/python -m pip install -q --no-deps -c constraints-upstream.txt imgaug==0.4.0
	$(UPSTREAM_VENV)/bin/python -m pip install -q --no-deps -e .
	$(UPSTREAM_VENV)/bin/python -m pip install -q --no-deps --require-hashes -r requirements-nodeps.txt
	$(UPSTREAM_VENV)/bin/python tools/build_detectron2.py
	@touch $@

upstream-venv: $(UPSTREAM_STAMP) ## create $(UPSTREAM_VENV): the published models' test environment

$(MODERN_STAMP): requirements-upstream.txt constraints-upstream.txt requirements-nodeps.txt docker/rvos-nodeps.lock pyproject.toml tools/build_detectron2.py tools/apply_msda_patch.py docker/patches/msda-torch2.patch docker/build-cuda-op.py
	@test -n "$(UPSTREAM)" || { echo "modern-venv: set UPSTREAM=DIR, the published repository at c538b0d (a checkout, or the archive unpacked)"; exit 1; }
	$(PYTHON) -m venv $(MODERN_VENV)
	$(MODERN_VENV)/bin/python -m pip install -q pip==26.3
	$(MODERN_VENV)/bin/python -m pip install -q -c constraints-upstream.txt -r requirements-upstream.txt
	$(MODERN_VENV)/bin/python -m pip install -q --no-deps --require-hashes -r docker/rvos-nodeps.lock
	$(MODERN_VENV)/bin/python -m pip install -q --no-deps -e .
	$(MODERN_VENV)/bin/python -m pip install -q --no-deps --require-hashes -r requirements-nodeps.txt
	rm -rf $(MODERN_VENV)/msda-ops $(MODERN_VENV)/msda-wheel
	$(MODERN_VENV)/bin/python tools/apply_msda_patch.py $(UPSTREAM) soc_test/models/ops $(MODERN_VENV)/msda-ops
	TORCH_CUDA_ARCH_LIST="$(MSDA_ARCHS)" $(MODERN_VENV)/bin/python docker/build-cuda-op.py $(MODERN_VENV)/msda-ops $(MODERN_VENV)/msda-wheel
	$(MODERN_VENV)/bin/python -m pip install -q --no-deps --no-index --force-reinstall $(MODERN_VENV)/msda-wheel/*.whl
	$(MODERN_VENV)/bin/python tools/build_detectron2.py $(UPSTREAM)
	$(MODERN_VENV)/bin/python -c "import torch, MultiScaleDeformableAttention, detectron2._C; print('modern-venv: torch', torch.__version__, 'CUDA', torch.version.cuda, 'GPU', torch.cuda.is_available())"
	@touch $@

modern-venv: $(MODERN_STAMP) ## create $(MODERN_VENV): the modern stack natively, for a GPU machine (UPSTREAM=DIR; docs/docker.md)

test: $(STAMP) $(UPSTREAM_STAMP) ## run the test suite (creates both environments first)
	RVOS_UPSTREAM_PYTHON=$(abspath $(UPSTREAM_VENV))/bin/python $(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP) ## ruff check + ruff format --check on the code, hadolint on the Dockerfiles
	$(VENV)/bin/ruff check src tests bench tools
	$(VENV)/bin/ruff format --check src tests bench tools
	$(VENV)/bin/hadolint docker/rvos.Dockerfile docker/uninext.Dockerfile docker/modern.Dockerfile

lock: $(STAMP) ## regenerate constraints.txt from the current environment
	$(PY) -m pip freeze --exclude-editable --exclude rvos-kit --exclude deaotpy \
	  | sed -E 's/^torch==([0-9.]+)\+cpu$$/torch==\1/' > constraints.txt

lock-upstream: $(UPSTREAM_STAMP) ## regenerate constraints-upstream.txt from $(UPSTREAM_VENV)
	{ echo "# GENERATED by \`make lock-upstream\` (pip freeze of $(UPSTREAM_VENV)): its full lock."; \
	  $(UPSTREAM_VENV)/bin/python -m pip freeze --exclude-editable --exclude rvos-kit --exclude detectron2; \
	} > constraints-upstream.txt

dag: $(STAMP) ## regenerate every dvc.yaml from its params.yaml
	$(RUN) rvos-kit dag --params params.yaml
	$(RUN) rvos-kit dag --params demo/params.yaml
	$(RUN) rvos-kit dag --params audit/params.yaml

demo: $(STAMP) ## the whole DAG on a generated sample (CPU): J&F table, HTML report, plot
	$(RUN) rvos-kit dag --params demo/params.yaml
	$(RUN) $(ONE_RAY) dvc repro demo/dvc.yaml
	@echo; echo "J&F per node (demo/outputs/metrics/summary.csv):"; cat demo/outputs/metrics/summary.md
	@echo; echo "submission: $$(cat demo/submission.sha256)"
	@echo "report (self-contained, opens offline): demo/outputs/report/index.html"
	@echo "J&F per node as a picture: demo/outputs/report/jf.svg"

demo-check: $(STAMP) ## run the demo from scratch; fail if any output hash differs from demo/dvc.lock
	test -f demo/dvc.lock && cp demo/dvc.lock .demo-check.lock
	rm -rf demo/outputs demo/sample
	$(RUN) rvos-kit dag --params demo/params.yaml --check
	$(RUN) $(ONE_RAY) dvc repro --force demo/dvc.yaml
	$(RUN) rvos-kit dag --params demo/params.yaml --compare-outs .demo-check.lock
	git diff --exit-code --stat -- demo/submission.sha256 demo/outputs/metrics
	@rm -f .demo-check.lock; echo "demo reproduced byte for byte: $$(cat demo/submission.sha256)"

reproduce: $(STAMP) ## the real pipeline (params.yaml): checks inputs, then dvc repro
	@$(RUN) rvos-kit preflight --params params.yaml
	$(RUN) rvos-kit dag --params params.yaml
	$(RUN) dvc repro dvc.yaml

audit: $(STAMP) ## recompute stage 2 from the authors' released trees and compare (needs the test split's meta and frames; downloads the released zips; first use: RECORD=1)
	@$(RUN) rvos-kit preflight --params audit/params.yaml --skip-downloads || { \
	  echo "audit: stopped before downloading anything: the audit needs what is listed above."; exit 1; }
	@$(RUN) rvos-kit fetch --params audit/params.yaml $(if $(RECORD),--record) || { \
	  echo "audit: the released zips are not all here and verified; the lines above say why,"; \
	  echo "by cause, and what to do next (with make, RECORD=1 adds --record to that fetch)."; exit 1; }
	@$(RUN) rvos-kit preflight --params audit/params.yaml
	$(RUN) rvos-kit dag --params audit/params.yaml
	$(RUN) dvc repro audit/dvc.yaml || { echo "audit: disagreements found, see audit/outputs/report/index.html"; exit 1; }
	@echo "audit: every frame pixel-identical; report: audit/outputs/report/index.html"

# Docker images for the GPU stages (docs/docker.md). Keep the tags equal to runner.images
# in params.yaml. The base is built FROM tag@digest once docker/base-images.lock has it.
KIT_VERSION := $(shell sed -nE 's/^version = "(.*)"/\1/p' pyproject.toml)
RVOS_IMAGE ?= rvos-kit/rvos:$(KIT_VERSION)
UNINEXT_IMAGE ?= rvos-kit/uninext:$(KIT_VERSION)
MODERN_IMAGE ?= rvos-kit/modern:$(KIT_VERSION)

base-image: ## pull the CUDA base images by their locked digests (records them on first use)
	docker/base-images.sh verify

images: base-image ## build the three Docker images (`make -n images` prints the exact commands)
	docker build --file docker/rvos.Dockerfile --build-arg CUDA_IMAGE=$(shell docker/base-images.sh ref) --tag $(RVOS_IMAGE) .
	docker build --file docker/uninext.Dockerfile --build-arg CUDA_IMAGE=$(shell docker/base-images.sh ref) --tag $(UNINEXT_IMAGE) .
	docker build --file docker/modern.Dockerfile --build-arg CUDA_IMAGE=$(shell docker/base-images.sh ref modern) --tag $(MODERN_IMAGE) .

# `rvos-kit smoke`: every GPU stage of SMOKE_PARAMS on a generated clip with random weights
# (docs/smoke.md). DEVICE=cpu runs it small on the CPU; natively, the infer stages need the
# published models' environment: SMOKE_ARGS='--infer-python $(UPSTREAM_VENV)/bin/python'.
SMOKE_PARAMS ?= params.yaml
SMOKE_ARGS ?=
GPU_WHEELS ?= wheels/gpu

smoke: $(STAMP) ## every GPU stage of SMOKE_PARAMS on a generated clip, random weights (DEVICE=cpu: small); writes smoke.json
	$(RUN) rvos-kit smoke --params $(SMOKE_PARAMS) $(if $(DEVICE),--device $(DEVICE)) --out smoke.json $(SMOKE_ARGS)

smoke-wheels: $(STAMP) ## download the wheels smoke-gpu installs offline (cp312, no torch) into wheels/gpu/partN (GPU_WHEELS), <= 64 MiB each
	$(PY) tools/gpu_wheels.py --out $(GPU_WHEELS)

smoke-gpu: ## on a GPU machine without network: offline venv, build the op, smoke --device cuda at 720p with --compare-msda (tools/gpu_check.sh)
	WHEELS=$(GPU_WHEELS) tools/gpu_check.sh

readme: $(STAMP) ## rewrite README.md's generated blocks (J&F table, stage counts, timings)
	$(PY) tools/readme.py

bench: $(STAMP) ## print throughput numbers (fusion, evaluation, import, propagation)
	$(PY) bench/fusion.py
	$(PY) bench/evaluate.py
	$(PY) bench/import_pth.py
	$(PY) bench/propagate.py

clean: ## remove the environment and caches
	rm -rf $(VENV) $(UPSTREAM_VENV) $(MODERN_VENV) .pytest_cache .ruff_cache
