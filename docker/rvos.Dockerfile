# rvos-kit image 1 of 2: torch 1.11.0+cu113 on CPython 3.10 for SOC, MUTR, ReferFormer
# (with their MultiScaleDeformableAttention CUDA op) and the AOT/DeAOT propagation.
# Build with `make images` (docs/docker.md): it passes CUDA_IMAGE as tag@digest from
# docker/base-images.lock. Every download is pinned: the base by digest, Ubuntu packages
# by a snapshot date, CPython and uv by sha256 (downloads.lock), every Python package by
# hash (rvos.lock, pip --require-hashes), upstream code by a full commit hash.

ARG CUDA_IMAGE=nvidia/cuda:11.3.1-cudnn8-devel-ubuntu20.04

# ---- base: CUDA 11.3 devel + the few Ubuntu packages the builds need ----------------------
FROM ${CUDA_IMAGE} AS base
# Ubuntu's archive frozen at this instant (snapshot.ubuntu.com): the same package versions
# on every build. NVIDIA's apt sources are dropped: the toolkit is already in the image and
# their old signing key no longer verifies.
ARG UBUNTU_SNAPSHOT=20250501T000000Z
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 LC_ALL=C.UTF-8
# hadolint ignore=DL3008
RUN rm -f /etc/apt/sources.list.d/cuda*.list /etc/apt/sources.list.d/nvidia-ml*.list \
 && sed -i -E "s#https?://(archive|security)\.ubuntu\.com/ubuntu/?#https://snapshot.ubuntu.com/ubuntu/${UBUNTU_SNAPSHOT}/#" \
        /etc/apt/sources.list \
 && apt-get -o Acquire::Check-Valid-Until=false update \
 && apt-get install -y --no-install-recommends ca-certificates curl g++ git unzip \
 && rm -rf /var/lib/apt/lists/*

# ---- python: CPython 3.10 + venv, every byte hash-checked (docker/install-python.sh) -----
FROM base AS python
ARG PYTHON_VERSION=3.10.22
COPY docker/downloads.lock docker/bootstrap.lock docker/*.sh /opt/rvos-kit/docker/
RUN /opt/rvos-kit/docker/install-python.sh "${PYTHON_VERSION}" /opt/venv
ENV PATH=/opt/venv/bin:$PATH VIRTUAL_ENV=/opt/venv PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1

# ---- kit-wheel: the kit (pure Python) as a wheel, built by its pinned build backend ------
FROM python AS kit-wheel
COPY docker/kit-build.lock /opt/rvos-kit/docker/
COPY pyproject.toml setup.py README.md /opt/rvos-kit/source/
COPY src /opt/rvos-kit/source/src
RUN python -m venv /tmp/build \
 && /tmp/build/bin/pip install --no-cache-dir --require-hashes --no-deps --only-binary :all: \
        -r /opt/rvos-kit/docker/kit-build.lock \
 && /tmp/build/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation --no-index \
        -w /opt/rvos-kit/wheel /opt/rvos-kit/source

# ---- env: the locked Python stack (rvos.lock) and deaotpy ---------------------------------
FROM python AS env
COPY docker/rvos.lock requirements-nodeps.txt /opt/rvos-kit/docker/
RUN pip install --no-cache-dir --require-hashes --no-build-isolation \
        -r /opt/rvos-kit/docker/rvos.lock \
 && pip install --no-cache-dir --require-hashes --no-deps \
        -r /opt/rvos-kit/docker/requirements-nodeps.txt

# ==== model-code: SOC, MUTR, ReferFormer and MultiScaleDeformableAttention ================
# The published solution enters the image ONLY via fetch-at-commit.sh at the full commit
# the kit pins (rvos_kit/stages/rvos/infer/upstream.py checks it blob for blob before any import);
# it is never copied into this repository. params.yaml `infer.upstream` names this path.
# The deformable-attention op's setup.py refuses to build without a visible GPU:
# docker/build-cuda-op.py runs it unmodified with torch.cuda.is_available answering True
# and the architectures from TORCH_CUDA_ARCH_LIST (cu113: up to sm_86, +PTX for newer).
# One build serves SOC, MUTR and ReferFormer (identical sources, one module name).
FROM env AS model-code
ARG SOLUTION_REPO=https://github.com/RobertLuo1/iccv2023_RVOS_Challenge.git
ARG SOLUTION_COMMIT=c538b0dca85da0719b32ea45253f8b3077defea6
ENV TORCH_CUDA_ARCH_LIST="7.0;7.5;8.0;8.6+PTX"
COPY docker/rvos-nodeps.lock docker/build-cuda-op.py /opt/rvos-kit/docker/
RUN /opt/rvos-kit/docker/fetch-at-commit.sh "${SOLUTION_REPO}" "${SOLUTION_COMMIT}" \
        /opt/rvos-kit/upstream/iccv2023_RVOS_Challenge \
 && pip install --no-cache-dir --require-hashes --no-deps \
        -r /opt/rvos-kit/docker/rvos-nodeps.lock \
 && python /opt/rvos-kit/docker/build-cuda-op.py \
        /opt/rvos-kit/upstream/iccv2023_RVOS_Challenge/soc_test/models/ops /tmp/cuda-op \
 && pip install --no-cache-dir --no-deps --no-index /tmp/cuda-op/*.whl \
 && rm -rf /tmp/cuda-op \
 && python -c "import torch, MultiScaleDeformableAttention, imgaug, fvcore.nn.weight_init"

# ---- runtime: the kit installed, a non-root user -------------------------------------------
FROM model-code AS runtime
COPY --from=kit-wheel /opt/rvos-kit/wheel /opt/rvos-kit/wheel
# The kit is installed --no-deps from the wheel built above (no download: nothing to hash);
# then the build fails unless the kit, torch+cu113, deaotpy's networks and the upstream
# code's check (rvos_kit.stages.rvos.infer.upstream) all work.
RUN pip install --no-cache-dir --no-deps --no-index /opt/rvos-kit/wheel/rvos_kit-*.whl \
 && rvos-kit --help > /dev/null \
 && python -c "import torch, torchvision, aot.networks.models; \
assert torch.__version__ == '1.11.0+cu113', torch.__version__" \
 && python -c "from rvos_kit.stages.rvos.infer.upstream import verify_upstream as v; \
print(v('/opt/rvos-kit/upstream/iccv2023_RVOS_Challenge', ('soc_test', 'MUTR', 'ReferFormer')))" \
 && useradd --create-home --uid 1000 --shell /bin/bash rvos
# `rvos-kit run` inside a container runs natively (no Docker in Docker).
ENV RVOS_KIT_IN_CONTAINER=1
USER 1000:1000
WORKDIR /home/rvos
CMD ["rvos-kit", "--help"]
