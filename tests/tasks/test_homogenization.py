"""The homogenization task: resumable data made the same on any number of ranks, the baselines, bad inputs."""
import h5py
import numpy as np
import pytest
import torch
import yaml
from launchers import MENNDL, mpirun

from menndl_py.errors import UserError
from menndl_py.physics.mks import StatsRegression, rule_of_mixtures, two_point_stats
from menndl_py.tasks import make_task
from menndl_py.tasks.base import SkipImage
from menndl_py.tasks.microstructure import data

TINY = {"size": 9, "train_volumes": 6, "val_volumes": 3, "test_volumes": 2, "seed": 3}


def contents(path):
    out = {}
    with h5py.File(path, "r") as f:
        out["recipe"] = f.attrs["recipe"]
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def assert_same_file(a, b):
    one, two = contents(a), contents(b)
    assert one.keys() == two.keys()
    for key in one:
        np.testing.assert_array_equal(one[key], two[key], err_msg=key)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    task = make_task("homogenization", TINY, tmp_path_factory.mktemp("one"))
    task.make_data()
    return task


def test_data_layout_and_inputs(made):
    made.check_data()
    assert not made.data_path.with_suffix(".parts").exists()
    x, y = made.load("train")
    assert x.shape == (6, 1, 9, 9, 9) and x.dtype == np.float32 and set(np.unique(x)) <= {-1.0, 1.0}
    assert y.dtype == np.float32 and np.all((y > made.c11_phases()[0]) & (y < made.c11_phases()[1]))
    odd = made.load("train", (1, 2))
    np.testing.assert_array_equal(odd[1], y[1::2])
    volume, info = data.draw(made.recipe(), "train", 4)  # sample i comes from its own generator
    np.testing.assert_array_equal(x[4, 0], 2.0 * volume - 1.0)
    assert made.space().input_shape == (1, 9, 9, 9)


@pytest.mark.mpi
def test_two_ranks_make_the_same_file(made, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"task": {"name": "homogenization", "data_dir": str(tmp_path / "two"),
                                               "options": TINY}}))
    out = mpirun(2, MENNDL, "data", "make", "homogenization", "--config", str(config), timeout=180, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert_same_file(made.data_path, tmp_path / "two" / made.data_path.name)


def test_an_interrupted_make_resumes_and_equals_an_uninterrupted_one(made, tmp_path, monkeypatch):
    real, calls = data.solve_sample, []

    def interrupted(recipe, volume):
        calls.append(1)
        if len(calls) == 6:  # the first chunk (4 samples) is finished, the second is not
            raise KeyboardInterrupt
        return real(recipe, volume)

    task = make_task("homogenization", TINY, tmp_path)
    monkeypatch.setattr(data, "solve_sample", interrupted)
    with pytest.raises(KeyboardInterrupt):
        task.make_data()
    assert not task.data_path.exists() and len(list(task.data_path.with_suffix(".parts").glob("*.npz"))) == 1
    monkeypatch.setattr(data, "solve_sample", lambda recipe, volume: calls.append(1) or real(recipe, volume))
    calls.clear()
    assert '"resumed_chunks": 1' in task.make_data()
    assert len(calls) == 11 - 4
    assert_same_file(made.data_path, task.data_path)


def test_voigt_and_reuss_bound_the_solver(made):
    for split in ("train", "val", "test"):
        got = data.read(made.data_path, split, ("c11", "volume_fraction"))
        bounds = rule_of_mixtures(got["volume_fraction"], *made.c11_phases())
        assert np.all(bounds["voigt"] >= got["c11"] * (1 - 1e-6)) and np.all(got["c11"] >= bounds["reuss"] * (1 - 1e-6))


def test_two_point_statistics_regression_beats_the_rule_of_mixtures_on_held_out_data(tmp_path):
    task = make_task("homogenization", dict(TINY, train_volumes=60, val_volumes=1, test_volumes=20, contrast=10),
                     tmp_path)
    task.make_data()
    rows = task.other_baselines(None, {"test": None})
    regression = rows["2-point statistics + PCA + polynomial ridge"]["test_mae_pct"]
    mixtures = min(rows[f"rule of mixtures ({b})"]["test_mae_pct"] for b in ("Voigt", "Reuss"))
    assert regression < 0.5 * mixtures, rows


def test_two_point_statistics_are_the_periodic_autocorrelation():
    m = np.zeros((5, 5, 5), np.uint8)
    m[0, 0, 0] = m[1, 0, 0] = 1
    stats = two_point_stats(m, cutoff=1).reshape(3, 3, 3)  # r_i in (0, 1, -1)
    assert stats[0, 0, 0] == pytest.approx(2 / 125) and stats[1, 0, 0] == stats[2, 0, 0] == pytest.approx(1 / 125)
    assert stats[0, 1, 0] == pytest.approx(0.0, abs=1e-12)


def test_metrics_are_percent_errors_of_the_target(made):
    target = torch.tensor([100.0, 200.0])
    predicted = torch.log(torch.tensor([110.0, 180.0]) / made.c_ref)[:, None]
    metrics = made.metrics(made.metric_sums(predicted, target))
    assert metrics["mae_pct"] == pytest.approx(10.0) and metrics["mae_gpa"] == pytest.approx(15.0)
    assert float(made.loss(predicted, target)) == pytest.approx((np.log(1.1) - np.log(0.9)) / 2, rel=1e-5)


@pytest.mark.parametrize("options, words", [
    ({"contrast": 0}, "task.options.contrast: must be > 0, got 0"),
    ({"contrast": -10}, "task.options.contrast: must be > 0"),
    ({"vf_min": 0.9, "vf_max": 0.5}, "task.options.vf_min: must be <= vf_max"),
    ({"size": "big"}, "task.options.size: must be an integer"),
])
def test_bad_options_name_the_field(options, words):
    with pytest.raises(UserError, match=words) as info:
        make_task("homogenization", options)
    assert "\n" not in str(info.value)


def test_bad_volumes_and_files_give_one_line_errors(made, tmp_path):
    regression = StatsRegression(cutoff=2, components=3).fit(*data.read(made.data_path, "train",
                                                                           ("volumes", "c11")).values())
    three = np.random.default_rng(0).integers(0, 3, (2, 9, 9, 9))
    for call, words in [(lambda: two_point_stats(three, 2), r"volumes has values \{0,1,2\}; expected two phases"),
                        (lambda: regression.predict(np.zeros((2, 7, 7, 7))), r"expected \(9, 9, 9\)"),
                        (lambda: two_point_stats(np.zeros((4, 4)), 2), "expected one or more 3-D volumes"),
                        (lambda: made.predict_c11(torch.nn.Identity(), np.ones((1, 8, 9, 9))), "volumes has")]:
        with pytest.raises(UserError, match=words) as info:
            call()
        assert "\n" not in str(info.value)
    other = make_task("homogenization", dict(TINY, contrast=10), tmp_path)
    other.data_path.parent.mkdir(exist_ok=True)
    other.data_path.write_bytes(made.data_path.read_bytes())
    with pytest.raises(UserError, match=f"{other.data_path}: made from another recipe"):
        other.check_data()
    other.data_path.write_bytes(b"not hdf5")
    with pytest.raises(UserError, match=f"{other.data_path}: unreadable"):
        other.check_data()


def test_predict_takes_volumes_of_phases_and_gives_c11(made):
    genome = made.baseline_genomes()["3-D CNN (hand-designed, after Yang et al. 2018)"]
    model = made.space().build(genome).eval()
    volumes = data.read(made.data_path, "val", ("volumes",))["volumes"]
    x = torch.from_numpy(np.stack([made.prepare_image(v, genome) for v in volumes]))
    with torch.no_grad():
        columns = made.output_columns(model(x))
    np.testing.assert_allclose(columns["predicted_c11_GPa"], made.predict_c11(model, volumes), rtol=1e-6)
    for bad, words in [(volumes[0, :4], "shape"), (volumes[0] * 2, "phases 0 and 1")]:
        with pytest.raises(SkipImage, match=words):
            made.prepare_image(bad, genome)
