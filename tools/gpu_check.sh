#!/usr/bin/env bash
# `make smoke-gpu`: prove a GPU machine runs every GPU stage, in about 8 minutes, with no
# network. Written for the project's H200 check machine (Python 3.12, torch 2.11 + CUDA 13.0,
# nvcc 13.0), run from the repository root. Stops at the first failure.
#
# Brings (each an env var, defaults shown):
#   WHEELS=wheels/gpu          `make smoke-wheels` parts (part1/, part2/, ...), or nothing
#                              when the machine's Python already has them
#   UPSTREAM_ARCHIVE=shared/upstream/iccv2023_RVOS_Challenge-c538b0d.tar.gz
#                              the published code at the pinned commit (shared/ in the
#                              checkout, else in the folder above it, where the tests read it)
#   OUT=smoke-gpu              where the results go: smoke.json, smoke.log, build logs
#   SMOKE_ARGS=                more `rvos-kit smoke` options (e.g. --stages soc,aot)
# Steps:
#   1. the GPU, driver and torch (fails at once without CUDA);
#   2. a venv over the machine's torch (--system-site-packages), the wheels installed
#      offline (--no-index), the kit from this checkout (PYTHONPATH=src);
#   3. the published archive unpacked; the deformable-attention op copied, patched
#      (tools/apply_msda_patch.py, docker/patches/msda-torch2.patch: the torch >= 2.6 API
#      renames) and built for this GPU (docker/build-cuda-op.py); UNINEXT's detectron2
#      built from the archive (tools/build_detectron2.py);
#   4. `rvos-kit smoke --device cuda` over every GPU stage at 720p (2 videos x 2
#      expressions x 4 frames), --compare-msda, --fail-fast, into $OUT/smoke.json.
set -euo pipefail
T0=$(date +%s)
OUT=${OUT:-smoke-gpu}
WHEELS=${WHEELS:-wheels/gpu}
ARCHIVE_NAME=iccv2023_RVOS_Challenge-c538b0d.tar.gz
if [ -z "${UPSTREAM_ARCHIVE:-}" ]; then  # shared/ in the checkout, else beside it
  UPSTREAM_ARCHIVE=shared/upstream/$ARCHIVE_NAME
  [ -f "$UPSTREAM_ARCHIVE" ] || UPSTREAM_ARCHIVE=${PWD%/*}/shared/upstream/$ARCHIVE_NAME
fi
VENV=${VENV:-.venv-gpu}
WORK=${WORK:-/tmp/rvos-kit-gpu}
mkdir -p "$OUT" "$WORK"
OUT=$(cd "$OUT" && pwd)
step() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
die() { echo "gpu_check: $*" >&2; exit 1; }

step "1/4 device"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c 'import sys, torch; print(sys.version.split()[0], torch.__version__, torch.version.cuda); sys.exit(0 if torch.cuda.is_available() else 1)' \
  || die "torch sees no CUDA device"
command -v nvcc >/dev/null && nvcc --version | tail -1

step "2/4 environment ($VENV, offline)"
[ -x "$VENV/bin/python" ] || python3 -m venv --system-site-packages "$VENV"
PY=$VENV/bin/python
if compgen -G "$WHEELS/part*" >/dev/null; then
  LINKS=(); for d in "$WHEELS"/part*; do LINKS+=(--find-links "$d"); done
  "$PY" -m pip install -q --no-index "${LINKS[@]}" -r tools/gpu-wheels.txt
  "$PY" -m pip install -q --no-index --no-deps "${LINKS[@]}" imgaug==0.4.0 deaotpy==1.11.0
fi
export PYTHONPATH=$PWD/src
"$PY" -c 'import torch, torchvision, transformers, aot, rvos_kit' || die "imports fail (wheels missing?)"

step "3/4 published code, the op, detectron2"
[ -f "$UPSTREAM_ARCHIVE" ] || die "$UPSTREAM_ARCHIVE: the published archive is not here"
rm -rf "$WORK/up" && mkdir -p "$WORK/up" && tar -xzf "$UPSTREAM_ARCHIVE" -C "$WORK/up"
UPSTREAM=$(find "$WORK/up" -mindepth 1 -maxdepth 1 -type d | head -1)
CAP=$("$PY" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$CAP}
if [ -f tools/apply_msda_patch.py ] && [ -f docker/build-cuda-op.py ]; then
  rm -rf "$WORK/msda" "$WORK/msda-wheel"
  "$PY" tools/apply_msda_patch.py "$UPSTREAM" soc_test/models/ops "$WORK/msda" > "$OUT/msda-build.log" 2>&1 \
    && "$PY" docker/build-cuda-op.py "$WORK/msda" "$WORK/msda-wheel" >> "$OUT/msda-build.log" 2>&1 \
    && "$PY" -m pip install -q --no-index --no-deps "$WORK"/msda-wheel/*.whl \
    || { tail -30 "$OUT/msda-build.log"; die "the deformable-attention op did not build ($OUT/msda-build.log)"; }
  COMPARE=--compare-msda
else
  echo "no tools/apply_msda_patch.py: the op is not built; smoke runs without --compare-msda"
  COMPARE=
fi
if ! "$PY" -c 'import detectron2' 2>/dev/null; then
  "$PY" tools/build_detectron2.py "$UPSTREAM_ARCHIVE" > "$OUT/detectron2-build.log" 2>&1 \
    || { tail -30 "$OUT/detectron2-build.log"; die "detectron2 did not build"; }
fi

step "4/4 rvos-kit smoke --device cuda"
cat > "$WORK/params.yaml" <<EOF
# written by tools/gpu_check.sh: the published DAG's GPU stages, natively on this machine
compat: challenge2023
paths: {outputs: $WORK/outputs}
device: cuda
runner: {mode: native}
infer: {upstream: $UPSTREAM, chunk_videos: 16}
models:
  soc:            {kind: logits,        source: infer}
  referformer_ft: {kind: logits,        source: infer}
  mutr:           {kind: logits,        source: infer}
  convnext:       {kind: probabilities, source: infer}
  vit_huge:       {kind: probabilities, source: infer}
propagation:
  aot:   {backend: aot, model: swinl_aotl, scales: [0.8, 1.0, 1.2], flip: true,
          max_long_side: 1040, engine: published_aot_fork}
  deaot: {backend: deaot, model: swinl_deaotl, scales: [0.8, 1.0, 1.2], flip: true,
          max_long_side: 1040, engine: published_aot_fork}
EOF
# cheap stages first: a broken setup shows in the first minute
STAGES=${STAGES:-soc,referformer_ft,mutr,aot,deaot,convnext,vit_huge}
set +e
timeout "${SMOKE_TIMEOUT:-420}" "$PY" -m rvos_kit smoke --params "$WORK/params.yaml" --device cuda \
  --stages "$STAGES" $COMPARE --fail-fast --out "$OUT/smoke.json" ${SMOKE_ARGS:-} 2>&1 | tee "$OUT/smoke.log"
rc=${PIPESTATUS[0]}
set -e
cp -r "$WORK/outputs/smoke/logs" "$OUT/stage-logs" 2>/dev/null || true
step "done: exit $rc ($OUT/smoke.json)"
exit "$rc"
