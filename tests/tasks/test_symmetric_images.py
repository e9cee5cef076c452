"""Training-time symmetries of the microstructure tasks keep the targets exact (checked with the FFT solver)."""
import itertools

import numpy as np
import torch

from menndl_py.physics import elasticity
from menndl_py.physics.microstructure import generate
from menndl_py.tasks.microstructure_data import symmetric_images

E, NU = (10.0, 500.0), 0.3


def images_of(sample: torch.Tensor) -> list[torch.Tensor]:
    """The 16 mirror/swap images of one sample (last three axes space)."""
    out = []
    for flips, swap in itertools.product(itertools.product((False, True), repeat=3), (False, True)):
        image = sample.flip([sample.dim() - 3 + a for a in range(3) if flips[a]]) if any(flips) else sample
        out.append(image.transpose(-1, -2) if swap else image)
    return out


def test_each_window_becomes_one_of_its_16_mirror_images_and_all_occur():
    x = torch.randn(400, 5, 5, 5)
    y = symmetric_images(x, torch.Generator().manual_seed(1), roll=False)
    which = [[torch.equal(out, image) for image in images_of(sample)].index(True) for sample, out in zip(x, y)]
    assert set(which) == set(range(16))
    assert torch.equal(symmetric_images(x, torch.Generator().manual_seed(1), roll=False), y)  # reproducible


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
    images = symmetric_images(batch, torch.Generator().manual_seed(2), roll=True)
    assert not all(torch.equal(i, batch[0]) for i in images)
    for image in images:
        got = elasticity.effective_stiffness_c11(image[0].numpy().copy(), E, NU, tol=1e-10)
        assert abs(got - c11) <= 1e-6 * c11
