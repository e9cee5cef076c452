"""Dictionary indexing of EBSD patterns, the method EBSD users rely on, with kikuchipy: the master pattern projected
for orientations sampled evenly over the cubic fundamental zone (orix's `get_sample_fundamental`), each pattern given
the orientation of the dictionary pattern it correlates best with (kikuchipy's `dictionary_indexing`, normalised
cross-correlation), and optionally refined (kikuchipy's `refine_orientation`: Nelder–Mead on the correlation with
the master pattern projected at the orientation tried, within the dictionary's resolution of each Euler angle).

Dictionary patterns are noise-free projections at the nominal projection centre, as users make them; the
correlation is blind to a pattern's mean and scale, so they need no background or standardisation.

`index_near` narrows the search to the dictionary patterns nearest a given orientation each (a network's), so a
network's speed and the correlation's tolerance of how real patterns differ from simulated ones can be had together.

The patterns are kept once, as zero-mean unit vectors (their dot products are the correlations), made CHUNK at a
time. The ranks of a node make a dictionary together, each projecting its part into memory they share: one copy a
node.
"""
from __future__ import annotations

import contextlib
import functools
import io
import time
import warnings

import numpy as np
import torch

from menndl_py.engine.transport.share import Solo
from menndl_py.physics import ebsd
from menndl_py.physics.ebsd import EbsdSettings
from menndl_py.physics.orientation import cubic_tensor

ENERGY = 20.0  # kV: the bundled master pattern's beam energy
NEAR = 100  # dictionary patterns `index_near` correlates a pattern with: at 3°, those within about 8°
CHUNK = 4096  # orientations projected at a time


@contextlib.contextmanager
def _quiet():
    """kikuchipy prints its progress and a summary on stdout, and warns that a list of patterns has no map axes to
    compare with the crystal map's steps: not menndl's to say."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Signal navigation axes must be named")
        yield


class Dictionary:
    """A dictionary of simulated patterns over the cubic fundamental zone at `resolution` degrees, made by the
    ranks of `share` on each node together."""

    def __init__(self, settings: EbsdSettings, resolution: float, near: int = NEAR,
                 share: Solo = Solo()):
        import dask
        from orix.quaternion import symmetry
        from orix.sampling import get_sample_fundamental

        self.settings, self.resolution, self.near = settings, resolution, near  # near: `index_near`'s default k
        started = time.perf_counter()
        self.rotations = get_sample_fundamental(resolution=resolution, point_group=symmetry.O)
        self.unit = share.node_array((self.rotations.size, int(np.prod(settings.shape))), np.float32)
        bounds = np.linspace(0, len(self.unit), share.ranks_on_node + 1).astype(int)
        first, last = bounds[share.local_rank], bounds[share.local_rank + 1]  # this rank's part
        master, detector = ebsd.master_pattern(), ebsd.detector(settings)
        for start in range(first, last, CHUNK):
            rows = slice(start, min(start + CHUNK, last))
            with dask.config.set(scheduler="synchronous"):
                patterns = master.get_patterns(self.rotations[rows], detector, compute=True, show_progressbar=False)
            self.unit[rows] = _unit(patterns.data.reshape(len(patterns.data), -1))
        share.node_barrier()
        self.seconds = time.perf_counter() - started  # to make it

    def __len__(self) -> int:
        return len(self.unit)

    @property
    def quaternions(self) -> np.ndarray:
        """The dictionary's orientations (N × 4)."""
        return self.rotations.data.reshape(-1, 4)

    @functools.cached_property
    def signal(self):
        """The dictionary as kikuchipy's EBSD signal, over the unit patterns (no copy)."""
        from kikuchipy.signals import EBSD
        from orix.crystal_map import CrystalMap, PhaseList

        return EBSD(self.unit.reshape(-1, *self.settings.shape), detector=ebsd.detector(self.settings),
                    xmap=CrystalMap(phase_list=PhaseList(ebsd.master_pattern().phase), rotations=self.rotations))

    def index(self, patterns: np.ndarray, refine: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(quaternions (N × 4, w >= 0), normalised cross-correlations (N)) of patterns (N × H × W), each the best
        match in the dictionary, then refined if `refine`."""
        import dask
        from kikuchipy.signals import EBSD

        signal = EBSD(np.asarray(patterns, dtype=np.float32).reshape(-1, *self.settings.shape))
        with dask.config.set(scheduler="synchronous"), _quiet():
            found = signal.dictionary_indexing(self.signal, keep_n=1)
            if refine:
                found = signal.refine_orientation(_best(found), ebsd.detector(self.settings), ebsd.master_pattern(),
                                                  energy=ENERGY, trust_region=[self.resolution] * 3,
                                                  compute=True)
        quaternions = found.rotations.data.reshape(-1, 4)
        return np.where(quaternions[:, :1] < 0, -quaternions, quaternions), np.asarray(found.scores).reshape(-1)

    def index_near(self, patterns: np.ndarray, near: np.ndarray, k: int | None = None,
                   doubtful: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(quaternions (N × 4, w >= 0), normalised cross-correlations (N)) of patterns (N × H × W), each the best
        match among the k (default: the dictionary's `near`) dictionary patterns whose orientations lie nearest its
        own in `near` (N × 4), nearness being the distance of their cubic tensors, the same for every symmetry
        equivalent. Patterns whose `near` is not finite, or marked `doubtful` (N booleans), are matched against the
        whole dictionary instead."""
        patterns = np.asarray(patterns, dtype=np.float32).reshape(len(near), -1)
        near = np.asarray(near, dtype=np.float64).reshape(-1, 4)
        whole = ~np.isfinite(near).all(axis=1)
        if doubtful is not None:
            whole |= np.asarray(doubtful, dtype=bool)
        x = _unit(patterns)
        chosen, scores = np.empty(len(near), dtype=np.int64), np.empty(len(near))
        if whole.any():  # as `index` correlates, without its per-call cost (the dictionary standardised again)
            found = x[whole] @ self.unit.T
            chosen[whole] = found.argmax(axis=1)
            scores[whole] = found[np.arange(len(found)), chosen[whole]]
        if not whole.all():
            tensors = cubic_tensor(torch.as_tensor(near[~whole])).numpy()
            rows = self._tree.query(tensors, k=min(k or self.near, len(self)))[1].reshape(len(tensors), -1)
            found = np.stack([self.unit[r] @ v for r, v in zip(rows, x[~whole])])  # no N × k × P copy
            best = found.argmax(axis=1)
            chosen[~whole] = rows[np.arange(len(rows)), best]
            scores[~whole] = found[np.arange(len(rows)), best]
        quaternions = self.quaternions[chosen]
        return np.where(quaternions[:, :1] < 0, -quaternions, quaternions), scores

    @functools.cached_property
    def _tree(self):
        """A k-d tree of the dictionary's cubic tensors."""
        from scipy.spatial import cKDTree

        return cKDTree(cubic_tensor(torch.as_tensor(self.quaternions, dtype=torch.float64)).numpy())


def _unit(rows: np.ndarray) -> np.ndarray:
    """Rows (float32) less their means, scaled to unit length: their dot products are correlations."""
    rows = rows - rows.mean(axis=1, keepdims=True)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _best(crystal_map):
    """The crystal map of the best match only (refinement takes one orientation per pattern)."""
    from orix.crystal_map import CrystalMap
    from orix.quaternion import Rotation

    return CrystalMap(Rotation(crystal_map.rotations.data.reshape(-1, 4)), phase_list=crystal_map.phases)
