"""DEAP's operators draw from the global `random` module; run them from a private generator instead."""
from __future__ import annotations

import contextlib
import random


@contextlib.contextmanager
def driving_global_random(rng: random.Random):
    """Within the block the global generator is seeded from `rng`; outside it is left as it was."""
    saved = random.getstate()
    random.seed(rng.getrandbits(64))
    try:
        yield
    finally:
        random.setstate(saved)


def state_to_json(rng: random.Random) -> list:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def state_from_json(rng: random.Random, state: list) -> None:
    rng.setstate((state[0], tuple(state[1]), state[2]))
