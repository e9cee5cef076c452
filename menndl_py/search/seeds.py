"""Known networks to start a search from: `search.seed_genomes` in the config."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from menndl_py.errors import CandidateRefused, UserError
from menndl_py.genome import Genome, SearchSpace
from menndl_py.rundir.layout import genome_file


def seed_genomes(items: Sequence, baselines: dict[str, Genome], space: SearchSpace,
                 sweep: Sequence = ()) -> list[Genome]:
    """The genomes named by `items`: "baselines" (the task's hand-designed networks), one baseline's name, a
    genome JSON file, or a run directory (its best network). Each must lie in the (restricted) search space.
    Each is followed by its copies with every other value of each training gene named in `sweep`, one gene at a
    time (say, the hand-made MLP on every input representation)."""
    if not isinstance(items, list):
        raise UserError(f"search.seed_genomes: must be a list, got {items!r}")
    genomes: list[Genome] = []
    for i, item in enumerate(items):
        where = f"search.seed_genomes[{i}]"
        if item == "baselines":
            found = list(baselines.values())
        elif item in baselines:
            found = [baselines[item]]
        elif isinstance(item, str) and item:
            path = genome_file(Path(item))
            try:
                found = [Genome.from_json(json.loads(path.read_text()))]
            except OSError as exc:
                raise UserError(f"{where}: cannot read {path} ({exc.strerror or exc})") from None
            except (ValueError, TypeError, KeyError, AttributeError):
                raise UserError(f"{where}: {path} is not a genome JSON file") from None
        else:
            raise UserError(f"{where}: expected \"baselines\", a baseline's name, a genome JSON file or a run "
                            f"directory, got {item!r}")
        for genome in found:
            reason = space.outside(genome)
            if reason:
                raise UserError(f"{where}: outside the search space: {reason}")
            try:
                space.cost(genome)
            except CandidateRefused as exc:
                raise UserError(f"{where}: the search space refuses it: {exc}") from None
            genomes.append(genome)
    return _swept(genomes, sweep, space)


def _swept(genomes: list[Genome], sweep: Sequence, space: SearchSpace) -> list[Genome]:
    if not isinstance(sweep, (list, tuple)):
        raise UserError(f"search.seed_sweep: must be a list of training genes, got {sweep!r}")
    for i, name in enumerate(sweep):
        if name not in space.training_genes:
            raise UserError(f"search.seed_sweep[{i}]: {name!r} is not a training gene of this space; expected one "
                            f"of {sorted(space.training_genes)}")
    out: list[Genome] = []
    for genome in genomes:
        out.append(genome)
        for name in sweep:
            for value in space.training_genes[name].values:
                copy = Genome(genome.layers, {**genome.training, name: value})
                try:
                    space.cost(copy)
                except CandidateRefused:
                    continue
                if copy not in out:
                    out.append(copy)
    return out
