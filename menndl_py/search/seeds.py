"""Known networks to start a search from: `search.seed_genomes` in the config."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from menndl_py.errors import CandidateRefused, UserError
from menndl_py.genome import Genome, SearchSpace
from menndl_py.rundir.layout import genome_file


def seed_genomes(items: Sequence, baselines: dict[str, Genome], space: SearchSpace) -> list[Genome]:
    """The genomes named by `items`: "baselines" (the task's hand-designed networks), one baseline's name, a
    genome JSON file, or a run directory (its best network). Each must lie in the (restricted) search space."""
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
    return genomes
