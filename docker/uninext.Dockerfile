# rvos-kit image 2 of 2: torch 1.10.0+cu113 on CPython 3.9 for UNINEXT (ViT-H and
# ConvNeXt-L) and the detectron2 copy it ships. torch 1.10 has no Python 3.10 build, so
# this image runs CPython 3.9; the kit (pure Python, declared for >= 3.10) is checked to
# import on it at build time. Build with `make images` (docs/docker.md). Pinning as in
# rvos.Dockerfile: base by digest, Ubuntu by snapshot, downloads by sha256, Python packages
# by hash (uninext.lock), upstream code by full commit hash.

ARG CUDA_IMAGE=nvidia/cuda:11.3.1-cudnn8-devel-ubuntu20.04

# ---- base: CUDA 11.3 devel + the few Ubuntu packages the builds need ----------------------
FROM ${CUDA_IMAGE} AS base
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

# ---- python: CPython 3.9 + venv, every byte hash-checked (docker/install-python.sh) ------
FROM base AS python
ARG PYTHON_VERSION=3.9.25
COPY docker/downloads.lock docker/bootstrap.lock docker/*.sh /opt/rvos-kit/docker/
RUN /opt/rvos-kit/docker/install-python.sh "${PYTHON_VERSION}" /opt/venv
ENV PATH=/opt/venv/bin:$PATH VIRTUAL_ENV=/opt/venv PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1

# ---- kit-wheel: the kit's wheel, built with its pinned backend (setuptools 84.2.1 needs
# Python >= 3.10, so this throwaway stage has its own CPython 3.10) -------------------------
FROM base AS kit-wheel
COPY docker/downloads.lock docker/bootstrap.lock docker/kit-build.lock docker/*.sh \
     /opt/rvos-kit/docker/
COPY pyproject.toml setup.py README.md /opt/rvos-kit/source/
COPY src /opt/rvos-kit/source/src
RUN /opt/rvos-kit/docker/install-python.sh 3.10.22 /tmp/build \
 && /tmp/build/bin/pip install --no-cache-dir --require-hashes --no-deps --only-binary :all: \
        -r /opt/rvos-kit/docker/kit-build.lock \
 && RVOS_KIT_PURE=1 /tmp/build/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation --no-index \
        -w /opt/rvos-kit/wheel /opt/rvos-kit/source

# ---- env: the locked Python stack (uninext.lock) --------------------------------------------
FROM python AS env
COPY docker/uninext.lock /opt/rvos-kit/docker/
RUN pip install --no-cache-dir --require-hashes --no-build-isolation \
        -r /opt/rvos-kit/docker/uninext.lock

# ==== model-code: UNINEXT, its detectron2 and CUDA ops =====================================
# The published solution (same commit as the rvos image, fetch-at-commit.sh only; never
# copied into this repository) and the XD7479 cocoapi fork, the only pycocotools with
# `ytvos`, at the commit its master had when UNINEXT's INSTALL.md was written (2021-06-09,
# its last). detectron2 is UNINEXT's bundled, modified copy, used in place as INSTALL.md's
# `pip install -e .` does (setup.py maps only the top package detectron2.projects.uninext,
# so a plain install would miss its sub-packages; the in-place finder serves them): its
# _C op is built in the tree and a .pth file puts UNINEXT/ on sys.path. pip 25 no longer
# does legacy (`setup.py develop`) editable installs, and setuptools stays at 59.5 for
# torch 1.10's cpp_extension, so the two steps are spelled out (--force, objects in /tmp:
# no object file the published tree may carry is reused).
# FORCE_CUDA=1 builds detectron2._C without a GPU; the deformable-attention op's setup.py
# has no such switch: docker/build-cuda-op.py (see rvos.Dockerfile).
FROM env AS model-code
ARG SOLUTION_REPO=https://github.com/RobertLuo1/iccv2023_RVOS_Challenge.git
ARG SOLUTION_COMMIT=c538b0dca85da0719b32ea45253f8b3077defea6
ARG COCOAPI_REPO=https://github.com/XD7479/cocoapi.git
ARG COCOAPI_COMMIT=772b85a787ef554a732d4cb9abe317d61602af83
ENV TORCH_CUDA_ARCH_LIST="7.0;7.5;8.0;8.6+PTX" FORCE_CUDA=1
COPY docker/build-cuda-op.py /opt/rvos-kit/docker/
RUN /opt/rvos-kit/docker/fetch-at-commit.sh "${SOLUTION_REPO}" "${SOLUTION_COMMIT}" \
        /opt/rvos-kit/upstream/iccv2023_RVOS_Challenge \
 && /opt/rvos-kit/docker/fetch-at-commit.sh "${COCOAPI_REPO}" "${COCOAPI_COMMIT}" \
        /opt/src/cocoapi \
 && pip install --no-cache-dir --no-deps --no-build-isolation --no-index \
        /opt/src/cocoapi/PythonAPI
WORKDIR /opt/rvos-kit/upstream/iccv2023_RVOS_Challenge/UNINEXT
RUN python setup.py build_ext --inplace --force --build-temp /tmp/d2-build \
 && rm -rf /tmp/d2-build \
 && echo "$PWD" > "$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/uninext.pth"
WORKDIR /
RUN python /opt/rvos-kit/docker/build-cuda-op.py \
        /opt/rvos-kit/upstream/iccv2023_RVOS_Challenge/UNINEXT/projects/UNINEXT/uninext/models/deformable_detr/ops \
        /tmp/cuda-op \
 && pip install --no-cache-dir --no-deps --no-index /tmp/cuda-op/*.whl \
 && rm -rf /tmp/cuda-op \
 && python -c "import \
MultiScaleDeformableAttention, detectron2._C, pycocotools.ytvos, trax, fairscale.nn.checkpoint, \
detectron2.projects.uninext"

# ---- runtime: the kit installed, a non-root user -------------------------------------------
FROM model-code AS runtime
COPY --from=kit-wheel /opt/rvos-kit/wheel /opt/rvos-kit/wheel
# --ignore-requires-python: the kit declares >= 3.10 for its native environment; its code
# is kept importable on 3.9 (tests/test_docker_policy.py) and the next line proves it.
RUN pip install --no-cache-dir --no-deps --no-index --ignore-requires-python \
        /opt/rvos-kit/wheel/rvos_kit-*.whl \
 && rvos-kit --help > /dev/null \
 && python -c "import torch, torchvision; \
assert torch.__version__ == '1.10.0+cu113', torch.__version__" \
 && python -c "from rvos_kit.stages.rvos.infer.upstream import verify_upstream as v; \
print(v('/opt/rvos-kit/upstream/iccv2023_RVOS_Challenge', ('UNINEXT',)))" \
 && useradd --create-home --uid 1000 --shell /bin/bash rvos
# `rvos-kit run` inside a container runs natively (no Docker in Docker).
ENV RVOS_KIT_IN_CONTAINER=1
USER 1000:1000
WORKDIR /home/rvos
CMD ["rvos-kit", "--help"]
