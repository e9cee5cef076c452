"""The ebsd task: metrics from additive sums (the median from a histogram), shards, dictionary indexing, predict's
inputs and columns, bad inputs, a short search in one process whose best network `menndl predict` runs, and the
baselines command."""
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from launchers import menndl

from menndl_py.errors import UserError
from menndl_py.physics import ebsd
from menndl_py.physics.ebsd import EbsdSettings
from menndl_py.physics.ebsd_dictionary import Dictionary
from menndl_py.physics.orientation import cubic_tensor, disorientation_degrees, summary
from menndl_py.tasks import make_task
from menndl_py.tasks.base import SkipImage
from menndl_py.tasks.ebsd.task import BIN_DEGREES, BINS, median_of

TINY = {"train_size": 70, "val_size": 5, "test_size": 4, "dictionary_resolution": 15.0, "target": "tensor"}
TINY_CONFIG = Path(__file__).parents[2] / "configs" / "ebsd-tiny.yaml"


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    made = make_task("ebsd", TINY, tmp_path_factory.mktemp("ebsd-data"))
    made.make_data()
    made.check_data()
    return made


@pytest.fixture(scope="module")
def quaternion_task(task):
    """The task with the quaternion target, on the same data."""
    return make_task("ebsd", {**TINY, "target": "quaternion"}, task.data_dir)


def near(q: np.ndarray, degrees: float, rng: np.random.Generator) -> np.ndarray:
    """q turned by `degrees` about random axes."""
    axes = rng.standard_normal((len(q), 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    half = np.radians(degrees) / 2
    turn = np.column_stack([np.full(len(q), np.cos(half)), np.sin(half) * axes])
    w1, v1, w2, v2 = turn[:, :1], turn[:, 1:], q[:, :1], q[:, 1:]
    return np.column_stack([w1 * w2 - (v1 * v2).sum(1, keepdims=True), w1 * v2 + w2 * v1 + np.cross(v1, v2)])


def test_metrics_from_sums_over_batches_equal_the_direct_computation(quaternion_task):
    task = quaternion_task
    rng = np.random.default_rng(0)
    truth = ebsd.random_quaternions(500, rng)
    predicted = near(truth, 1, rng) * rng.uniform(0.5, 2, (500, 1))  # unnormalised, about 1° off, some far
    predicted[:40] = ebsd.random_quaternions(40, rng)
    sums = sum(task.metric_sums(torch.from_numpy(predicted[i:i + 64]), torch.from_numpy(truth[i:i + 64]))
               for i in range(0, 500, 64))
    assert sums.shape == (5 + BINS,) and sums.dtype == torch.float64
    got, exact = task.metrics(sums), summary(disorientation_degrees(predicted, truth))
    assert set(got) == set(task.metric_names)
    for key in exact:
        tolerance = BIN_DEGREES if key == "median_disorientation" else 1e-9
        assert got[key] == pytest.approx(exact[key], abs=tolerance), key
    assert task.loss(torch.from_numpy(predicted), torch.from_numpy(truth)).shape == ()


def test_the_histogram_median_lies_within_a_bin_of_the_median():
    rng = np.random.default_rng(1)
    for values in (rng.uniform(0, 3, 101), rng.exponential(0.4, 1000), np.array([0.005, 0.015])):
        histogram = np.bincount((values / BIN_DEGREES).astype(int), minlength=BINS).astype(float)
        assert abs(median_of(histogram) - np.median(values)) <= BIN_DEGREES
    assert np.isnan(median_of(np.zeros(BINS)))


def test_the_tensor_target_scores_the_orientations_its_outputs_stand_for(task, quaternion_task):
    rng = np.random.default_rng(0)
    truth = ebsd.random_quaternions(300, rng)
    predicted = near(truth, 2, rng)
    got = task.metrics(task.metric_sums(cubic_tensor(torch.from_numpy(predicted)), torch.from_numpy(truth)))
    exact = summary(disorientation_degrees(predicted, truth))
    assert got["mean_disorientation"] == pytest.approx(exact["mean_disorientation"], abs=0.01)
    assert task.loss(cubic_tensor(torch.from_numpy(truth)), torch.from_numpy(truth)).item() < 1e-12
    assert task.ensembled == "mean" and not quaternion_task.ensembled  # tensors average, quaternions do not
    assert not make_task("ebsd", {}, task.data_dir).tensor  # runs made before the tensor load as they were


def test_a_zero_output_gives_a_nan_mean_not_a_crash(quaternion_task):
    task = quaternion_task
    sums = task.metric_sums(torch.zeros(2, 4), torch.tensor([[1.0, 0, 0, 0]] * 2))
    assert np.isnan(task.metrics(sums)["mean_disorientation"])


def test_a_non_finite_tensor_gives_a_nan_mean_and_nan_columns(task):
    output = cubic_tensor(torch.tensor([[1.0, 0, 0, 0]] * 2))
    output[1, 3] = float("nan")
    assert np.isnan(task.metrics(task.metric_sums(output, torch.tensor([[1.0, 0, 0, 0]] * 2)))["mean_disorientation"])
    columns = task.image_columns(output, torch.zeros(2, 1, 60, 60))
    assert np.isnan(columns["q_w"][1]) and np.isnan(columns["misfit"][1]) and columns["q_w"][0] == pytest.approx(1)


def test_shards_split_the_rows_and_the_experimental_patterns_load(task):
    x, y = task.load("train")
    assert x.shape == (70, 1, 60, 60) and x.dtype == np.float32 and y.shape == (70, 4) and y.dtype == np.float32
    parts = [task.load("train", (r, 3)) for r in range(3)]
    assert sum(len(p[0]) for p in parts) == 70
    np.testing.assert_array_equal(parts[1][0], x[1::3])
    np.testing.assert_array_equal(parts[2][1], y[2::3])
    ex, ey = task.load("experimental")
    assert ex.shape == (9, 1, 60, 60) and ey.shape == (9, 4)
    task.check_shards(4)
    with pytest.raises(UserError, match="test has 4 patterns, fewer than the 5 ranks"):
        task.check_shards(5)


@pytest.mark.parametrize("options, message", [
    ({"simulator": {"voltage": 20}}, "task.options.simulator: "),
    ({"simulator": {"pattern_height": 8}}, "task.options.simulator.pattern_height: must be an integer in [16, 1024]"),
    ({"dictionary_resolution": 0.1}, "task.options.dictionary_resolution: must be a number >= 0.5"),
    ({"dictionary_refine": "yes"}, "task.options.dictionary_refine: must be true or false"),
    ({"train_size": 0}, "task.options.train_size: must be an integer >= 1"),
    ({"randomize": {"counts": [10]}}, "task.options.randomize.counts: must be [low, high]"),
])
def test_bad_options_name_the_key(tmp_path, options, message):
    with pytest.raises(UserError) as error:
        make_task("ebsd", options, tmp_path)
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_randomized_training_patterns_are_data_of_their_own(tmp_path):
    plain = make_task("ebsd", TINY, tmp_path)
    varied = make_task("ebsd", {**TINY, "randomize": {"counts": [1000, 4000, "log"]}}, tmp_path)
    assert varied.ranges == {"counts": (1000, 4000, True)} and plain.ranges == {}
    assert varied.data_path != plain.data_path and varied.data_path.parent == plain.data_path.parent


def test_missing_or_damaged_data_is_a_one_line_error_with_the_remedy(task, tmp_path):
    other = make_task("ebsd", TINY, tmp_path)
    assert other.data_path.name == task.data_path.name
    with pytest.raises(UserError, match="make it again with 'menndl data make ebsd --force'"):
        other.check_data()
    with h5py.File(task.data_path, "r") as f, h5py.File(other.data_path, "w") as g:
        for split in ("train", "val", "experimental"):
            f.copy(split, g)
        g.create_group("test")["patterns"] = np.zeros((3, 60, 60), np.float32)
        g["test"]["quaternions"] = np.zeros((3, 4))
    with pytest.raises(UserError, match="test has 3 patterns, expected 4; make it again"):
        other.check_data()


def test_dictionary_indexing_finds_the_orientations_of_its_own_patterns():
    settings = EbsdSettings()
    dictionary = Dictionary(settings, 12.0)
    picked = dictionary.quaternions[[3, len(dictionary) // 2, len(dictionary) - 5]]
    patterns = ebsd.render(settings, picked).patterns  # noise-free, nominal geometry, background-corrected
    found, scores = dictionary.index(patterns)
    assert disorientation_degrees(found, picked).max() < 1e-3
    assert found.shape == (3, 4) and scores.shape == (3,) and (scores > 0.5).all()


def test_indexing_near_given_orientations_searches_only_their_neighbourhoods():
    from orix.quaternion import Rotation, symmetry

    settings = EbsdSettings()
    dictionary = Dictionary(settings, 12.0)
    picked = dictionary.quaternions[[3, len(dictionary) // 2, len(dictionary) - 5]]
    patterns = ebsd.render(settings, picked).patterns
    equivalents = (symmetry.O[5] * Rotation(picked)).data  # near the truth is near each of its equivalents
    found, scores = dictionary.index_near(patterns, equivalents, k=5)
    assert disorientation_degrees(found, picked).max() < 1e-3
    np.testing.assert_allclose(scores, dictionary.index(patterns)[1], atol=1e-4)
    elsewhere = dictionary.quaternions[[10, 20, 30]]
    found_elsewhere, scores_elsewhere = dictionary.index_near(patterns, elsewhere, k=1)
    assert disorientation_degrees(found_elsewhere, elsewhere).max() < 1e-3 and (scores_elsewhere < scores).all()
    unknown = elsewhere.copy()
    unknown[1] = np.nan  # a network that gave no orientation
    mixed, _ = dictionary.index_near(patterns, unknown, k=1, doubtful=np.array([True, False, False]))
    assert disorientation_degrees(mixed[:2], picked[:2]).max() < 1e-3  # the whole dictionary searched
    assert disorientation_degrees(mixed[2:], elsewhere[2:]).max() < 1e-3  # the neighbourhood only


def test_refinement_finds_an_orientation_between_the_dictionary_s():
    settings = EbsdSettings()
    dictionary = Dictionary(settings, 12.0)
    truth = near(dictionary.quaternions[[7, 70]], 1.5, np.random.default_rng(3))
    patterns = ebsd.render(settings, truth).patterns
    np.testing.assert_allclose(disorientation_degrees(dictionary.index(patterns)[0], truth), 1.5, atol=1e-6)
    assert disorientation_degrees(dictionary.index(patterns, refine=True)[0], truth).max() < 0.05


def test_the_dictionary_baseline_scores_every_split_and_the_experimental_patterns(task):
    rows = task.other_baselines(task.load("train"), {"val": task.load("val"), "test": task.load("test")})
    (name, row), = rows.items()
    assert name.startswith("dictionary indexing (15°, ")
    for split in ("val", "test", "experimental"):
        assert set(f"{split}_{m}" for m in task.metric_names) <= set(row)
    assert row["seconds_per_pattern"] > 0 and row["dictionary_size"] > 100


def test_jha_et_al_s_network_lies_in_the_space(task):
    (name, genome), = task.baseline_genomes().items()
    space = task.space()
    assert space.outside(genome) is None
    params, _ = space.cost(genome)
    assert params <= space.max_params
    model = space.build(genome)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) == 8
    assert task.latency_batch(genome).shape == (task.image_batch, 1, 60, 60)  # timed in predict's batches
    assert [m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)] == [1024, 256, 128, 32, 15]
    assert model(torch.zeros(2, 1, 60, 60)).shape == (2, 15)  # the cubic tensor
    assert task.network_io(genome)["input"]["shape"] == [None, 1, 60, 60]


def test_predict_standardises_a_corrected_pattern_and_refuses_bad_ones(task):
    genome = next(iter(task.baseline_genomes().values()))
    x, _ = task.load("val")
    pattern = x[0, 0] * 3 + 7
    prepared = task.prepare_image(pattern, genome)
    assert prepared.shape == (1, 60, 60) and prepared.dtype == np.float32
    np.testing.assert_allclose(prepared, x[0], atol=1e-4)
    np.testing.assert_allclose(task.prepare_image(pattern[None], genome), prepared)
    nan = pattern.copy()
    nan[5, 5] = np.nan
    for bad, words in [(pattern[:48, :48], "shape (48, 48); the network takes 60×60"),
                       (np.stack([pattern, pattern]), "shape (2, 60, 60); expected a 2-D single-channel image"),
                       (nan, "contains NaN or infinite values"), (np.ones((60, 60)), "a blank pattern"),
                       (pattern.astype(complex), "wrong dtype complex128")]:
        with pytest.raises(SkipImage) as skipped:
            task.prepare_image(bad, genome)
        assert str(skipped.value).startswith(words)


def test_predict_removes_the_dynamic_background_of_raw_integer_patterns(task):
    """A vendor's file holds raw counts: integer patterns get the dynamic background removed (no static one is
    known), as `correct_background` without a static background does; a slope of background is gone."""
    genome = next(iter(task.baseline_genomes().values()))
    with h5py.File(task.data_path) as f:
        raw = f["experimental/raw"][0]
    prepared = task.prepare_image(raw, genome)
    np.testing.assert_allclose(prepared, ebsd.correct_background(raw[None].astype(np.float32), None), atol=1e-5)
    ramp = (raw.astype(np.float64) * 0.5 + np.linspace(0, 120, 60)[None, :]).astype(np.uint8)
    columns = task.prepare_image(ramp, genome)[0].mean(axis=0)
    assert abs(np.corrcoef(columns, np.arange(60))[0, 1]) < 0.5 < np.corrcoef(ramp.mean(axis=0), np.arange(60))[0, 1]


def test_columns_give_the_orientation_in_the_fundamental_zone_and_the_output_length(quaternion_task):
    from orix.quaternion import Orientation, symmetry

    q = ebsd.random_quaternions(5, np.random.default_rng(2))
    columns = quaternion_task.image_columns(torch.from_numpy(2.5 * q), torch.zeros(5, 1, 60, 60))
    found = np.column_stack([columns[f"q_{c}"] for c in "wxyz"])
    assert disorientation_degrees(found, q).max() < 1e-6 and (found[:, 0] >= 0).all()
    np.testing.assert_allclose(columns["confidence"], 2.5)
    reduced = Orientation(q, symmetry=symmetry.O).reduce()
    euler = np.column_stack([columns[f"euler_{n}_deg"] for n in ("phi1", "Phi", "phi2")])
    np.testing.assert_allclose(euler, reduced.to_euler(degrees=True), atol=1e-6)


def test_columns_of_the_tensor_target_give_the_orientation_and_its_misfit(task):
    q = ebsd.random_quaternions(5, np.random.default_rng(2))
    tensors = cubic_tensor(torch.from_numpy(q))
    columns = task.image_columns(torch.cat([tensors, (tensors[:1] + tensors[1:2]) / 2]), torch.zeros(6, 1, 60, 60))
    found = np.column_stack([columns[f"q_{c}"] for c in "wxyz"])
    assert disorientation_degrees(found[:5], q).max() < 0.01 and (found[:, 0] >= 0).all()
    assert columns["misfit"][:5].max() < 1e-3 < columns["misfit"][5] and "confidence" not in columns
    assert "correlation" not in columns


def test_with_a_dictionary_the_columns_give_its_best_match_near_the_network_s_orientation(task):
    try:
        task.use_dictionary()  # at the tiny config's 10°
        truth = task.dictionary.quaternions[[5, len(task.dictionary) // 2, len(task.dictionary) - 5]]
        patterns = torch.from_numpy(ebsd.render(task.settings, truth).patterns[:, None])
        off = near(truth, 6, np.random.default_rng(4))  # 6° off: their 100 nearest at 10° hold the truth
        columns = task.image_columns(cubic_tensor(torch.from_numpy(off)), patterns)
    finally:
        task.dictionary = None
    found = np.column_stack([columns[f"q_{c}"] for c in "wxyz"])
    assert disorientation_degrees(found, truth).max() < 1e-3
    assert (columns["correlation"] > 0.9).all() and columns["misfit"].max() < 1e-3


def test_a_short_search_in_one_process_then_predict(tmp_path):
    shutil.copy(TINY_CONFIG, tmp_path / "c.yaml")
    done = menndl("run", "c.yaml", "--no-progress", cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    header = (tmp_path / "runs" / "ebsd-tiny" / "results.csv").read_text().splitlines()[0]
    assert "m:val_median_disorientation" in header and "m:experimental_mean_disorientation" in header
    data = next((tmp_path / "data").glob("ebsd-*.h5"))
    with h5py.File(data, "r") as f, h5py.File(tmp_path / "stack.h5", "w") as g:
        g["patterns"] = f["experimental/patterns"][()]
        g["small"] = f["test/patterns"][:1, :40, :40]
    found = menndl("predict", "runs/ebsd-tiny", "stack.h5", "--output", "map.csv", "--no-progress", cwd=tmp_path)
    assert found.returncode == 1 and "the network takes 60×60" in found.stderr
    lines = (tmp_path / "map.csv").read_text().splitlines()
    assert len(lines) == 11 and "euler_phi1_deg" in lines[0] and "misfit" in lines[0]
    found = menndl("predict", "runs/ebsd-tiny", "stack.h5", "--output", "near.csv", "--no-progress", "--method",
                   "network+dictionary", "--dictionary-resolution", "12", "--dictionary-near", "30", cwd=tmp_path)
    assert found.returncode == 1 and "the network takes 60×60" in found.stderr
    assert "dictionary at 12°" in found.stdout and "among the 30 nearest" in found.stdout, found.stdout
    near_map, network_map = (pd.read_csv(tmp_path / name) for name in ("near.csv", "map.csv"))
    assert len(near_map) == 10 and set(near_map.columns) == {*network_map.columns, "correlation"}
    assert near_map["correlation"].iloc[:9].between(-1, 1).all() and near_map["correlation"].iloc[9:].isna().all()


@pytest.mark.slow
def test_the_baselines_command_prints_the_experimental_scores_and_the_time_per_pattern(tmp_path):
    config = yaml.safe_load(TINY_CONFIG.read_text())
    config["search"]["space"] = {}  # Jha et al.'s network is wider than the tiny search's space
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    baselines = menndl("baseline", "c.yaml", "--budget", "1", cwd=tmp_path, timeout=300)
    assert baselines.returncode == 0, baselines.stderr[-3000:]
    assert "exp mean_disorientation" in baselines.stdout and "ms per pattern" in baselines.stdout
