"""Search spaces: where genomes may go. Sampling, mutation and crossover never leave the bounds."""
from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass, replace
from typing import Any, Mapping, Optional, Protocol, Sequence

import numpy as np
from deap import tools

from menndl_py.config import shown
from menndl_py.errors import CandidateRefused, UserError
from menndl_py.genome.genome import Genome
from menndl_py.rng import driving_global_random

MORE, MAX_MOVES = 0.3, 4  # a mutation makes one change, and another with probability MORE, up to MAX_MOVES


@dataclass(frozen=True)
class Choice:
    """An ordered set of allowed values. Mutation usually steps to a neighbour, sometimes jumps anywhere."""

    values: tuple

    def sample(self, rng: random.Random) -> Any:
        return rng.choice(self.values)

    def mutate(self, value: Any, rng: random.Random) -> Any:
        if len(self.values) == 1:
            return value
        i = self.values.index(value) if value in self.values else rng.randrange(len(self.values))
        if rng.random() < 0.7:
            j = min(max(i + rng.choice((-1, 1)), 0), len(self.values) - 1)
            if j != i:
                return self.values[j]
        return rng.choice([v for v in self.values if v != value])

    @functools.cached_property
    def numeric(self) -> bool:
        return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in self.values)

    def encode(self, values: Sequence[Any]) -> list[float]:
        """Features of a list of this gene's values: numeric genes by their mean position in the ordered
        values (0 to 1, so geometric grids such as widths and learning rates come out evenly spaced),
        categorical genes by the fraction taking each value."""
        n = len(values)
        if self.numeric:
            top = max(len(self.values) - 1, 1)
            return [sum(self._position[v] for v in values) / (n * top)] if n else [0.0]
        return [sum(v == c for v in values) / max(n, 1) for c in self.values]

    @functools.cached_property
    def _position(self) -> dict:
        return {v: i for i, v in enumerate(self.values)}


class Network(Protocol):
    """How a genome's layer gene dicts become cost figures and a torch module."""

    def cost(self, layers: Sequence[Mapping[str, Any]], shape: tuple) -> tuple[int, int]:
        """(parameters, FLOPs per sample) for an input of `shape`; raises CandidateRefused with the reason."""

    def module(self, layers: Sequence[Mapping[str, Any]], shape: tuple):
        """The torch module (call `cost` first: it refuses what cannot be built)."""


class Inputs(Protocol):
    """A stage before the network that one once-per-genome gene chooses (ElemNet's element descriptors)."""

    gene: str  # among the training genes
    default: Any  # for a genome written without the gene

    def cost(self, value: Any, shape: tuple) -> tuple[int, int, tuple]:
        """(parameters, FLOPs per sample, output shape)."""

    def module(self, value: Any, shape: tuple, network):
        """The torch module: this stage, then `network` (the module of the layers)."""


@dataclass(frozen=True)
class SearchSpace:
    """Layers (or levels), each a dict of `layer_genes`; `training_genes` once; depth within `depth`;
    `network` turns the layer dicts into a module for inputs of `input_shape` (after the `inputs` stage, if any)."""

    layer_genes: Mapping[str, Choice]
    training_genes: Mapping[str, Choice]
    depth: tuple[int, int]
    network: Network
    input_shape: tuple
    max_params: int = 50_000_000
    inputs: Optional[Inputs] = None

    # -- making and changing genomes -------------------------------------------------------------
    def sample_layer(self, rng: random.Random) -> dict:
        return {name: gene.sample(rng) for name, gene in self.layer_genes.items()}

    def sample(self, rng: random.Random) -> Genome:
        depth = rng.randint(*self.depth)
        return Genome([self.sample_layer(rng) for _ in range(depth)],
                      {name: gene.sample(rng) for name, gene in self.training_genes.items()})

    def mutate(self, genome: Genome, rng: random.Random) -> Genome:
        """One change, and with probability MORE each, up to MAX_MOVES in all, another: half of them alter a
        training gene, half add, remove or alter a layer (the training genes weigh as much as the layers)."""
        layers, training = [dict(layer) for layer in genome.layers], dict(genome.training)
        moves = 1
        while moves < MAX_MOVES and rng.random() < MORE:
            moves += 1
        for move in range(moves + 2 * MAX_MOVES):  # past `moves` only while the changes have cancelled out
            if move >= moves and Genome(layers, training).key != genome.key:
                break
            if rng.random() < 0.5:
                name = rng.choice(list(self.training_genes))
                training[name] = self.training_genes[name].mutate(training[name], rng)
            else:
                self._move_layer(layers, rng)
        return Genome(layers, training)

    def _move_layer(self, layers: list[dict], rng: random.Random) -> None:
        """Add, remove or alter a layer of `layers`, in place."""
        moves = ["alter"]
        if len(layers) < self.depth[1]:
            moves.append("add")
        if len(layers) > self.depth[0]:
            moves.append("remove")
        move = rng.choice(moves)
        if move == "add":
            at = rng.randint(0, len(layers))
            template = layers[min(at, len(layers) - 1)] if layers else self.sample_layer(rng)
            layers.insert(at, dict(template) if rng.random() < 0.5 else self.sample_layer(rng))
        elif move == "remove":
            layers.pop(rng.randrange(len(layers)))
        elif layers:
            layer = rng.choice(layers)
            name = rng.choice(list(self.layer_genes))
            layer[name] = self.layer_genes[name].mutate(layer[name], rng)

    def crossover(self, a: Genome, b: Genome, rng: random.Random) -> tuple[Genome, Genome]:
        """DEAP's messy one-point crossover of the layer lists; training genes swapped uniformly."""
        la, lb = [dict(x) for x in a.layers], [dict(x) for x in b.layers]
        with driving_global_random(rng):
            la, lb = tools.cxMessyOnePoint(la, lb)
        ta, tb = dict(a.training), dict(b.training)
        for name in self.training_genes:
            if rng.random() < 0.5:
                ta[name], tb[name] = tb[name], ta[name]
        return Genome(self._fit_depth(la, rng), ta), Genome(self._fit_depth(lb, rng), tb)

    def _fit_depth(self, layers: list[dict], rng: random.Random) -> list[dict]:
        while len(layers) > self.depth[1]:
            layers.pop(rng.randrange(len(layers)))
        while len(layers) < self.depth[0]:
            layers.append(self.sample_layer(rng))
        return layers

    def outside(self, genome: Genome) -> Optional[str]:
        """What puts `genome` outside this space, in words; None if it lies inside."""
        if not self.depth[0] <= genome.depth <= self.depth[1]:
            return f"depth {genome.depth}, expected {self.depth[0]} to {self.depth[1]}"
        for genes, values in [(self.training_genes, genome.training)] + [(self.layer_genes, layer)
                                                                         for layer in genome.layers]:
            if set(values) != set(genes):
                return f"genes {sorted(values)}, expected {sorted(genes)}"
            for name, value in values.items():
                if value not in genes[name].values:
                    return f"{name}={value!r}, expected one of {list(genes[name].values)}"
        return None

    # -- cost, features and modules -------------------------------------------------------------
    def cost(self, genome: Genome) -> tuple[int, int]:
        """(parameters, FLOPs per sample) from the genes alone; raises CandidateRefused, also over `max_params`."""
        params, flops, shape = self._inputs_cost(genome)
        p, f = self.network.cost(genome.layers, shape)
        params, flops = params + p, flops + f
        if params > self.max_params:
            raise CandidateRefused(f"{params:,} parameters exceed the limit of {self.max_params:,}")
        return params, flops

    def build(self, genome: Genome):
        """The torch module for a genome, or CandidateRefused with the reason."""
        self.cost(genome)
        if self.inputs is None:
            return self.network.module(genome.layers, self.input_shape)
        value = self._inputs_value(genome)
        net = self.network.module(genome.layers, self.inputs.cost(value, self.input_shape)[2])
        return self.inputs.module(value, self.input_shape, net)

    def _inputs_cost(self, genome: Genome) -> tuple[int, int, tuple]:
        if self.inputs is None:
            return 0, 0, self.input_shape
        return self.inputs.cost(self._inputs_value(genome), self.input_shape)

    def _inputs_value(self, genome: Genome) -> Any:
        return genome.training.get(self.inputs.gene, self.inputs.default)

    def feature_names(self) -> list[str]:
        names = ["depth", "log10_params", "log10_flops"]
        for prefix, genes in (("layer", self.layer_genes), ("train", self.training_genes)):
            for name, gene in genes.items():
                names += [f"{prefix}.{name}"] if gene.numeric else [f"{prefix}.{name}={v}" for v in gene.values]
        return names

    def features(self, genome: Genome, cost: tuple[int, int] | None = None) -> np.ndarray:
        """A fixed-length vector for the surrogate: size, cost, mean layer genes, training genes."""
        params, flops = cost if cost is not None else self.cost(genome)
        row = [genome.depth, math.log10(max(params, 1)), math.log10(max(flops, 1))]
        for name, gene in self.layer_genes.items():
            row += gene.encode([layer[name] for layer in genome.layers])
        for name, gene in self.training_genes.items():
            row += gene.encode([genome.training[name]])
        return np.asarray(row, dtype=np.float64)

    # -- user overrides ------------------------------------------------------------------------------
    def restricted(self, overrides: Mapping[str, Any]) -> "SearchSpace":
        """Apply `search.space` from the config: `depth: [min, max]`, or `<gene>: [allowed values]`."""
        layer, training, depth = dict(self.layer_genes), dict(self.training_genes), self.depth
        for key, value in overrides.items():
            where = f"search.space.{key}"
            if key == "depth":  # within the task's range: a depth of 50,000,000 would fill the memory
                low, high = self.depth
                if (not isinstance(value, list) or len(value) != 2
                        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
                        or not low <= value[0] <= value[1] <= high):
                    raise UserError(f"{where}: must be [min, max] with {low} <= min <= max <= {high} (the task's "
                                    f"range), got {shown(value)}")
                depth = (value[0], value[1])
                continue
            genes = layer if key in layer else training if key in training else None
            if genes is None:
                raise UserError(f"{where}: unknown gene (expected depth or one of: "
                                f"{', '.join([*layer, *training])})")
            if not isinstance(value, list) or not value:
                raise UserError(f"{where}: must be a non-empty list of values, got {shown(value)}")
            if genes[key].numeric and not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                raise UserError(f"{where}: must be a list of numbers, got {shown(value)}")
            if genes[key].numeric:
                # New grid points are fine, but within the task's range and of its kind: a width of -5, a
                # dropout of 1.5 or a batch size of 16.5 would make every candidate fail at run time.
                lo, hi = min(genes[key].values), max(genes[key].values)
                whole = all(isinstance(v, int) for v in genes[key].values)
                if not all(lo <= v <= hi and (isinstance(v, int) or not whole) for v in value):
                    raise UserError(f"{where}: values must be {'integers' if whole else 'numbers'} from {lo} to "
                                    f"{hi}, got {shown(value)}")
            if not genes[key].numeric and not all(v in genes[key].values for v in value):
                raise UserError(f"{where}: values must be among {list(genes[key].values)}, got {shown(value)}")
            if len(set(value)) != len(value):  # a repeated value leaves mutation nothing to change to
                raise UserError(f"{where}: values must be distinct, got {shown(value)}")
            genes[key] = replace(genes[key], values=tuple(sorted(value) if genes[key].numeric else value))
        return replace(self, layer_genes=layer, training_genes=training, depth=depth)
