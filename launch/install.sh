#!/usr/bin/env bash
# Install everything menndl_py needs on a Debian machine; safe to run again (it skips what is present).
#   MENNDL_VENV   virtual environment to create/use   (default: ~/.cache/menndl_py/venv)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MENNDL_VENV:-$HOME/.cache/menndl_py/venv}"
wheels="${MENNDL_WHEELS:-$HOME/.cache/menndl_py/wheels}"
torch_version=2.13.0
horovod_version=0.28.1
say() { echo "[install] $*"; }

# 1. Open MPI (and the compilers mpi4py and Horovod build with).
if ! command -v mpicc >/dev/null || ! command -v mpirun >/dev/null; then
  say "Open MPI from apt"
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq openmpi-bin libopenmpi-dev g++ cmake >/dev/null
fi

# 2. The virtual environment.
if [ ! -x "$venv/bin/python" ]; then
  say "virtual environment at $venv"
  mkdir -p "$(dirname "$venv")"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip wheel setuptools
fi
pip=("$venv/bin/pip" install -q)
py="$venv/bin/python"

# 3. torch: pip takes the CPU file on this disk where it lies there, a CUDA build elsewhere.
if ! "$py" -c "import torch" 2>/dev/null; then
  say "torch $torch_version"
  "${pip[@]}" "torch==$torch_version"
fi

# 4. The rest from PyPI; crabnet only for the OQMD data files it bundles.
"${pip[@]}" -r "$repo/requirements.txt"
if ! "$py" -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('crabnet') is None)"; then
  say "crabnet==2.0.8 (data only)"
  "${pip[@]}" --no-deps --ignore-requires-python crabnet==2.0.8
fi

# 5. Horovod, built against this torch and Open MPI (C++17 is needed for torch 2.x), cached as a wheel.
if ! "$py" -c "import horovod.torch" 2>/dev/null; then
  tv="$("$py" -c 'import torch; print(torch.__version__.replace("+", "_"))')"
  cache="$wheels/horovod-$horovod_version-torch$tv"
  if ! ls "$cache"/horovod-*.whl >/dev/null 2>&1; then
    say "building Horovod $horovod_version with PyTorch + MPI (about 6 minutes)"
    build="$(mktemp -d)"
    "$venv/bin/pip" download -q --no-deps --no-binary :all: "horovod==$horovod_version" -d "$build"
    tar -xzf "$build"/horovod-*.tar.gz -C "$build"
    src="$(echo "$build"/horovod-$horovod_version)"
    sed -i 's/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 17)/' "$src/CMakeLists.txt" "$src/horovod/torch/CMakeLists.txt"
    "${pip[@]}" cloudpickle psutil packaging cffi
    mkdir -p "$cache"
    (cd "$src" && HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_MPI=1 HOROVOD_WITHOUT_TENSORFLOW=1 \
      HOROVOD_WITHOUT_MXNET=1 HOROVOD_WITHOUT_GLOO=1 MAKEFLAGS="-j$(nproc)" \
      "$venv/bin/pip" wheel -q --no-build-isolation --no-deps . -w "$cache")
    rm -rf "$build"
  fi
  "${pip[@]}" "$cache"/horovod-*.whl
fi

# 6. menndl_py itself, editable, with the `menndl` command.
"${pip[@]}" --no-deps -e "$repo"
"$py" -c "import horovod.torch as hvd, mpi4py, torch; print('[install] ok: torch', torch.__version__, 'horovod', __import__('horovod').__version__, 'mpi4py', mpi4py.__version__)"
