#!/bin/bash
# install-python.sh VERSION VENV -- CPython VERSION into /opt/python and a venv at VENV,
# every byte hash-checked: uv and the python-build-standalone archive come through
# fetch-verified.sh (docker/downloads.lock), uv installs CPython from that local copy
# (checking the sha256 again and patching sysconfig for extension builds), and the
# venv's pip/setuptools/wheel are replaced by docker/bootstrap.lock (--require-hashes).
set -euo pipefail
version=${1:?usage: install-python.sh VERSION VENV}
venv=${2:?usage: install-python.sh VERSION VENV}
here=$(cd "$(dirname "$0")" && pwd)
uv_name=$(awk '$1 ~ /^uv-/ { print $1 }' "$here/downloads.lock")
url=$(awk -v n="cpython-$version" '$1 == n { print $4 }' "$here/downloads.lock")
if [ -z "$url" ]; then
    echo "install-python: cpython-$version is not pinned in $here/downloads.lock" >&2
    exit 1
fi
file=$(basename "$url")
file=${file//%2B/+}
release=$(basename "$(dirname "$url")")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$here/fetch-verified.sh" "$uv_name" "$work/uv.whl"
python_zip_member="${uv_name}.data/scripts/uv"
unzip -q -j "$work/uv.whl" "$python_zip_member" -d "$work/bin"
mkdir -p "$work/mirror/$release"
"$here/fetch-verified.sh" "cpython-$version" "$work/mirror/$release/$file"
export UV_NO_CACHE=1 UV_PYTHON_INSTALL_DIR=/opt/python UV_NO_CONFIG=1
"$work/bin/uv" python install --no-bin --mirror "file://$work/mirror" "$version"
python=$("$work/bin/uv" python find --managed-python --no-python-downloads "$version")
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --no-cache-dir --disable-pip-version-check \
    --require-hashes --no-deps --only-binary :all: -r "$here/bootstrap.lock"
"$venv/bin/python" -c 'import sys; print("install-python:", sys.version.split()[0], sys.prefix)'
