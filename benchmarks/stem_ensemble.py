#!/usr/bin/env python
"""STEM defects on other microscopes: do a search's other networks, or mirrored copies of each image, add to its
best network? Mean F1 of softmax outputs averaged over the K best stored networks of a run, and over mirrored
copies of each image (test-time flips: none, the columns mirrored, or all four mirrorings), on the sets of
`stem_transfer.py`. Mirroring the columns of the multislice images (x → -x, across an armchair line of the
orthorhombic cell) is a symmetry of the monolayer's projection; mirroring the rows is not (it turns the triangles
of the lattice over, the specimen rotated by 60°, which no multislice image shows).

The networks: the run's best/ network, then the candidates of highest fitness whose training state the run still
keeps (states/<id>.pt: the candidates that could still be promoted when the search ended). Each average gets its
own detection thresholds, tuned on the task's calibration images as a candidate's are. The sets are those of
`stem_transfer.py` (run that first: it makes the jittered multislice sets this script reads). Reports; does not
assert.

    python benchmarks/stem_ensemble.py runs/stem_transfer --networks 1 5
"""
from __future__ import annotations

import argparse

import numpy as np  # noqa: E402
import torch  # noqa: E402
from common import code_version, machine_load, table  # noqa: E402 (puts this checkout first on sys.path)
from stem_transfer import image_sets, scores  # noqa: E402

from menndl_py.commands.predict import load_best  # noqa: E402
from menndl_py.engine.transport.share import Solo  # noqa: E402
from menndl_py.genome import Genome  # noqa: E402
from menndl_py.physics import stem_analysis  # noqa: E402
from menndl_py.rundir.layout import RunDir  # noqa: E402
from menndl_py.rundir.results import read_rows  # noqa: E402
from menndl_py.tasks.stem.task import standardize  # noqa: E402

# the mirrored copies (flipped axes) averaged over; each tuple begins the last one, which `outputs` computes
MIRRORINGS = {"-": ((),), "columns": ((), (-1,)), "rows and columns": ((), (-1,), (-2,), (-2, -1))}


def stored_networks(run_dir: str, task, best: Genome, count: int) -> list[tuple[Genome, torch.nn.Module, str]]:
    """Up to `count` other networks of the run with a stored state, highest fitness (at their highest rung) first."""
    run = RunDir(run_dir)
    latest = {row["id"]: row for row in sorted(read_rows(run.results), key=lambda row: row["rung"])
              if row["status"] == "ok"}
    kept = [i for i, row in latest.items() if (run.states / f"{i}.pt").is_file() and row["genome_hash"] != best.key]
    networks = []
    for i in sorted(kept, key=lambda i: -latest[i]["fitness"])[:count]:
        genome = Genome.from_json(latest[i]["genome"])
        model = task.space().build(genome)
        model.load_state_dict(torch.load(run.states / f"{i}.pt", map_location="cpu", weights_only=True)["model"])
        networks.append((genome, model.eval(), f"{i} (rung {latest[i]['rung']}, {latest[i]['fitness']:.3f})"))
    return networks


@torch.no_grad()
def outputs(task, networks: list, image: np.ndarray) -> np.ndarray:
    """Softmax outputs (networks × mirrorings × C×H×W) of one image, each mirrored copy's mirrored back."""
    x = torch.from_numpy(standardize(image)[None, None])
    return np.stack([[torch.softmax(task.outputs(model, genome, x.flip(dims)).float(), 1).flip(dims)[0].numpy()
                      for dims in MIRRORINGS["rows and columns"]] for genome, model in networks])


def averaged(probabilities: np.ndarray, k: int, flips: str) -> np.ndarray:
    """The outputs of `outputs` averaged over the first k networks and the mirrorings `MIRRORINGS[flips]`."""
    return probabilities[:k, :len(MIRRORINGS[flips])].mean((0, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--networks", type=int, nargs="+", default=[1, 5], help="ensemble sizes K")
    parser.add_argument("--jitter", type=float, default=0.3, help="Å of scan-row jitter of the jittered sets")
    args = parser.parse_args()
    torch.set_num_threads(1)
    task, best, model = load_best(args.run_dir, quiet=True, network="best")
    others = stored_networks(args.run_dir, task, best, max(args.networks) - 1)
    sets = image_sets(task, args.jitter, 36, Solo())
    calibration = task.calibration_set((0, 1))
    print(f"stem_ensemble: {code_version()}\n  {machine_load()}\n  networks: best/ ({best.key}), then "
          + ", ".join(name for _, _, name in others))
    networks = [(best, model)] + [(g, m) for g, m, _ in others]
    calibration_outputs = [outputs(task, networks, x[0]) for x in calibration[0]]
    set_outputs = [[outputs(task, networks, image) for image in images] for images, _, _ in sets.values()]
    rows = []
    for k in sorted({min(k, len(networks)) for k in args.networks}):
        for flips in MIRRORINGS:
            counts = sum(stem_analysis.threshold_counts(averaged(p, k, flips), t, r, task.smoothing_px)
                         for p, t, r in zip(calibration_outputs, *calibration[1:]))
            rule = stem_analysis.calibrate(counts, task.smoothing_px)
            f1 = [scores(task, lambda p: stem_analysis.threshold_defects(averaged(p, k, flips), rule), found,
                         labels)[0] for found, (_, labels, _) in zip(set_outputs, sets.values())]
            rows.append([k, flips, *(f"{s['defect_f1']:.3f}" for s in f1)])
    print(table(["networks", "flips", *sets], rows, "\nmean F1 of the averaged outputs"))


if __name__ == "__main__":
    main()
