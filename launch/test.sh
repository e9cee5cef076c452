#!/usr/bin/env bash
# Install everything, then run the test suite (unit tests, MPI tests under mpirun, CLI tests).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/launch/install.sh"
source "$repo/launch/env.sh"
cd "$repo"
python -m pytest tests -q -p no:cacheprovider --timeout=900 "$@"
