"""A genome: a list of layer genes plus training genes; plain data, hashable, JSON-serialisable."""
from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping, Sequence

_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))  # one encoder: json.dumps builds one per call


class Genome:
    """Immutable by convention: operators return new genomes. Equality and hash follow `key`, which (with the
    canonical JSON it hashes) is computed on first use: operators make intermediate genomes that never need it."""

    __slots__ = ("layers", "training", "_key", "_canonical")

    def __init__(self, layers: Sequence[Mapping[str, Any]], training: Mapping[str, Any]):
        self.layers = tuple(map(dict, layers))
        self.training = dict(training)
        self._key = self._canonical = None

    @property
    def key(self) -> str:
        if self._key is None:
            self._key = hashlib.sha1(self.canonical().encode()).hexdigest()[:16]
        return self._key

    def to_json(self) -> dict:
        return {"layers": [dict(layer) for layer in self.layers], "training": dict(self.training)}

    def canonical(self) -> str:
        """Sorted-key compact JSON: what `key` hashes and what the stores record."""
        if self._canonical is None:
            self._canonical = _CANONICAL.encode({"layers": self.layers, "training": self.training})
        return self._canonical

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
