"""A share of a parallel job, as the work that is spread over ranks sees it: which rank this is, how many there
are, and the few collectives that such work needs. `Solo` is the one-process share; the MPI transport gives
`MPIShare`. Data makers and `menndl predict` take a share and never see a communicator."""
from __future__ import annotations

from typing import Any, Iterable, Iterator

import numpy as np


class Solo:
    """The share of a job of one process: every item is this rank's, every collective is the identity."""

    rank, size, local_rank, ranks_on_node = 0, 1, 0, 1

    def mine(self, items: list) -> list:
        """This rank's items: every size-th, from its rank."""
        return items[self.rank::self.size]

    def bcast(self, value: Any) -> Any:
        """Rank 0's value, on every rank."""
        return value

    def allgather(self, value: Any) -> list:
        """Every rank's value, in rank order, on every rank."""
        return [value]

    def node_array(self, shape: tuple, dtype) -> np.ndarray:
        """An uninitialised array that every rank of this node sees, one copy a node: each rank fills its part,
        then all meet at `node_barrier` before reading the others'."""
        return np.empty(shape, dtype)

    def node_barrier(self) -> None:
        """Wait until every rank of this node is here."""

    def to_root(self, chunks: Iterable[list], expected: int) -> Iterator[list]:
        """Hand lists of results to rank 0. On rank 0: yields its own `chunks` as they are made, with the other
        ranks' chunks as they arrive, until the others' chunks hold `expected` items in all. Elsewhere: sends each
        of its chunks to rank 0 (returning once rank 0 takes it) and yields nothing."""
        yield from chunks
