"""A genome: a list of layer genes plus training genes; plain data, hashable, JSON-serialisable."""
from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping, Sequence


class Genome:
    """Immutable by convention: operators return new genomes. Equality and hash follow `key`."""

    __slots__ = ("layers", "training", "key")

    def __init__(self, layers: Sequence[Mapping[str, Any]], training: Mapping[str, Any]):
        self.layers = tuple(dict(layer) for layer in layers)
        self.training = dict(training)
        self.key = hashlib.sha1(self.canonical().encode()).hexdigest()[:16]

    def to_json(self) -> dict:
        return {"layers": [dict(layer) for layer in self.layers], "training": dict(self.training)}

    def canonical(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, data: Mapping | str) -> "Genome":
        if isinstance(data, str):
            data = json.loads(data)
        return cls(data["layers"], data["training"])

    @property
    def depth(self) -> int:
        return len(self.layers)

    def __eq__(self, other) -> bool:
        return isinstance(other, Genome) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        return f"Genome({self.key}, depth={self.depth})"
