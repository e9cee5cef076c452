"""The crystal_graph task: the data file is the same on 1 and 2 ranks; padded graphs and shards; the loss and
metrics in meV/atom; CGCNN's defaults lie in the space and the networks batch graphs of any size; the baselines;
a short search in one process."""
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.io.cif import write_cif
from ase.io.extxyz import write_extxyz
from ase.io.vasp import write_vasp
from launchers import make_data_on_two_ranks, menndl

from menndl_py.errors import UserError
from menndl_py.genome.networks.graphnet import neighbours_within
from menndl_py.physics.alloys import MAX_ATOMS, AlloySettings
from menndl_py.tasks import make_task
from menndl_py.tasks.crystal_graph import data as graph_data
from menndl_py.tasks.crystal_graph.task import CGCNN, pair_features

TINY = {"train_size": 40, "val_size": 8, "test_size": 8, "baseline_seconds": 2, "alloys": {"relax_steps": 2}}
TINY_CONFIG = Path(__file__).parents[2] / "configs" / "crystal_graph-tiny.yaml"


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    made = make_task("crystal_graph", TINY, tmp_path_factory.mktemp("graph-data"))
    made.make_data()
    made.check_data()
    return made


def contents(path):
    with h5py.File(path, "r") as f:
        return {f"{s}/{k}": f[s][k][()] for s in f for k in f[s]}, dict(f.attrs)


def test_the_file_is_the_same_on_one_and_two_ranks(tmp_path):
    settings, counts = AlloySettings(relax_steps=1), {"train": graph_data.BLOCK + 3, "val": 2, "test": 0}
    one = tmp_path / "one.h5"
    assert graph_data.make_dataset(one, settings, counts, 5) == counts
    two = tmp_path / "two" / "g.h5"
    two.parent.mkdir()
    assert make_data_on_two_ranks("menndl_py.tasks.crystal_graph.data", settings, two, counts, 5,
                                  timeout=180) == [[counts, counts]]
    (a, attrs), (b, other_attrs) = contents(one), contents(two)
    assert a.keys() == b.keys() and attrs == other_attrs
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert graph_data.file_name(settings, counts, 5) != graph_data.file_name(settings, counts, 6)


def test_padded_graphs_hold_every_edge_and_shards_split_the_rows(task):
    x, y = task.load("train")
    assert x.shape == (40, MAX_ATOMS, 1 + 2 * graph_data.MAX_NEIGHBOURS) and x.dtype == np.float32
    assert y.shape == (40,) and y.dtype == np.float32 and np.all(np.abs(y) < 1.0)  # eV/atom
    with h5py.File(task.data_path, "r") as f:
        graphs = graph_data.read_graphs(f["train"], np.arange(40))
        energies = f["train/formation_energy"][()]
    np.testing.assert_allclose(y, energies / 1000, rtol=1e-6)
    k = graph_data.MAX_NEIGHBOURS
    for row, (numbers, centre, neighbour, distance) in zip(x, graphs):
        assert np.all(row[:len(numbers), 0] == numbers) and np.all(row[len(numbers):, 0] == 0)
        assert np.all(row[len(numbers):, 1:1 + k] == -1) and np.all(row[len(numbers):, 1 + k:] == 0)
        assert (row[:, 1:1 + k] >= 0).sum() == len(centre)
        np.testing.assert_allclose(np.sort(row[:, 1 + k:][row[:, 1:1 + k] >= 0]), np.sort(distance), rtol=1e-6)
    parts = [task.load("train", (r, 3)) for r in range(3)]
    assert sum(len(p[0]) for p in parts) == 40
    np.testing.assert_array_equal(parts[2][0], x[2::3])
    np.testing.assert_array_equal(parts[1][1], y[1::3])


def test_metrics_are_in_mev_per_atom_and_the_loss_in_ev(task):
    prediction, target = torch.tensor([[0.010], [0.030], [-0.02]]), torch.tensor([0.0, 0.0, 0.0])
    sums = task.metric_sums(prediction[:2], target[:2]) + task.metric_sums(prediction[2:], target[2:])
    got = task.metrics(sums)
    assert got["mae"] == pytest.approx(20.0) and got["rmse"] == pytest.approx(1000 * (0.0014 / 3) ** 0.5)
    assert task.loss(prediction, target).item() == pytest.approx(0.02)


def test_cgcnn_s_defaults_lie_in_the_space_and_networks_take_graphs_of_any_size(task):
    space = task.space()
    genome = task.baseline_genomes()[CGCNN]
    assert space.outside(genome) is None
    params, flops = space.cost(genome)
    model = space.build(genome)
    model.eval()
    assert params == sum(p.numel() for p in model.parameters())
    assert flops > 3 * neighbours_within(5.0) * 2 * 2 * (2 * 64 + 32) * 64
    x, _ = task.load("val")
    whole = model(torch.from_numpy(x)).detach()
    assert whole.shape == (8, 1) and torch.isfinite(whole).all()
    # one at a time, each padded to its own atoms only: the same outputs (padding is no atom)
    atoms = (x[:, :, 0] > 0).sum(1)
    alone = torch.cat([model(torch.from_numpy(x[i:i + 1, :atoms[i]])).detach() for i in range(8)])
    torch.testing.assert_close(alone, whole, rtol=1e-4, atol=1e-5)
    # a relabelled structure: the atoms in another order give the same output
    i, n = 0, atoms[0]
    order = np.random.default_rng(0).permutation(n)
    moved = x[i:i + 1].copy()
    moved[0, :n] = x[i, order]
    k = graph_data.MAX_NEIGHBOURS
    neighbours = moved[0, :n, 1:1 + k]
    neighbours[neighbours >= 0] = np.argsort(order)[neighbours[neighbours >= 0].astype(int)]
    torch.testing.assert_close(model(torch.from_numpy(moved)).detach(), whole[:1], rtol=1e-4, atol=1e-5)


def test_a_genome_that_reads_out_nothing_is_refused(task):
    genome = task.baseline_genomes()[CGCNN]
    layers = [dict(layer, readout="none") for layer in genome.layers]
    with pytest.raises(Exception, match="no layer reads out"):
        task.space().cost(type(genome)(layers, genome.training))


def test_the_pair_model_and_the_composition_network(task):
    x, y = task.load("train")
    features = pair_features(x)
    np.testing.assert_allclose(features[:, :7].sum(1), 1.0)
    assert np.all(features[:, 7:].sum(1) > 4)  # about 6 first-shell bonds per atom, fewer beside a vacancy
    rows = task.other_baselines(task.load("train"), {"val": task.load("val"), "test": task.load("test")})
    assert len(rows) == 2
    for row in rows.values():
        assert {"val_mae", "test_mae", "val_rmse", "test_rmse"} <= set(row)
        assert np.isfinite(row["test_mae"])


def test_bad_options_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="task.options.alloys: .*unexpected keyword"):
        make_task("crystal_graph", {"alloys": {"vacancies": 2}}, tmp_path)
    broken = make_task("crystal_graph", TINY, tmp_path)
    broken.data_path.parent.mkdir(parents=True, exist_ok=True)
    broken.data_path.write_text("not hdf5")
    with pytest.raises(UserError, match="unreadable or incomplete crystal-graph data set"):
        broken.check_data()


def test_a_short_search_in_one_process_then_predict_on_structure_files(tmp_path):
    shutil.copy(TINY_CONFIG, tmp_path / "c.yaml")
    done = menndl("run", "c.yaml", "--no-progress", cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = (tmp_path / "runs" / "crystal_graph-tiny" / "results.csv").read_text().splitlines()
    assert len(lines) == 4 and "m:val_mae" in lines[0]
    assert sum(",ok," in line for line in lines[1:]) >= 2

    folder = tmp_path / "structures"
    folder.mkdir()
    ordered = bulk("Cu", "fcc", a=3.75, cubic=True)
    ordered.symbols[0] = "Au"
    # each format's own writer: ase.io.write asks ASE's MPI world, which would start MPI in this process
    write_cif(folder / "Cu3Au.cif", [ordered])
    write_vasp(folder / "POSCAR", bulk("Ni", "fcc", a=3.52, cubic=True))
    write_extxyz(folder / "frames.extxyz", [ordered.repeat((2, 1, 1)), bulk("Fe", "bcc", a=2.87, cubic=True)])
    (folder / "broken.cif").write_text("data_x\n_cell_length_a nonsense\n")
    isolated = Atoms("Cu2", positions=[[0, 0, 0], [12, 0, 0]], cell=[24, 24, 24], pbc=True)  # 12 Å apart
    write_extxyz(tmp_path / "isolated.extxyz", [isolated])
    found = menndl("predict", "runs/crystal_graph-tiny", "structures", "isolated.extxyz", "--output", "e.csv",
                   "--no-progress", cwd=tmp_path)
    assert found.returncode == 1, found.stderr[-3000:]
    table = pd.read_csv(tmp_path / "e.csv", keep_default_na=False)
    by_source = {Path(s).name: row for s, row in zip(table["source"], table.to_dict("records"))}
    assert len(table) == 6
    for name in ("Cu3Au.cif", "POSCAR", "frames.extxyz@0"):
        row = by_source[name]
        assert row["menndl_skipped"] == "" and row["predicted_formation_energy_meV_per_atom"] != ""
    assert "cannot read as a structure" in by_source["broken.cif"]["menndl_skipped"]
    assert "Fe outside the trained set" in by_source["frames.extxyz@1"]["menndl_skipped"]
    assert "isolated atom" in by_source["isolated.extxyz"]["menndl_skipped"]
    assert found.stderr.count("menndl: skipped") == 3
    # a supercell of a structure is the same structure
    assert float(by_source["frames.extxyz@0"]["predicted_formation_energy_meV_per_atom"]) == pytest.approx(
        float(by_source["Cu3Au.cif"]["predicted_formation_energy_meV_per_atom"]), abs=1e-3)
