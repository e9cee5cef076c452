import numpy as np
import pytest
import torch
from orix.quaternion import Rotation, symmetry

from menndl_py.physics import orientation
from menndl_py.physics.ebsd import random_quaternions
from menndl_py.physics.orientation import cubic_symmetry, disorientation, disorientation_degrees, summary


def rng(seed=0):
    return np.random.default_rng(seed)


def turned(q: np.ndarray, degrees, seed=1) -> np.ndarray:
    """q rotated by `degrees` about random axes (on the sample side)."""
    axes = rng(seed).standard_normal((len(q), 3))
    return (Rotation.from_axes_angles(axes, degrees, degrees=True) * Rotation(q)).data


def angle(output, target, dtype=torch.float64) -> np.ndarray:
    return np.degrees(disorientation(torch.tensor(output, dtype=dtype), torch.tensor(target, dtype=dtype)).numpy())


def test_the_symmetry_is_orix_cubic_432():
    s = cubic_symmetry()
    assert s.shape == (24, 4)
    np.testing.assert_allclose(np.linalg.norm(s, axis=1), 1)
    assert symmetry.O.size == 24 and not np.any(symmetry.O.improper)


def test_the_loss_is_zero_for_every_symmetry_equivalent_of_the_truth():
    truth = random_quaternions(50, rng())
    for k in range(24):
        for sign in (1, -1):
            equivalent = sign * (Rotation(cubic_symmetry()[k]) * Rotation(truth)).data
            assert np.all(angle(equivalent, truth) < 1e-4)
            assert np.all(angle(3.7 * equivalent, truth, torch.float32) < 1e-3)  # outputs are normalised


def test_the_loss_grows_with_the_disorientation():
    truth = random_quaternions(20, rng())
    steps = [0.0, 0.1, 0.5, 1.0, 5.0, 20.0, 45.0]
    target = torch.tensor(truth)
    losses = [orientation.disorientation_loss(torch.tensor(turned(truth, d)), target).item() for d in steps]
    assert np.all(np.diff(losses) > 0)
    np.testing.assert_allclose(np.degrees(losses[1:4]), steps[1:4], atol=2e-5)  # the smoothing: <= 2ε rad


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_losses_angle_agrees_with_orix_to_1e_4_degrees(dtype):
    truth = random_quaternions(2000, rng())
    far = random_quaternions(2000, rng(1))
    near = turned(truth, rng(2).uniform(0, 2, 2000))
    for predicted in (far, near, 5 * near):
        exact = disorientation_degrees(predicted, truth)
        assert np.abs(angle(predicted, truth, dtype) - exact).max() < 1e-4
    assert disorientation_degrees(far, truth).max() <= 62.8  # the largest cubic disorientation


def test_the_gradient_is_finite_everywhere_and_zero_at_a_perfect_prediction():
    truth = random_quaternions(8, rng())
    for output in (truth, -truth, turned(truth, 1e-6), turned(truth, 30.0)):
        x = torch.tensor(output, requires_grad=True)
        orientation.disorientation_loss(x, torch.tensor(truth)).backward()
        assert torch.isfinite(x.grad).all()
    x = torch.tensor(truth, requires_grad=True)
    orientation.disorientation_loss(x, torch.tensor(truth)).backward()
    assert x.grad.abs().max() < 1e-6


def test_a_few_steps_of_gradient_descent_reach_the_nearest_equivalent():
    truth = torch.tensor(random_quaternions(16, rng()))
    output = torch.tensor(turned(truth.numpy(), 20.0), requires_grad=True)
    optimizer = torch.optim.Adam([output], lr=0.01)
    for step in range(400):
        optimizer.param_groups[0]["lr"] = 0.01 * (1 - step / 400)
        optimizer.zero_grad()
        loss = orientation.disorientation_loss(output, truth)
        loss.backward()
        optimizer.step()
    assert disorientation_degrees(output.detach().numpy(), truth.numpy()).max() < 0.05


def test_summary_gives_mean_median_and_shares():
    out = summary([0.5, 1.5, 3.0, 10.0])
    assert out == {"mean_disorientation": 3.75, "median_disorientation": 2.25, "share_under_1deg": 0.25,
                   "share_under_2deg": 0.5, "share_under_5deg": 0.75}


def test_a_prediction_of_length_zero_or_not_finite_has_no_disorientation():
    truth = np.array([[1.0, 0, 0, 0]] * 3)
    angles = disorientation_degrees(np.array([[0.0, 0, 0, 0], [np.nan, 0, 0, 1], [2.0, 0, 0, 0]]), truth)
    assert np.isnan(angles[:2]).all() and angles[2] == pytest.approx(0, abs=1e-9)


# -- the cubic tensor target ------------------------------------------------------------------------------

def test_every_equivalent_of_an_orientation_has_one_cubic_tensor_and_others_have_other_tensors():
    truth = random_quaternions(50, rng())
    tensor = orientation.cubic_tensor(torch.tensor(truth))
    assert tensor.shape == (50, 15)
    for k in range(24):
        for sign in (1, -1):
            equivalent = sign * (Rotation(cubic_symmetry()[k]) * Rotation(truth)).data
            assert (orientation.cubic_tensor(torch.tensor(equivalent)) - tensor).abs().max() < 1e-12
    others = random_quaternions(50, rng(5))
    apart = (orientation.cubic_tensor(torch.tensor(others)) - tensor).norm(dim=1).numpy()
    assert np.all(apart > 0.01 * disorientation_degrees(others, truth))  # far in angle, far in tensor


def test_the_tensor_distance_is_the_frobenius_distance_of_the_full_tensors():
    a, b = random_quaternions(2, rng(3))

    def full(q):
        r = Rotation(q).to_matrix()[0]
        return np.einsum("ia,ib,ic,id->abcd", r, r, r, r)

    got = (orientation.cubic_tensor(torch.tensor(a[None])) - orientation.cubic_tensor(torch.tensor(b[None]))).norm()
    assert got.item() == pytest.approx(np.linalg.norm(full(a) - full(b)), rel=1e-12)


def test_the_tensor_loss_is_zero_at_the_truth_and_grows_with_the_disorientation():
    truth = random_quaternions(200, rng())
    losses = [orientation.tensor_loss(orientation.cubic_tensor(torch.tensor(turned(truth, d))),
                                      torch.tensor(truth)).item() for d in (0, 1, 2, 5, 10, 20)]
    assert losses[0] < 1e-24 and all(a < b for a, b in zip(losses, losses[1:]))


def test_an_exact_tensor_is_read_back_as_its_orientation_to_1e_5_degrees():
    truth = random_quaternions(500, rng(2))
    found, misfit = orientation.tensor_orientations(orientation.cubic_tensor(torch.tensor(truth)))
    assert found.shape == (500, 4) and disorientation_degrees(found, truth).max() < 1e-5
    assert misfit.max() < 1e-6
    torn = (orientation.cubic_tensor(torch.tensor(truth)) + orientation.cubic_tensor(torch.tensor(turned(truth, 30))))
    assert np.median(orientation.tensor_orientations(torn / 2)[1]) > 100 * misfit.max()  # between two: no orientation


def test_the_fundamental_zone_is_orix_s_for_every_equivalent_and_keeps_nan():
    from orix.quaternion import Orientation

    q = random_quaternions(20_000, np.random.default_rng(4))
    expected = Orientation(q, symmetry=symmetry.O).reduce().data
    expected = np.where(expected[:, :1] < 0, -expected, expected)
    np.testing.assert_allclose(orientation.fundamental_zone(q), expected, atol=1e-12)
    s = cubic_symmetry()
    equivalents = (Rotation(s[5]) * Rotation(-q[:50])).data  # another equivalent of each, of the other sign
    np.testing.assert_allclose(orientation.fundamental_zone(equivalents), expected[:50], atol=1e-12)
    assert np.isnan(orientation.fundamental_zone([[np.nan, 0, 0, 0]])).all()
