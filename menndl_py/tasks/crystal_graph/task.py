"""Crystal graphs (CGCNN's problem, Xie & Grossman 2018): the formation energy of an alloy structure from its graph
of atoms and neighbours, by message-passing networks whose convolutions the search designs
(`genome/networks/graphnet.py`).

Data: `tasks/crystal_graph/data.py` (random fcc alloys of Al, Cu, Ag, Au, Ni, Pd, Pt with short-range order,
vacancies and strains, labelled by ASE's EMT, relaxed a few steps). The networks read padded graphs and give eV/atom;
the loss is the mean absolute error in eV/atom, and the fitness the validation MAE in meV/atom. Baselines: CGCNN's
published defaults in this space; a composition-only network (ElemNet's 86 element fractions, the hand-made MLP of
the elemnet task) trained `baseline_seconds` on the same rows; a linear model on the element fractions and the
nearest-neighbour pair counts per atom (a cluster expansion to pairs, the first shell).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import combinations_with_replacement
from pathlib import Path

import h5py
import numpy as np
import torch

from menndl_py.config import setting
from menndl_py.engine.transport.share import Solo
from menndl_py.errors import UserError
from menndl_py.genome import Genome, SearchSpace
from menndl_py.genome.networks.graphnet import GraphNet, graphnet_genes, graphnet_training
from menndl_py.physics.alloys import ELEMENTS, MAX_ATOMS, NUMBERS, AlloySettings
from menndl_py.tasks.base import Task, check_counts, error_sums, settings_option
from menndl_py.tasks.crystal_graph import data as graph_data

FIRST_SHELL = 1.2  # a neighbour is in the first shell when closer than this times the structure's shortest bond
PAIRS = tuple(combinations_with_replacement(range(len(ELEMENTS)), 2))
CGCNN = "CGCNN's defaults (Xie & Grossman 2018)"
MAKE_AGAIN = "make it again with 'menndl data make crystal_graph --force'"


@dataclass(frozen=True)
class CrystalGraphOptions:
    train_size: int = setting(6_000, min=1, max=10_000_000)
    val_size: int = setting(1_000, min=1, max=1_000_000)
    test_size: int = setting(1_000, min=1, max=1_000_000)
    seed: int = setting(0, min=0, max=2**63 - 1)
    alloys: dict = setting(factory=dict)  # AlloySettings fields: max_elements, ordered, vacancy, relax_steps, ...
    baseline_seconds: float = setting(120.0, min=1.0, max=86_400.0)  # training of the composition-only network


class CrystalGraphTask(Task):
    name = "crystal_graph"
    summary = "formation energy of fcc alloys (EMT) from crystal graphs, fitness: validation MAE (meV/atom)"
    metric = "mae"
    metric_names = ("mae", "rmse")
    unit = "meV/atom"
    higher_is_better = False
    parallel_data = True
    Options = CrystalGraphOptions
    latency_per = (1.0, "structure")
    predicts = "structures"
    not_ensembled = "each network reads the structures with its own neighbour cutoff"

    def __init__(self, options=None, data_dir="data"):
        super().__init__(options, data_dir)
        self.settings = settings_option("alloys", self.options.alloys, AlloySettings)

    # -- data ----------------------------------------------------------------------------------------
    @property
    def counts(self) -> dict[str, int]:
        o = self.options
        return {"train": o.train_size, "val": o.val_size, "test": o.test_size}

    @property
    def data_path(self) -> Path:
        """One file per recipe (alloy settings, sizes, seed, cutoff, ASE's version)."""
        return self.data_dir / graph_data.file_name(self.settings, self.counts, self.options.seed, self.name)

    def make_data(self, share: Solo = Solo()) -> str:
        made = graph_data.make_dataset(self.data_path, self.settings, self.counts, self.options.seed, share)
        return f"{self.data_path}: {json.dumps(made)} structures"

    def check_data(self) -> None:
        try:
            with h5py.File(self.data_path, "r") as f:
                for split, n in self.counts.items():
                    group = f[split]
                    if len(group["formation_energy"]) != n or len(group["atom_offsets"]) != n + 1:
                        raise UserError(f"{self.data_path}: {split} has {len(group['formation_energy'])} "
                                        f"structures, expected {n}; {MAKE_AGAIN}")
        except (OSError, KeyError) as exc:
            raise UserError(f"{self.data_path}: unreadable or incomplete crystal-graph data set ({exc}); "
                            f"{MAKE_AGAIN}") from None

    def check_shards(self, ranks: int) -> None:
        check_counts(self.data_path, self.counts, ranks, "structures")

    def load(self, split: str, shard: tuple[int, int] = (0, 1)) -> tuple[np.ndarray, np.ndarray]:
        """Padded graphs (N, MAX_ATOMS, 1 + 2 MAX_NEIGHBOURS) float32 and formation energies (N,) in eV/atom,
        float32, of structures rank::size of a split."""
        rank, size = shard
        try:
            with h5py.File(self.data_path, "r") as f:
                group = f[split]
                rows = np.arange(len(group["formation_energy"]))[rank::size]
                graphs = graph_data.read_graphs(group, rows)
                energy = group["formation_energy"][()][rows]
        except (OSError, KeyError) as exc:
            raise UserError(f"{self.data_path}: cannot read split {split!r} ({exc}); {MAKE_AGAIN}") from None
        return graph_data.padded(graphs, MAX_ATOMS), (energy / 1000.0).astype(np.float32)

    # -- model ---------------------------------------------------------------------------------------
    def space(self) -> SearchSpace:
        return SearchSpace(layer_genes=graphnet_genes(), training_genes=graphnet_training(), depth=(1, 5),
                           network=GraphNet(), input_shape=(MAX_ATOMS, 1 + 2 * graph_data.MAX_NEIGHBOURS),
                           max_params=2_000_000)

    def loss(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.l1_loss(prediction.squeeze(-1), target)

    def metric_sums(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return error_sums(prediction, target)

    def metrics(self, sums: torch.Tensor) -> dict[str, float]:
        """MAE and RMSE in meV/atom (the network's outputs are eV/atom)."""
        n = max(float(sums[2]), 1.0)
        return {"mae": 1000.0 * float(sums[0]) / n, "rmse": 1000.0 * (float(sums[1]) / n) ** 0.5}

    def latency_batch(self, genome: Genome) -> torch.Tensor:
        """Validation structures: a network's time depends on its graphs, so random values will not do."""
        return torch.from_numpy(self.load("val")[0][:256])

    # -- baselines -----------------------------------------------------------------------------------
    def baseline_genomes(self) -> dict[str, Genome]:
        """CGCNN's published defaults (cgcnn/main.py) as near as the space allows: 3 convolutions of 64 atom
        features with batch normalisation, mean pooling of the last, one hidden layer of 128 with softplus; SGD at
        0.01 (momentum 0.9), batch 256, no weight decay. Its 8 Å radius and 0.2 Å Gaussian spacing become this
        space's largest cutoff (5 Å) and 32 Gaussians (0.16 Å apart)."""
        conv = {"features": 64, "cutoff": 5.0, "gaussians": 32, "batch_norm": True, "activation": "softplus"}
        layers = [dict(conv, readout="none", dense=128), dict(conv, readout="none", dense=0),
                  dict(conv, readout="mean", dense=0)]
        training = {"learning_rate": 1e-2, "batch_size": 256, "optimizer": "sgd", "weight_decay": 0.0}
        return {CGCNN: Genome(layers, training)}

    def other_baselines(self, train: tuple, evals: dict[str, tuple]) -> dict[str, dict[str, float]]:
        return {"composition-only network (ElemNet's element fractions, hand-made MLP)":
                self._composition_network(train, evals),
                "linear model on nearest-neighbour pair counts (first-order cluster expansion)":
                self._pair_model(train, evals)}

    def _composition_network(self, train: tuple, evals: dict[str, tuple]) -> dict[str, float]:
        """ElemNet's encoding of each structure's composition, the elemnet task's hand-made MLP trained on it for
        `baseline_seconds` in this process: what composition alone can tell."""
        from menndl_py.tasks.elemnet.task import HAND_MLP, ElemNetTask
        from menndl_py.train.group import LocalGroup
        from menndl_py.train.trainer import Budget, Trainer, metric_sums

        elemnet = ElemNetTask()
        data = {split: (torch.from_numpy(element_fractions(x)), torch.from_numpy(y))
                for split, (x, y) in {"train": train, "val": evals["val"]}.items()}
        seconds = self.options.baseline_seconds
        trainer = Trainer(self, elemnet.space(), LocalGroup(), data, Budget(1_000_000, seconds, 2 * seconds + 600),
                          device=torch.device("cpu"))
        outcome = trainer.evaluate(elemnet.baseline_genomes()[HAND_MLP])
        row = {"status": str(outcome.status), "epochs": outcome.epochs, "train_seconds": outcome.train_seconds,
               "budget": f"{seconds:g} s"}
        if outcome.model is None:
            return {**row, "message": outcome.message}
        for split, (x, y) in evals.items():
            sums = metric_sums(outcome.model, self, torch.from_numpy(element_fractions(x)), torch.from_numpy(y),
                               4096)
            row.update({f"{split}_{k}": v for k, v in self.metrics(sums).items()})
        return row

    def _pair_model(self, train: tuple, evals: dict[str, tuple]) -> dict[str, float]:
        """Least squares on the element fractions and the first-shell pair counts per atom."""
        from sklearn.linear_model import LinearRegression

        model = LinearRegression().fit(pair_features(train[0]), train[1])
        row = {"features": len(ELEMENTS) + len(PAIRS)}
        for split, (x, y) in evals.items():
            prediction = torch.from_numpy(model.predict(pair_features(x)).astype(np.float32))
            sums = error_sums(prediction, torch.from_numpy(y))
            row.update({f"{split}_{k}": v for k, v in self.metrics(sums).items()})
        return row

    # -- batch inference -----------------------------------------------------------------------------
    def structures(self, inputs: list[str]) -> list[tuple[str, object]]:
        return read_structures(inputs)

    def structure_inputs(self, structures: list, genome: Genome) -> tuple[np.ndarray, list[str]]:
        """Padded graphs (to the batch's most atoms) of structures made of the trained elements, every atom with a
        neighbour within the network's shortest cutoff, none with more than MAX_NEIGHBOURS within MAX_CUTOFF."""
        cutoff = min(layer["cutoff"] for layer in genome.layers)
        graphs, reasons = [], []
        for atoms in structures:
            outside = sorted(set(atoms.get_chemical_symbols()) - set(ELEMENTS))
            try:
                if outside:
                    raise ValueError(f"element(s) {', '.join(outside)} outside the trained set "
                                     f"({', '.join(ELEMENTS)})")
                graph = graph_data.graph_of(atoms)
                near = np.bincount(graph[1][graph[3] <= cutoff], minlength=len(atoms))
                if near.min() == 0:
                    raise ValueError(f"atom {int(np.argmin(near))} has no neighbour within {cutoff:g} Å (the "
                                     f"network's cutoff): an isolated atom")
                graphs.append(graph)
                reasons.append("")
            except ValueError as exc:
                graphs.append(EMPTY_GRAPH)
                reasons.append(str(exc))
        return graph_data.padded(graphs, max(len(g[0]) for g in graphs)), reasons

    def output_columns(self, output: torch.Tensor) -> dict[str, np.ndarray]:
        return {"predicted_formation_energy_meV_per_atom": 1000.0 * output.detach().double().squeeze(-1).numpy()}

    # -- use outside menndl_py -----------------------------------------------------------------------
    def network_io(self, genome: Genome) -> dict:
        k = graph_data.MAX_NEIGHBOURS
        return {"input": {"shape": [None, None, 1 + 2 * k],
                          "normalisation": f"per structure, per atom (rows; rows of zeros after the last atom): its "
                                           f"atomic number, the indices (rows) of its at most {k} neighbours within "
                                           f"{graph_data.MAX_CUTOFF:g} Å, periodic images included (-1 after the "
                                           f"last), then their distances in Å (0 after the last), float32; elements "
                                           f"{', '.join(ELEMENTS)}"},
                "output": {"values": "formation energy against the pure fcc elements, eV/atom"}}


EMPTY_GRAPH = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))


def read_structures(inputs: list[str]) -> list[tuple[str, object]]:
    """(source, ase.Atoms) of every structure in `inputs` (files ASE reads: CIF, POSCAR, extxyz, ...; folders of
    them, hidden files left out), in order; (source, reason) for a file that cannot be read. A file of several
    structures gives one per frame, its source `file@frame`."""
    import ase.io

    found = []
    for name in inputs:
        path = Path(name)
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")) \
            if path.is_dir() else [path]
        if path.is_dir() and not files:
            found.append((name, "no files in this folder"))
        for file in files:
            if not file.exists():
                found.append((str(file), "no such file or folder"))
                continue
            try:
                frames = ase.io.read(file, index=":", parallel=False)  # no hidden MPI broadcast (ASE's default)
            except Exception as exc:  # noqa: BLE001 - any reader error is the file's fault: say it in one line
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                found.append((str(file), f"cannot read as a structure ({first[:200]})"))
                continue
            if not frames:
                found.append((str(file), "cannot read as a structure (none found in the file)"))
            found += [(str(file) if len(frames) == 1 else f"{file}@{i}", atoms) for i, atoms in enumerate(frames)]
    return found


def element_fractions(x: np.ndarray) -> np.ndarray:
    """ElemNet's 86 element fractions of padded graphs (N, atoms, columns)."""
    from menndl_py.tasks.elemnet.data import ELEMENTS as ELEMNET_ELEMENTS

    numbers = x[:, :, 0].round().astype(np.int64)
    out = np.zeros((len(x), len(ELEMNET_ELEMENTS)), np.float32)
    for symbol, z in zip(ELEMENTS, NUMBERS):
        out[:, ELEMNET_ELEMENTS.index(symbol)] = (numbers == z).sum(1)
    return out / np.maximum(out.sum(1, keepdims=True), 1)


def pair_features(x: np.ndarray) -> np.ndarray:
    """Per structure: the fractions of ELEMENTS, then per unordered pair of them the first-shell bonds per atom."""
    k = (x.shape[2] - 1) // 2
    kind = {z: i for i, z in enumerate(NUMBERS)}
    out = np.zeros((len(x), len(ELEMENTS) + len(PAIRS)))
    column = {pair: len(ELEMENTS) + c for c, pair in enumerate(PAIRS)}
    for s, graph in enumerate(x):
        kinds = np.array([kind[z] for z in graph[:, 0].round().astype(int) if z > 0])
        neighbour, distance = graph[:len(kinds), 1:1 + k].round().astype(int), graph[:len(kinds), 1 + k:]
        bonded = neighbour >= 0
        near = bonded & (distance < FIRST_SHELL * distance[bonded].min())
        a, b = np.broadcast_to(kinds[:, None], near.shape)[near], kinds[neighbour[near]]
        np.add.at(out[s], [column[(min(p, q), max(p, q))] for p, q in zip(a, b)], 0.5 / len(kinds))
        np.add.at(out[s], kinds, 1.0 / len(kinds))
    return out
