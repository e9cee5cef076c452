"""The localization task: whole MVEs and window images, data made the same on any number of ranks, MKS and MASE."""
import random

import h5py
import numpy as np
import pytest
import torch
import yaml
from launchers import MENNDL, mpirun

from menndl_py.errors import CandidateRefused, UserError
from menndl_py.physics.mks import MKSLocalization, mase
from menndl_py.tasks import make_task
from menndl_py.tasks.microstructure import data

TINY = {"size": 11, "window": 5, "train_volumes": 5, "val_volumes": 2, "test_volumes": 2, "seed": 5}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    task = make_task("localization", TINY, tmp_path_factory.mktemp("one"))
    task.make_data()
    return task


def test_samples_are_the_slabs_of_every_plane_and_window_images_have_slices_along_x1_as_channels(made):
    x, y = made.load("train")
    got = data.read(made.data_path, "train", ("volumes", "strain"))
    assert x.shape == (5 * 11, 1, 5, 11, 11) and x.dtype == np.float32 and y.dtype == np.float32
    assert y.shape == (5 * 11, 1, 11, 11)
    mve, plane = 3, 9
    np.testing.assert_array_equal(x[11 * mve + plane, 0], 2.0 * got["volumes"][mve][[7, 8, 9, 10, 0]] - 1)
    np.testing.assert_array_equal(y[11 * mve + plane, 0], got["strain"][mve, plane])
    np.testing.assert_array_equal(made.load("train", (1, 3))[1],
                                  y.reshape(5, 11, 1, 11, 11)[1::3].reshape(-1, 1, 11, 11))
    voxels = np.array([0, 7, 600, 1330])
    i, j, k = np.unravel_index(voxels[2], (11, 11, 11))
    a, b, c = np.ix_(*[(centre + np.arange(-2, 3)) % 11 for centre in (i, j, k)])
    window = made.neighbourhoods(got["volumes"][3], voxels)[2]
    np.testing.assert_array_equal(window, 2.0 * got["volumes"][3][a, b, c] - 1)  # window[0] is the slice at i - 2
    np.testing.assert_allclose(got["strain"].reshape(5, -1).mean(axis=1), 1.0, atol=1e-6)  # in applied strains


@pytest.mark.mpi
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


def test_predicted_fields_are_the_network_on_each_voxels_window_image(made):
    volumes = data.read(made.data_path, "test", ("volumes",))["volumes"]
    space, rng = made.space(), random.Random(0)
    while True:
        try:
            model = space.build(space.sample(rng)).eval()
            break
        except CandidateRefused:
            continue
    fields = made.predict_fields(model, volumes, batch=1)
    with torch.no_grad():
        each = model(torch.as_tensor(made.neighbourhoods(volumes[1], np.arange(11 ** 3)))).numpy()
    np.testing.assert_allclose(fields[1].ravel(), each[:, 0], rtol=1e-4, atol=1e-5)


def test_menndl_predict_writes_each_volumes_field(made, tmp_path):
    """`menndl predict` on a stack of volumes: one ε11 field per volume, the network's (`predict_fields`); a
    volume of another size is skipped with its reason."""
    import json
    import subprocess

    from menndl_py import config

    volumes = data.read(made.data_path, "test", ("volumes",))["volumes"]
    cfg = config.from_dict({"run": {"name": "r", "directory": str(tmp_path / "runs")},
                            "task": {"name": "localization", "data_dir": str(made.data_dir), "options": TINY}})
    (cfg.run_dir / "best").mkdir(parents=True)
    config.save(cfg, cfg.run_dir / "config.yaml")
    space, rng = made.space(), random.Random(1)
    while True:
        genome = space.sample(rng)
        try:
            model = space.build(genome).eval()
            break
        except CandidateRefused:
            continue
    (cfg.run_dir / "best" / "genome.json").write_text(json.dumps(genome.to_json()))
    torch.save(model.state_dict(), cfg.run_dir / "best" / "model.pt")
    (cfg.run_dir / "best" / "result.json").write_text(json.dumps({"id": 0, "m:val_mase": 10.0}))
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f["volumes"], f["small"] = volumes, volumes[:1, :9, :9, :9]
    done = subprocess.run([MENNDL, "predict", "runs/r", "v.h5", "--output", "fields.h5", "--no-progress"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "the network takes volumes of 11×11×11 voxels" in done.stderr, done.stderr
    with h5py.File(tmp_path / "fields.h5", "r") as f:
        fields = np.stack([f["maps"][key][()] for key in sorted(f["maps"])])
        assert len(f["skipped"]) == 1
    np.testing.assert_allclose(fields, made.predict_fields(model, volumes), rtol=1e-4, atol=1e-5)


def test_mase_is_the_mean_absolute_strain_error_over_the_applied_strain_in_percent(made):
    true = np.array([[1.0, 2.0, 0.5, 0.5], [1.0, 1.0, 1.0, 1.0]]).reshape(2, 1, 2, 2)
    predicted = true + np.array([[0.1, -0.2, 0.0, 0.1], [0.0, 0.0, 0.0, 0.4]]).reshape(2, 1, 2, 2)
    np.testing.assert_allclose(mase(predicted, true), [10.0, 10.0])
    np.testing.assert_allclose(mase(predicted * 0.002, true * 0.002, applied=0.002), [10.0, 10.0])
    planes = torch.ones(2, 1, 2, 2)
    errors = torch.tensor([0.1, -0.1, 0.1, -0.1, 0.3, 0.3, -0.3, 0.3]).reshape(2, 1, 2, 2)  # 10 % and 30 %
    sums = made.metric_sums(planes[:1] + errors[:1], planes[:1]) + made.metric_sums(planes[1:] + errors[1:],
                                                                                      planes[1:])
    metrics = made.metrics(sums)
    assert metrics["mase"] == pytest.approx(20.0)
    assert metrics["rmse_pct"] == pytest.approx(100 * (0.5 * (0.01 + 0.09)) ** 0.5)
    rows = made.other_baselines(None, {"test": None})["MKS first-order localization"]
    got = data.read(made.data_path, "test", ("volumes", "strain"))
    per_mve = mase(made.mks().predict(got["volumes"]), got["strain"])
    assert rows["test_mase"] == pytest.approx(per_mve.mean())
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
    ({"size": 2}, "task.options.size: must be an integer >= 3"),
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
