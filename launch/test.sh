#!/usr/bin/env bash
# Install everything, then lint (ruff) and run the whole test suite (unit tests, MPI tests under mpirun, CLI tests,
# Slurm tests). The fast suite alone: python -m pytest -m "not mpi and not slurm and not slow".
# The 30 slowest tests are listed at the end.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/launch/install.sh"
source "$repo/launch/env.sh"
cd "$repo"
ruff check menndl_py tests benchmarks
python -m pytest tests -q -p no:cacheprovider --timeout=900 --durations=30 "$@"
