"""The localization task: voxel neighbourhoods, data made the same on any number of ranks, MKS and MASE."""
import h5py
import numpy as np
import pytest
import torch
import yaml

from launchers import MENNDL, mpirun
from menndl_py.errors import UserError
from menndl_py.tasks import make_task
from menndl_py.tasks import microstructure_data as data
from menndl_py.tasks.mks import MKSLocalization, mase

TINY = {"size": 11, "window": 5, "train_volumes": 5, "val_volumes": 2, "test_volumes": 2, "seed": 5,
        "train_voxels": 30, "val_voxels": 40, "test_voxels": None}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    task = make_task("localization", TINY, tmp_path_factory.mktemp("one"))
    task.make_data()
    return task


def test_samples_are_periodic_neighbourhoods_with_slices_along_x1_as_channels(made):
    x, y = made.load("train")
    assert x.shape == (5 * 30, 5, 5, 5) and x.dtype == np.float32 and y.dtype == np.float32
    got = data.read(made.data_path, "train", ("volumes", "strain"))
    voxels = made.voxels("train", 3)
    assert len(set(voxels)) == 30
    i, j, k = np.unravel_index(voxels[7], (11, 11, 11))
    row = 3 * 30 + 7
    assert y[row] == got["strain"][3, i, j, k]
    a, b, c = np.ix_(*[(centre + np.arange(-2, 3)) % 11 for centre in (i, j, k)])
    np.testing.assert_array_equal(x[row], 2.0 * got["volumes"][3][a, b, c] - 1)  # x[row, 0] is the slice at i - 2
    shards = [made.load("train", (r, 3)) for r in range(3)]
    assert sum(len(s[0]) for s in shards) == len(x)
    np.testing.assert_array_equal(shards[1][1], y[1::3])
    assert made.load("test")[0].shape == (2 * 11 ** 3, 5, 5, 5)
    means = got["strain"].reshape(5, -1).mean(axis=1)
    np.testing.assert_allclose(means, 1.0, atol=1e-6)  # fields are in units of the applied strain


def test_two_ranks_make_the_same_file(made, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"task": {"name": "localization", "data_dir": str(tmp_path / "two"),
                                               "options": TINY}}))
    out = mpirun(2, MENNDL, "data", "make", "localization", "--config", str(config), timeout=180, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    with h5py.File(made.data_path) as one, h5py.File(tmp_path / "two" / made.data_path.name) as two:
        for split in ("train", "val", "test"):
            for key in ("volumes", "strain", "c11", "kind"):
                np.testing.assert_array_equal(one[split][key][()], two[split][key][()], err_msg=f"{split}/{key}")


def test_predict_fields_covers_every_voxel_in_place(made):
    got = data.read(made.data_path, "test", ("volumes",))

    class Centre(torch.nn.Module):
        def forward(self, x):
            return x[:, 2, 2, 2][:, None]

    np.testing.assert_array_equal(made.predict_fields(Centre(), got["volumes"], batch=100),
                                  2.0 * got["volumes"] - 1.0)


def test_mase_is_the_mean_absolute_strain_error_over_the_applied_strain_in_percent(made):
    true = np.array([[1.0, 2.0, 0.5, 0.5], [1.0, 1.0, 1.0, 1.0]]).reshape(2, 1, 2, 2)
    predicted = true + np.array([[0.1, -0.2, 0.0, 0.1], [0.0, 0.0, 0.0, 0.4]]).reshape(2, 1, 2, 2)
    np.testing.assert_allclose(mase(predicted, true), [10.0, 10.0])
    np.testing.assert_allclose(mase(predicted * 0.002, true * 0.002, applied=0.002), [10.0, 10.0])
    metrics = made.metrics(made.metric_sums(torch.tensor([[1.1], [0.7]]), torch.tensor([1.0, 1.0])))
    assert metrics["mase"] == pytest.approx(20.0)
    rows = made.other_baselines(None, {"test": None})["MKS first-order localization"]
    got = data.read(made.data_path, "test", ("volumes", "strain"))
    per_mve = mase(made.mks().predict(got["volumes"]), got["strain"])
    assert rows["test_mase_full"] == pytest.approx(per_mve.mean())
    assert rows["test_mase"] == pytest.approx(per_mve.mean())  # every test voxel is a sample here
    assert rows["test_mase_mve_max"] == pytest.approx(per_mve.max())


def test_first_order_mks_reproduces_a_low_contrast_field(tmp_path):
    options = dict(TINY, contrast=1.2, train_volumes=40, val_volumes=1, test_volumes=4, tol=1e-8)
    task = make_task("localization", options, tmp_path)
    task.make_data()
    fit = data.read(task.data_path, "train", ("volumes", "strain"))
    test = data.read(task.data_path, "test", ("volumes", "strain"))
    model = MKSLocalization().fit(fit["volumes"], fit["strain"])
    errors = mase(model.predict(test["volumes"]), test["strain"])
    uniform = mase(np.ones_like(test["strain"]), test["strain"])  # the strain field without the microstructure
    assert np.all(errors < 0.1 * uniform), (errors, uniform)
    assert np.all(errors < 0.3)


@pytest.mark.parametrize("options, words", [
    ({"window": 4}, "task.options.window: must be odd and <= size"),
    ({"window": 23}, "task.options.window: must be odd and <= size"),
    ({"contrast": -1.0}, "task.options.contrast: must be > 0"),
    ({"train_voxels": 0}, "task.options.train_voxels: must be an integer >= 1"),
])
def test_bad_options_name_the_field(options, words):
    with pytest.raises(UserError, match=words) as info:
        make_task("localization", options)
    assert "\n" not in str(info.value)


def test_bad_volumes_give_one_line_errors(made):
    got = data.read(made.data_path, "train", ("volumes", "strain"))
    model = MKSLocalization().fit(got["volumes"], got["strain"])
    for call, words in [
        (lambda: made.neighbourhoods(np.full((11, 11, 11), 0.5), np.arange(3)), r"volume has values \{0.5\}"),
        (lambda: made.neighbourhoods(np.zeros((11, 11, 12)), np.arange(3)), r"expected \(11, 11, 11\)"),
        (lambda: model.predict(np.zeros((2, 9, 9, 9))), r"expected \(11, 11, 11\)"),
        (lambda: MKSLocalization().fit(got["volumes"], got["strain"][:, :5]), "strains has shape"),
        (lambda: made.predict_fields(torch.nn.Identity(), -got["volumes"].astype(int)), "volumes has values"),
    ]:
        with pytest.raises(UserError, match=words) as info:
            call()
        assert "\n" not in str(info.value)
