"""Random search behind the Search protocol: every genome drawn uniformly from the space (after the seeds)."""
from __future__ import annotations

from menndl_py.search.base import Proposal, Search


class RandomSearch(Search):
    """The baseline every search method must beat: new random genomes, the same sequence for the same seed."""

    def _ask(self) -> Proposal:
        return self._seed() or self._fresh(self._random)
