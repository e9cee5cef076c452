"""EMT alloy labels and crystal graphs: a pure element's formation energy is 0; an ordered structure's label is
invariant to translation, to the order of its atoms and to a supercell of itself; graph features are periodic."""
import os
import subprocess
import sys

import numpy as np
import pytest
from ase.build import bulk

from menndl_py.physics import alloys
from menndl_py.physics.alloys import ELEMENTS, MAX_ATOMS, AlloySettings, crystal_graph, formation_energy, random_alloy


def l1_2(a: float = 3.75):
    """Cu3Au's ordered L1_2 structure (Au on the cube corners), at a lattice constant a."""
    atoms = bulk("Cu", "fcc", a=a, cubic=True)
    atoms.symbols[0] = "Au"
    return atoms


@pytest.mark.parametrize("symbol", ELEMENTS)
def test_a_pure_element_has_zero_formation_energy_at_any_supercell(symbol):
    atoms = bulk(symbol, "fcc", a=alloys.lattice_constant(symbol), cubic=True).repeat((2, 1, 1))
    assert formation_energy(atoms, relax_steps=3) == pytest.approx(0.0, abs=1e-9)
    strained = atoms.copy()
    strained.set_cell(strained.cell * 1.02, scale_atoms=True)
    assert formation_energy(strained) > 1e-3  # its lattice constant is the minimum


def test_an_ordered_structure_s_label_is_invariant_to_translation_permutation_and_supercells():
    atoms = l1_2()
    label = formation_energy(atoms, relax_steps=5)
    assert label < 0  # Cu3Au orders in EMT too
    moved = atoms.copy()
    moved.translate([0.37, -1.1, 2.9])
    moved.wrap()
    shuffled = atoms[np.random.default_rng(0).permutation(len(atoms))]
    supercell = atoms.repeat((2, 1, 3))
    for other in (moved, shuffled, supercell):
        assert formation_energy(other, relax_steps=5) == pytest.approx(label, abs=1e-9)


def test_graph_features_are_periodic():
    atoms = random_alloy(np.random.default_rng(3), AlloySettings(vacancy=0.0))
    numbers, centre, neighbour, distance = crystal_graph(atoms, 5.0)
    moved = atoms.copy()
    moved.translate([1.3, 0.4, -2.2])
    moved.wrap()
    supercell = atoms.repeat((2, 1, 1))
    for other, copies in ((moved, 1), (supercell, 2)):
        n2, c2, nb2, d2 = crystal_graph(other, 5.0)
        np.testing.assert_array_equal(n2, np.tile(numbers, copies))
        for i in range(len(atoms)):  # each atom sees the same neighbours at the same distances
            for copy in range(copies):
                j = i + copy * len(atoms)
                np.testing.assert_allclose(d2[c2 == j], distance[centre == i], atol=1e-9)
                np.testing.assert_array_equal(n2[nb2[c2 == j]], numbers[neighbour[centre == i]])


def test_random_alloys_vary_and_stay_within_their_settings():
    rng = np.random.default_rng(0)
    made = [random_alloy(rng) for _ in range(40)]
    sizes = {len(a) for a in made}
    kinds = {len(set(a.numbers)) for a in made}
    assert max(sizes) <= MAX_ATOMS and len(sizes) > 5 and kinds == {1, 2, 3, 4}
    assert any(len(a) % 4 for a in made)  # vacancies
    for a in made:
        assert set(a.get_chemical_symbols()) <= set(ELEMENTS)
        lengths = a.cell.cellpar()[3:]
        assert np.all(np.abs(lengths - 90) < 3)  # small strains


def test_an_element_outside_emt_is_refused():
    with pytest.raises(ValueError, match="Fe"):
        formation_energy(bulk("Fe", "bcc", a=2.87))


def test_relaxing_does_not_start_mpi_where_mpi4py_is_imported_without_a_launcher():
    """ASE's default communicator would initialise MPI (a singleton) in such a process, e.g. a test session where
    another library imported mpi4py; that singleton once took the whole test session down."""
    script = ("import sys, mpi4py\nfrom ase.build import bulk\nfrom menndl_py.physics.alloys import energy\n"
              "atoms = bulk('Cu', 'fcc', a=3.6, cubic=True)\natoms.positions[0] += 0.1\n"
              "energy(atoms, relax_steps=3)\nprint('mpi4py.MPI' in sys.modules)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_", "PMI_"))}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"
