#!/usr/bin/env bash
# Install everything, then run a real ElemNet search on this machine: 2 MPI ranks (master + 1 group of one rank on
# both cores), 10 minutes, beside the hand-made baselines, each trained on the same data for the search's 10 minutes
# on the same cores, and a random forest.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/launch/install.sh"
source "$repo/launch/env.sh"
cd "$repo"
name="elemnet-$(date +%Y%m%d-%H%M%S)"
ranks="${MENNDL_RANKS:-2}"
menndl data make elemnet --config configs/elemnet.yaml
menndl baseline configs/elemnet.yaml --name "$name" --budget 600
mpirun --oversubscribe --bind-to none -np "$ranks" menndl run configs/elemnet.yaml --name "$name"
menndl report "runs/$name" > /dev/null
echo "[quickstart] report: runs/$name/report/summary.md and its PNG plots"
