# rvos-kit image 3 of 3 (issue 22): the modern stack, for every GPU stage in one image
# (runner.stack: modern): SOC, MUTR, ReferFormer, UNINEXT (ViT-H, ConvNeXt-L) and the
# AOT/DeAOT propagation on torch 2.14.1 + CUDA 13.0 (PyPI's wheels, kernels for sm_75 to
# sm_120) and CPython 3.12, the stack of the kit's native test environment .venv-upstream
# (docker/modern.in). Runs on Ampere, Ada, Hopper and Blackwell GPUs (docs/docker.md).
# Build with `make images`. Pinning as in rvos.Dockerfile: the base by digest
# (base-images.lock, row `modern`), Ubuntu packages (CPython 3.12 included) by a snapshot
# date, every Python package by hash (modern-bootstrap.lock, modern.lock), upstream code by
# a full commit hash and then checked blob for blob by the kit's upstream verifier.

ARG CUDA_IMAGE=nvidia/cuda:13.0.1-devel-ubuntu24.04

# ---- base: CUDA 13.0 devel, Ubuntu 24.04's CPython 3.12 and the few build packages ------
FROM ${CUDA_IMAGE} AS base
# Ubuntu's archive frozen at this instant (snapshot.ubuntu.com); NVIDIA's apt sources are
# dropped (the toolkit is in the image already). Ubuntu 24.04 lists its archive in
# ubuntu.sources; its own user `ubuntu` holds uid 1000, which the runtime stage takes.
ARG UBUNTU_SNAPSHOT=20251101T000000Z
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 LC_ALL=C.UTF-8
# hadolint ignore=DL3008
RUN rm -f /etc/apt/sources.list.d/cuda*.list /etc/apt/sources.list.d/nvidia-ml*.list \
 && sed -i -E "s#https?://(archive|security)\.ubuntu\.com/ubuntu/?#https://snapshot.ubuntu.com/ubuntu/${UBUNTU_SNAPSHOT}/#" \
        /etc/apt/sources.list.d/ubuntu.sources \
 && apt-get -o Acquire::Check-Valid-Until=false update \
 && apt-get install -y --no-install-recommends ca-certificates g++ git \
        python3.12 python3.12-dev python3.12-venv \
 && rm -rf /var/lib/apt/lists/*

# ---- python: a venv whose pip/setuptools/wheel come from modern-bootstrap.lock ------------
FROM base AS python
COPY docker/modern-bootstrap.lock /opt/rvos-kit/docker/
RUN python3.12 -m venv /opt/venv \
 && /opt/venv/bin/python -m pip install --no-cache-dir --disable-pip-version-check \
        --require-hashes --no-deps --only-binary :all: \
        -r /opt/rvos-kit/docker/modern-bootstrap.lock
ENV PATH=/opt/venv/bin:$PATH VIRTUAL_ENV=/opt/venv PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1

# ---- kit-wheel: the kit as a wheel, built by its pinned build backend ---------------------
FROM python AS kit-wheel
COPY docker/kit-build.lock /opt/rvos-kit/docker/
COPY pyproject.toml setup.py README.md /opt/rvos-kit/source/
COPY src /opt/rvos-kit/source/src
RUN python -m venv /tmp/build \
 && /tmp/build/bin/pip install --no-cache-dir --require-hashes --no-deps --only-binary :all: \
        -r /opt/rvos-kit/docker/kit-build.lock \
 && /tmp/build/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation --no-index \
        -w /opt/rvos-kit/wheel /opt/rvos-kit/source

# ---- env: the locked Python stack (modern.lock), imgaug and deaotpy -----------------------
FROM python AS env
COPY docker/modern.lock docker/rvos-nodeps.lock requirements-nodeps.txt /opt/rvos-kit/docker/
RUN pip install --no-cache-dir --require-hashes --no-build-isolation \
        -r /opt/rvos-kit/docker/modern.lock \
 && pip install --no-cache-dir --require-hashes --no-deps \
        -r /opt/rvos-kit/docker/rvos-nodeps.lock \
 && pip install --no-cache-dir --require-hashes --no-deps \
        -r /opt/rvos-kit/docker/requirements-nodeps.txt

# ==== model-code: the published solution, the patched deformable-attention op, detectron2 =
# The published solution enters the image ONLY via fetch-at-commit.sh at the full commit
# the kit pins; it is never copied into this repository. The kit is installed first (from
# its wheel: nothing downloaded) because its upstream verifier checks the fetched tree,
# blob for blob, before anything is built from it: tools/apply_msda_patch.py verifies the
# model folder, copies the op's folder and applies docker/patches/msda-torch2.patch (the
# two API renames torch >= 2.6 needs, nothing else) to the copy; docker/build-cuda-op.py
# builds that copy for the architectures below (Ampere to Blackwell, +PTX for newer).
# The four vendored copies of the op are byte-identical (the manifest's blob ids), so one
# build serves SOC, MUTR, ReferFormer and UNINEXT (one module name). UNINEXT's detectron2
# is built as `make upstream-venv` builds it (tools/build_detectron2.py: its C++ ops; its
# CUDA sources include THC headers that torch removed in 1.11, see docs/docker.md).
FROM env AS model-code
ARG SOLUTION_REPO=https://github.com/RobertLuo1/iccv2023_RVOS_Challenge.git
ARG SOLUTION_COMMIT=c538b0dca85da0719b32ea45253f8b3077defea6
ENV TORCH_CUDA_ARCH_LIST="8.0;8.6;8.9;9.0;10.0;12.0+PTX"
COPY docker/fetch-at-commit.sh docker/build-cuda-op.py /opt/rvos-kit/docker/
RUN /opt/rvos-kit/docker/fetch-at-commit.sh "${SOLUTION_REPO}" "${SOLUTION_COMMIT}" \
        /opt/rvos-kit/upstream/iccv2023_RVOS_Challenge
COPY --from=kit-wheel /opt/rvos-kit/wheel /opt/rvos-kit/wheel
COPY docker/patches /opt/rvos-kit/docker/patches
COPY tools/apply_msda_patch.py tools/build_detectron2.py /opt/rvos-kit/tools/
RUN pip install --no-cache-dir --no-deps --no-index /opt/rvos-kit/wheel/rvos_kit-*.whl \
 && python /opt/rvos-kit/tools/apply_msda_patch.py \
        /opt/rvos-kit/upstream/iccv2023_RVOS_Challenge soc_test/models/ops /tmp/msda-ops \
 && python /opt/rvos-kit/docker/build-cuda-op.py /tmp/msda-ops /tmp/cuda-op \
 && pip install --no-cache-dir --no-deps --no-index /tmp/cuda-op/*.whl \
 && RVOS_KIT_CACHE=/tmp/d2 python /opt/rvos-kit/tools/build_detectron2.py \
        /opt/rvos-kit/upstream/iccv2023_RVOS_Challenge \
 && rm -rf /tmp/msda-ops /tmp/cuda-op /tmp/d2 \
 && python -c "import torch, MultiScaleDeformableAttention, detectron2._C, imgaug, trax, \
fairscale.nn.checkpoint, fvcore.nn.weight_init"

# ---- runtime: a non-root user; the build proves the stack, the kit and the upstream code ---
FROM model-code AS runtime
RUN rvos-kit --help > /dev/null \
 && python -c "import torch, torchvision, aot.networks.models; \
assert torch.__version__.split('+')[0] == '2.14.1', torch.__version__; \
assert torch.version.cuda == '13.0', torch.version.cuda" \
 && python -c "from rvos_kit.stages.rvos.infer.upstream import verify_upstream as v; \
print(v('/opt/rvos-kit/upstream/iccv2023_RVOS_Challenge', \
('soc_test', 'MUTR', 'ReferFormer', 'UNINEXT')))" \
 && if id -u ubuntu > /dev/null 2>&1; then userdel --remove ubuntu; fi \
 && useradd --create-home --uid 1000 --shell /bin/bash rvos
# `rvos-kit run` inside a container runs natively (no Docker in Docker).
ENV RVOS_KIT_IN_CONTAINER=1
USER 1000:1000
WORKDIR /home/rvos
CMD ["rvos-kit", "--help"]
