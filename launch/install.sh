#!/usr/bin/env bash
# Install everything menndl_py needs on a Debian machine; safe to run again (it skips what is present).
# With an NVIDIA driver (nvidia-smi reports the CUDA version it supports): torch's CUDA build for that driver, and
# Horovod built with NCCL (the NCCL that pip installs beside torch) for GPU tensors and MPI for CPU tensors.
# Without one: torch as pip finds it, and Horovod with MPI only.
#   bash launch/install.sh [--dry-run]   --dry-run: print each decision and what would run; install nothing
#   MENNDL_VENV         virtual environment to create/use   (default: ~/.cache/menndl_py/venv)
#   MENNDL_WHEELS       where built Horovod wheels are cached (default: ~/.cache/menndl_py/wheels)
#   MENNDL_TORCH_BUILD  cpu, cu126, cu130 or cu132: this torch build instead of the driver's choice
#   CUDA_HOME           the CUDA toolkit whose nvcc compiles Horovod's GPU kernels (default: nvcc on PATH, else
#                       /usr/local/cuda); its major version must be the torch build's
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${MENNDL_VENV:-$HOME/.cache/menndl_py/venv}"
wheels="${MENNDL_WHEELS:-$HOME/.cache/menndl_py/wheels}"
torch_version=2.13.0
horovod_version=0.28.1
cuda_builds=(12.6 13.0 13.2)  # torch 2.13.0's CUDA builds on download.pytorch.org (PyTorch's CUDA support matrix)
say() { echo "[install] $*"; }
fail() { echo "[install] $*" >&2; exit 2; }

case "${1:-}" in
  "") dry_run="" ;;
  --dry-run) dry_run=1 ;;
  *) fail "unknown argument '$1' (usage: bash launch/install.sh [--dry-run])" ;;
esac

# 0. The torch build. nvidia-smi's "CUDA Version" is the newest CUDA the driver runs: take torch's newest CUDA build
#    not newer than it. A driver older than every build stops the install (the GPUs would sit idle under a CPU
#    build); MENNDL_TORCH_BUILD chooses by hand.
as_number() { echo $((10#${1%%.*} * 100 + 10#${1#*.})); }  # 12.6 -> 1206
driver_cuda=""
if command -v nvidia-smi >/dev/null; then
  smi="$(timeout 60 nvidia-smi 2>&1)" || true
  driver_cuda="$(sed -n '/CUDA Version/{s/.*CUDA Version: *\([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p;q;}' <<<"$smi")"
  if [ -n "$driver_cuda" ]; then
    say "NVIDIA driver for CUDA $driver_cuda (nvidia-smi)"
  else
    say "nvidia-smi reports no CUDA version ('${smi%%$'\n'*}'): no usable NVIDIA driver"
  fi
else
  say "no NVIDIA driver (no nvidia-smi on PATH)"
fi
build="${MENNDL_TORCH_BUILD:-}"
if [ -z "$build" ]; then
  build=cpu
  for v in "${cuda_builds[@]}"; do
    if [ -n "$driver_cuda" ] && [ "$(as_number "$v")" -le "$(as_number "$driver_cuda")" ]; then build="cu${v/./}"; fi
  done
  if [ -n "$driver_cuda" ] && [ "$build" = cpu ]; then
    fail "the NVIDIA driver supports CUDA $driver_cuda, older than torch $torch_version's oldest CUDA build" \
         "(${cuda_builds[0]}): update the driver, or set MENNDL_TORCH_BUILD=cpu (or cu${cuda_builds[0]/./})"
  fi
fi
build_cuda=""  # X.Y of a CUDA build
for v in "${cuda_builds[@]}"; do [ "$build" = "cu${v/./}" ] && build_cuda="$v"; done
if [ "$build" != cpu ] && [ -z "$build_cuda" ]; then
  fail "MENNDL_TORCH_BUILD: must be cpu or one of$(printf ' cu%s' "${cuda_builds[@]//./}"), got '$build'"
fi

pip=("$venv/bin/pip" install -q)
py="$venv/bin/python"
if [ -n "$build_cuda" ]; then
  index="https://download.pytorch.org/whl/$build"
  torch_install=("${pip[@]}" "torch==$torch_version+$build" --index-url "$index")
  say "torch build: $build (torch==$torch_version+$build from $index)"
  collectives="NCCL (GPU) + MPI (CPU)"
else
  torch_install=("${pip[@]}" "torch==$torch_version")
  say "torch build: as pip finds torch==$torch_version (the CPU file on this disk where it lies there)"
  collectives="MPI (CPU)"
fi
say "Horovod $horovod_version collectives to build: $collectives"

# Where pip puts NCCL (nvidia-nccl-cu12/-cu13, a dependency of torch's CUDA builds), and the CUDA toolkit.
python="$py"
[ -x "$python" ] || python=python3  # the venv's site-packages as the python that makes it will lay them out
site="$("$python" -c 'import sys, sysconfig
print(sysconfig.get_path("purelib", "posix_prefix", vars={"base": sys.argv[1]}))' "$venv")"
nccl="$site/nvidia/nccl"
cuda_home="${CUDA_HOME:-}"
if [ -z "$cuda_home" ] && command -v nvcc >/dev/null; then
  cuda_home="$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")"
fi
if [ -z "$cuda_home" ] && [ -x /usr/local/cuda/bin/nvcc ]; then cuda_home=/usr/local/cuda; fi
toolkit_problem() {  # why $cuda_home cannot compile Horovod's kernels for this build, or nothing
  local release=""
  if [ -n "$cuda_home" ] && [ -x "$cuda_home/bin/nvcc" ]; then
    release="$("$cuda_home/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\),.*/\1/p')" || release=""
  fi
  if [ -z "$release" ]; then
    echo "Horovod's NCCL build compiles CUDA kernels and needs a CUDA ${build_cuda%%.*} toolkit (nvcc): none found" \
         "(CUDA_HOME, nvcc on PATH, /usr/local/cuda); load your site's CUDA module or set CUDA_HOME"
  elif [ "${release%%.*}" != "${build_cuda%%.*}" ]; then
    echo "the CUDA toolkit at $cuda_home is CUDA $release, torch's build is CUDA $build_cuda: load a CUDA" \
         "${build_cuda%%.*} toolkit or set CUDA_HOME"
  fi
}
horovod_env=(HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_MPI=1 HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1
             HOROVOD_WITHOUT_GLOO=1)
if [ -n "$build_cuda" ]; then
  # NCCL's pip wheel has libnccl.so.2 only; Horovod's CMake looks for libnccl.so: a link in the build directory
  horovod_env+=(HOROVOD_GPU_OPERATIONS=NCCL HOROVOD_NCCL_LINK=SHARED "HOROVOD_NCCL_INCLUDE=$nccl/include"
                "HOROVOD_NCCL_LIB=<build-dir>/nccl-lib" "HOROVOD_CUDA_HOME=$cuda_home")
fi

if [ -n "$dry_run" ]; then
  say "dry run: nothing is installed; a real run would do the following"
  if command -v mpicc >/dev/null && command -v mpirun >/dev/null; then say "1. Open MPI: present"
  else say "1. Open MPI: apt-get install openmpi-bin libopenmpi-dev g++ cmake"; fi
  if [ -x "$py" ]; then say "2. virtual environment: $venv (present)"
  else say "2. virtual environment: python3 -m venv $venv"; fi
  if [ -n "$build_cuda" ]; then
    say "3. torch: ${torch_install[*]} (skipped when the venv's torch is built for CUDA $build_cuda)"
    cache="$wheels/horovod-$horovod_version-torch${torch_version}_$build-nccl"
    skip="the venv's Horovod is built with NCCL"
  else
    say "3. torch: ${torch_install[*]} (skipped when the venv has a torch)"
    cache="$wheels/horovod-$horovod_version-torch<torch version>"
    skip="the venv has a Horovod"
  fi
  say "4. requirements.txt, crabnet (data only)"
  say "5. Horovod: ${horovod_env[*]} pip wheel, cached in $cache (skipped when $skip)"
  if [ -n "$build_cuda" ]; then
    say "   NCCL: $nccl/{include,lib} (libnccl.so -> $nccl/lib/libnccl.so.2); CUDA toolkit: ${cuda_home:-none found}"
    problem="$(toolkit_problem)"
    [ -z "$problem" ] || say "   a real run would stop before building Horovod: $problem"
  fi
  say "6. menndl_py, editable"
  exit 0
fi

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

# 3. torch: without a driver, pip takes the CPU file on this disk where it lies there, a CUDA build elsewhere; with
#    one, the CUDA build chosen above (replacing another build).
if [ -n "$build_cuda" ]; then
  if ! "$py" -c "import sys, torch; sys.exit(torch.version.cuda != '$build_cuda')" 2>/dev/null; then
    say "torch $torch_version+$build"
    "${torch_install[@]}"
  fi
elif ! "$py" -c "import torch" 2>/dev/null; then
  say "torch $torch_version"
  "${torch_install[@]}"
fi

# 4. The rest from PyPI; crabnet only for the OQMD data files it bundles.
"${pip[@]}" -r "$repo/requirements.txt"
if ! "$py" -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('crabnet') is None)"; then
  say "crabnet==2.0.8 (data only)"
  "${pip[@]}" --no-deps --ignore-requires-python crabnet==2.0.8
fi

# 5. Horovod, built against this torch and Open MPI (C++17 is needed for torch 2.x), cached as a wheel; with CUDA,
#    built with NCCL too (a wheel cached apart from the CPU one) and put in place of one built without it.
if [ -n "$build_cuda" ]; then
  present="import horovod.torch as hvd, sys; sys.exit(not hvd.nccl_built())"
else
  present="import horovod.torch"
fi
if ! "$py" -c "$present" 2>/dev/null; then
  tv="$("$py" -c 'import torch; print(torch.__version__.replace("+", "_"))')"
  cache="$wheels/horovod-$horovod_version-torch$tv${build_cuda:+-nccl}"
  if ! ls "$cache"/horovod-*.whl >/dev/null 2>&1; then
    if [ -n "$build_cuda" ]; then
      problem="$(toolkit_problem)"
      [ -z "$problem" ] || fail "$problem"
      [ -f "$nccl/include/nccl.h" ] && [ -f "$nccl/lib/libnccl.so.2" ] || fail "torch $build brought no NCCL to $nccl"
    fi
    say "building Horovod $horovod_version with PyTorch + $collectives (about 6 minutes)"
    work="$(mktemp -d)"
    if [ -n "$build_cuda" ]; then
      mkdir "$work/nccl-lib"
      ln -s "$nccl/lib/libnccl.so.2" "$work/nccl-lib/libnccl.so"
      horovod_env=("${horovod_env[@]/<build-dir>/$work}")
    fi
    "$venv/bin/pip" download -q --no-deps --no-binary :all: "horovod==$horovod_version" -d "$work"
    tar -xzf "$work"/horovod-*.tar.gz -C "$work"
    src="$(echo "$work"/horovod-$horovod_version)"
    sed -i 's/set(CMAKE_CXX_STANDARD 14)/set(CMAKE_CXX_STANDARD 17)/' "$src/CMakeLists.txt" "$src/horovod/torch/CMakeLists.txt"
    if [ -n "$build_cuda" ]; then  # the CUDA kernels in C++17 as well, like the rest of the build
      sed -i 's/set(CMAKE_CUDA_STANDARD 11)/set(CMAKE_CUDA_STANDARD 17)/' "$src/horovod/common/ops/cuda/CMakeLists.txt"
    fi
    "${pip[@]}" cloudpickle psutil packaging cffi
    mkdir -p "$cache"
    (cd "$src" && env "${horovod_env[@]}" MAKEFLAGS="-j$(nproc)" \
      "$venv/bin/pip" wheel -q --no-build-isolation --no-deps . -w "$cache")
    rm -rf "$work"
  fi
  "${pip[@]}" ${build_cuda:+--force-reinstall --no-deps} "$cache"/horovod-*.whl
fi
"$py" -c "
import horovod.torch as hvd
built = [name for name, ok in (('NCCL (GPU)', hvd.nccl_built()), ('MPI (CPU)', hvd.mpi_built()),
                               ('Gloo', hvd.gloo_built())) if ok]
print('[install] Horovod collectives:', ' + '.join(built))"
if [ -n "$build_cuda" ] && ! "$py" -c "import horovod.torch as hvd, sys; sys.exit(not hvd.nccl_built())"; then
  fail "Horovod in $venv was built without NCCL: remove its cached wheel and run this again"
fi

# 6. menndl_py itself, editable, with the `menndl` command.
"${pip[@]}" --no-deps -e "$repo"

# 7. orix's generalized ufuncs compiled into numba's on-disk cache here, in one process: ranks that compile one into
#    the cache at the same moment can leave it corrupt, and every later import of orix then crashes (numba #10128).
#    A cache left so is removed first, so running this again mends it.
orix_dir="$("$py" -c "import importlib.util; print(importlib.util.find_spec('orix').submodule_search_locations[0])")"
find "$orix_dir" -name '*.nb[ic]' -delete
"$py" -c "import orix.quaternion.symmetry; from orix.quaternion import Quaternion; from orix.vector import Vector3d; q = Quaternion([1, 0, 0, 0]); (q * ~q) * Vector3d([0, 0, 1])"
"$py" -c "import horovod.torch as hvd, mpi4py, torch; print('[install] ok: torch', torch.__version__, 'horovod', __import__('horovod').__version__, 'mpi4py', mpi4py.__version__)"
