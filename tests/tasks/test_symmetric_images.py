"""Training-time symmetries of the microstructure tasks keep the targets exact (checked with the FFT solver)."""
import itertools

import numpy as np
import torch

from menndl_py.genome.networks.windownet import slabs
from menndl_py.physics import elasticity
from menndl_py.physics.microstructure import generate
from menndl_py.tasks.microstructure.data import symmetric_images

E, NU = (10.0, 500.0), 0.3


def images_of(sample: torch.Tensor) -> list[torch.Tensor]:
    """The 16 mirror/swap images of one sample (last three axes space)."""
    out = []
    for flips, swap in itertools.product(itertools.product((False, True), repeat=3), (False, True)):
        image = sample.flip([sample.dim() - 3 + a for a in range(3) if flips[a]]) if any(flips) else sample
        out.append(image.transpose(-1, -2) if swap else image)
    return out


def test_a_volume_and_its_strain_field_move_together():
    volume = generate((9, 9, 9), 0.4, (1.5, 1.0, 2.0), 5)
    strain = elasticity.solve(volume, E, NU, np.eye(6)[0], tol=1e-10).strain[0]
    volumes = torch.as_tensor(volume)[None, None].repeat(5, 1, 1, 1, 1)
    fields = torch.as_tensor(strain)[None].repeat(5, 1, 1, 1)
    moved, moved_fields = symmetric_images((volumes, fields), torch.Generator().manual_seed(3))
    again = symmetric_images((volumes, fields), torch.Generator().manual_seed(3))
    assert torch.equal(again[0], moved) and torch.equal(again[1], moved_fields)  # reproducible
    assert len({bytes(v.numpy()) for v in moved}) == 5
    for image, field in zip(moved, moved_fields):
        solved = elasticity.solve(image[0].numpy().copy(), E, NU, np.eye(6)[0], tol=1e-10).strain[0]
        assert np.allclose(solved, field.numpy(), rtol=0, atol=1e-6)


def test_mirrors_and_the_x2_x3_swap_mirror_the_local_strain_field():
    volume = generate((9, 9, 9), 0.4, (1.5, 1.0, 2.0), 3)
    strain = elasticity.solve(volume, E, NU, np.eye(6)[0], tol=1e-10).strain[0]
    for image in images_of(torch.as_tensor(volume))[1:]:
        moved = elasticity.solve(image.numpy().copy(), E, NU, np.eye(6)[0], tol=1e-10).strain[0]
        expected = images_of(torch.as_tensor(strain))[[torch.equal(image, i) for i in
                                                       images_of(torch.as_tensor(volume))].index(True)]
        assert np.allclose(moved, expected.numpy(), rtol=0, atol=1e-6)


def test_symmetric_volumes_with_translations_keep_c11():
    volume = generate((9, 9, 9), 0.5, (2.0, 1.0, 1.0), 4)
    c11 = elasticity.effective_stiffness_c11(volume, E, NU, tol=1e-10)
    batch = torch.as_tensor(volume)[None, None].repeat(6, 1, 1, 1, 1)
    (images,) = symmetric_images((batch,), torch.Generator().manual_seed(2))
    assert not all(torch.equal(i, batch[0]) for i in images)
    for image in images:
        got = elasticity.effective_stiffness_c11(image[0].numpy().copy(), E, NU, tol=1e-10)
        assert abs(got - c11) <= 1e-6 * c11


def test_slabs_and_their_planes_become_those_of_a_symmetric_image_of_the_volume():
    volume = generate((7, 7, 7), 0.4, (1.5, 1.0, 2.0), 6)
    field = elasticity.solve(volume, E, NU, np.eye(6)[0], tol=1e-10).strain[0]
    v, e = torch.as_tensor(volume).float(), torch.as_tensor(field).float()
    known = set()  # (slab, plane) of every plane of every mirror/swap image of the volume, rolled in x2 and x3
    for image, image_field in zip(images_of(v), images_of(e)):
        for shift in itertools.product(range(7), repeat=2):
            rolled, rolled_field = torch.roll(image, shift, (1, 2)), torch.roll(image_field, shift, (1, 2))
            known |= {(a.numpy().tobytes(), b.numpy().tobytes())
                      for a, b in zip(slabs(rolled[None], 5), rolled_field.reshape(7, 1, 7, 7))}
    x, y = slabs(v[None], 5).repeat(3, 1, 1, 1, 1), e.reshape(7, 1, 7, 7).repeat(3, 1, 1, 1)
    moved = symmetric_images((x, y), torch.Generator().manual_seed(4), roll_x1=False)
    pairs = {(a.numpy().tobytes(), b.numpy().tobytes()) for a, b in zip(*moved)}
    assert pairs <= known and len(pairs) == 21
