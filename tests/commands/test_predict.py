"""`menndl predict`: the best network of a run over HDF5/TIFF/PNG images, one process or sharded over MPI ranks;
bad images skipped with a reason while the rest are processed; defects found with the network's recorded
detection thresholds, or by argmax with a note when it has none."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
import torch
from launchers import MENNDL, mpi_env, mpirun
from PIL import Image

from menndl_py import config
from menndl_py.commands.predict import Output, load_best
from menndl_py.errors import UserError
from menndl_py.genome import Genome
from menndl_py.physics.stem_analysis import DetectionRule, extract_defects, threshold_defects
from menndl_py.tasks import make_task

OPTIONS = {"train_images": 4, "val_images": 2, "test_images": 6, "tile": 64, "simulator": {"image_size": 96}}
LEVEL = {"filters": 4, "kernel": 3, "convs": 1, "activation": "relu", "norm": "none", "down": "max",
         "up": "nearest", "skip": True, "dropout": 0.0}
GENOME = Genome([LEVEL, dict(LEVEL, filters=8)], {"learning_rate": 1e-3, "batch_size": 4, "optimizer": "adam",
                                                  "weight_decay": 0.0})
RULE = DetectionRule((0.74, 0.9, 0.9, 0.9), 0.5)  # many class-1 defects where the argmax sees one blob


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A run directory whose best network is a small encoder–decoder with seeded random weights and RULE recorded
    beside it (as a search records it), and inputs."""
    root = tmp_path_factory.mktemp("predict")
    cfg = config.from_dict({"run": {"name": "r", "directory": str(root / "runs")},
                            "task": {"name": "stem_defects", "data_dir": str(root / "data"), "options": OPTIONS}})
    task = make_task("stem_defects", OPTIONS, root / "data")
    task.make_data()
    (cfg.run_dir / "best").mkdir(parents=True)
    config.save(cfg, cfg.run_dir / "config.yaml")
    (cfg.run_dir / "best" / "genome.json").write_text(json.dumps(GENOME.to_json()))
    torch.manual_seed(0)
    model = task.space().build(GENOME)
    with torch.no_grad():
        model.head.bias.copy_(torch.tensor([0.0, 1.0, -5.0, -5.0, -5.0]))  # some pixels come out as defects
    torch.save(model.state_dict(), cfg.run_dir / "best" / "model.pt")
    names = task.class_names[1:]
    (cfg.run_dir / "best" / "result.json").write_text(json.dumps(
        {"id": 0, "m:val_defect_f1": 0.1, **{f"m:threshold_{n}": t for n, t in zip(names, RULE.thresholds)},
         "m:smoothing": RULE.smoothing}))
    with h5py.File(task.data_path, "r") as f:
        images = f["test"]["images"][()]
    with h5py.File(root / "stack.h5", "w") as f:
        f["images"] = images
    tifffile.imwrite(root / "pages.tif", images[:3], photometric="minisblack")
    Image.fromarray(images[0].astype(np.uint16)).save(root / "one.png")
    return root, cfg.run_dir, task, model.eval(), images


def predict(root, *args, n=1):
    command = [MENNDL, "predict", "runs/r", *args, "--no-progress"]
    if n == 1:
        return subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=300, env=mpi_env())
    return mpirun(n, *command, timeout=300, cwd=root)


def test_class_maps_and_defects_are_those_of_the_network_with_its_thresholds(workdir):
    root, _, task, model, images = workdir
    done = predict(root, "stack.h5", "--output", "out/a.h5")
    assert done.returncode == 0, done.stderr
    with torch.no_grad():
        x = torch.from_numpy(np.stack([task.prepare_image(i, GENOME) for i in images]))
        p = torch.softmax(model(x), 1).numpy()
    expected = [threshold_defects(q, RULE) for q in p]
    with h5py.File(root / "out/a.h5", "r") as f:
        assert len(f["maps"]) == len(images) and len(f["skipped"]) == 0
        for i, q in enumerate(p):
            assert np.array_equal(f["maps"][f"{i:07d}"][()], q.argmax(0))
            assert f["maps"][f"{i:07d}"].attrs["source"] == f"stack.h5:/images[{i}]"
        table = f["defects"][()]
    assert len(table) == sum(map(len, expected)) > 2 * sum(len(extract_defects(q)) for q in p)
    np.testing.assert_allclose(table[:, 1:], np.concatenate(expected), rtol=1e-5)
    rows = (root / "out/a.csv").read_text().splitlines()
    assert rows[0] == "image,source,y,x,class,confidence" and len(rows) == len(table) + 1


def test_the_ensemble_averages_its_networks_and_their_mirrored_columns_with_its_own_thresholds(workdir, tmp_path):
    """Two networks of different depth, on images of the data's size and on 80×70 crops; the ensemble's own
    thresholds (ensemble.json), not best/'s."""
    root, run_dir, task, model, images = workdir
    run = tmp_path / "run"
    shutil.copytree(run_dir, run, symlinks=True)
    deeper = Genome([LEVEL, dict(LEVEL, filters=8), dict(LEVEL, filters=8)], GENOME.training)
    torch.manual_seed(1)
    other = task.space().build(deeper).eval()
    with torch.no_grad():
        other.head.bias.copy_(torch.tensor([0.0, 1.5, -5.0, -5.0, -5.0]))
        other.head.weight.mul_(40)  # outputs that vary over the image: mirroring its columns changes them
    rule = DetectionRule((0.75, 0.6, 0.7, 0.8), 1.0)
    names = task.class_names[1:]
    for work_id, genome, network, fitness in ((3, GENOME, model, 0.2), (7, deeper, other, 0.1)):
        (run / "ensemble" / str(work_id)).mkdir(parents=True)
        (run / "ensemble" / str(work_id) / "genome.json").write_text(json.dumps(genome.to_json()))
        (run / "ensemble" / str(work_id) / "result.json").write_text(json.dumps({"id": work_id, "fitness": fitness}))
        torch.save(network.state_dict(), run / "ensemble" / str(work_id) / "model.pt")
    (run / "ensemble.json").write_text(json.dumps({"members": [3, 7], "calibration": {
        **{f"threshold_{n}": t for n, t in zip(names, rule.thresholds)}, "smoothing": rule.smoothing}}))
    crops = images[:2, 5:85, 11:81]
    np.save(tmp_path / "crops.npy", crops)
    for source, raw in (("stack.h5", images), (str(tmp_path / "crops.npy"), crops)):
        out = tmp_path / f"{Path(source).stem}.h5"
        done = subprocess.run([MENNDL, "predict", str(run), source, "--output", str(out), "--network", "ensemble",
                               "--no-progress"], cwd=root, capture_output=True, text=True, timeout=300, env=mpi_env())
        assert done.returncode == 0, done.stderr
        x = torch.from_numpy(np.stack([task.prepare_image(i, GENOME) for i in raw]))
        with torch.no_grad():
            p = np.mean([torch.softmax(task.outputs(m, g, x.flip(axes)), 1).flip(axes).numpy()
                         for g, m in ((GENOME, model), (deeper, other)) for axes in ((), (-1,))], axis=0)
        expected = [threshold_defects(q, rule) for q in p]
        with h5py.File(out, "r") as f:
            assert json.loads(f.attrs["ensemble"]) == [GENOME.canonical(), deeper.canonical()]
            for i, q in enumerate(p):
                assert np.array_equal(f["maps"][f"{i:07d}"][()], q.argmax(0))
            table = f["defects"][()]
        assert len(table) == sum(map(len, expected)) > 0
        np.testing.assert_allclose(table[:, 1:], np.concatenate(expected), rtol=1e-4, atol=1e-4)


def test_a_network_without_recorded_thresholds_is_read_by_argmax_with_a_note(workdir, tmp_path, capsys):
    _, run_dir, *_ = workdir
    assert load_best(run_dir)[0].rule == RULE and capsys.readouterr().err == ""
    bare = tmp_path / "bare"
    shutil.copytree(run_dir, bare)
    (bare / "best" / "result.json").unlink()
    task, _, _ = load_best(bare)
    assert task.rule is None
    assert capsys.readouterr().err == (f"menndl: note: {bare}/best/result.json: no calibrated detection rule "
                                       f"(thresholds and smoothing); defects are argmax components of at least 3 "
                                       f"pixels\n")
    load_best(bare, quiet=True)
    assert capsys.readouterr().err == ""


def test_bad_images_are_skipped_by_name_and_the_rest_processed(workdir):
    root, *_ = workdir
    (root / "bad").mkdir(exist_ok=True)
    (root / "bad" / "corrupt.tif").write_bytes(b"not a tiff at all")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "bad" / "tiny.png")
    with h5py.File(root / "bad" / "complex.h5", "w") as f:
        f["x"] = np.ones((96, 96), np.complex64)
    Image.fromarray(np.zeros((96, 96, 3), np.uint8) + np.arange(3, dtype=np.uint8)).save(root / "bad" / "rgb.png")
    done = predict(root, "pages.tif", "one.png", "bad", "missing.png", "--output", "out/b.h5")
    assert done.returncode == 1, done.stderr
    reasons = {line.removeprefix("menndl: skipped ").split(": ")[0]: line for line in done.stderr.splitlines()
               if line.startswith("menndl: skipped")}
    assert set(reasons) == {"bad/corrupt.tif", "bad/tiny.png", "bad/complex.h5:/x", "bad/rgb.png", "missing.png"}
    assert "wrong dtype complex64" in reasons["bad/complex.h5:/x"]
    assert "smaller than the network accepts" in reasons["bad/tiny.png"]
    assert "grayscale" in reasons["bad/rgb.png"]
    assert "Traceback" not in done.stderr
    with h5py.File(root / "out/b.h5", "r") as f:
        assert len(f["maps"]) == 4  # three TIFF pages and one PNG
        assert sorted(s.decode() for s, _ in f["skipped"][()]) == sorted(reasons)


@pytest.mark.mpi
def test_sharded_over_mpi_ranks_gives_the_same_output(workdir):
    root, *_ = workdir
    assert predict(root, "stack.h5", "pages.tif", "--output", "out/serial.h5").returncode == 0
    done = predict(root, "stack.h5", "pages.tif", "--output", "out/mpi.h5", n=3)
    assert done.returncode == 0, done.stderr
    with h5py.File(root / "out/serial.h5", "r") as a, h5py.File(root / "out/mpi.h5", "r") as b:
        assert sorted(a["maps"]) == sorted(b["maps"]) and len(a["maps"]) == 9
        for key in a["maps"]:
            assert np.array_equal(a["maps"][key][()], b["maps"][key][()])
        order = lambda t: t[np.lexsort(t.T[::-1])]  # noqa: E731 - rows arrive in another order under MPI
        assert np.allclose(order(a["defects"][()]), order(b["defects"][()]))


@pytest.mark.slow
def test_an_existing_output_is_not_overwritten_without_asking(workdir):
    root, *_ = workdir
    assert predict(root, "one.png", "--output", "out/c.h5").returncode == 0
    before = (root / "out/c.h5").read_bytes()
    again = predict(root, "one.png", "--output", "out/c.h5")
    assert again.returncode == 2 and again.stderr.strip() == \
        "menndl: error: out/c.h5: exists; choose another --output or pass --overwrite"
    assert (root / "out/c.h5").read_bytes() == before
    assert predict(root, "one.png", "--output", "out/c.h5", "--overwrite").returncode == 0


def test_a_run_without_a_trained_network_is_a_clear_error(tmp_path):
    (tmp_path / "runs" / "empty").mkdir(parents=True)
    done = subprocess.run([MENNDL, "predict", "runs/empty", "x.png", "--output", "o.h5"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip() == \
        "menndl: error: runs/empty: not a run directory (no config.yaml)"


# ------------------------------------------------------------------------------------------------ the output

@pytest.fixture
def a_run(tmp_path):
    """A run directory as a search leaves it (config, results, checkpoint), with their contents."""
    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    files = {"config.yaml": "task: {name: stem_defects}\n", "results.csv": "id,status\n0,ok\n",
             "checkpoint.json": "{}"}
    for name, text in files.items():
        (run / name).write_text(text)
    return run, files


def _refusal(path, run_dir, overwrite=False) -> str:
    with pytest.raises(UserError) as info:
        Output(path, run_dir, {"genome": GENOME.canonical()}, ("lattice",), overwrite)
    assert "\n" not in str(info.value)
    return str(info.value)


def _tree(root) -> dict:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else os.readlink(p) if p.is_symlink() else None)
            for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("output", ["runs/r/results.hdf5", "runs/r/report/defects.h5"])
def test_an_output_inside_the_run_is_refused_and_its_results_untouched(a_run, tmp_path, monkeypatch, output):
    # 'menndl predict --output RUN/results.hdf5' truncated that run's results.csv
    run, _ = a_run
    monkeypatch.chdir(tmp_path)
    before = _tree(tmp_path)
    inside = f"--output {output}: inside the run directory {run}, which holds only what a search wrote; write " \
             "predictions elsewhere"
    if output.endswith("results.hdf5"):
        assert _refusal(Path(output), Path("runs/r")) == "runs/r/results.csv (the CSV written beside --output): " \
                                                         "exists; choose another --output or pass --overwrite"
    assert _refusal(Path(output), Path("runs/r"), overwrite=True) == inside
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("evidence", [("config.yaml", "results.csv"), ("config.yaml", "checkpoint.json")])
def test_an_output_inside_another_run_is_refused(a_run, tmp_path, evidence):
    other = tmp_path / "elsewhere" / "old-run"
    other.mkdir(parents=True)
    for name in evidence:
        (other / name).write_text("x")
    message = _refusal(other / "sub" / "p.h5", a_run[0])
    assert message.endswith(f"inside the run directory {other}, which holds only what a search wrote; write "
                            f"predictions elsewhere")
    assert not (other / "sub").exists()
    (other / evidence[1]).unlink()  # a config alone is no run: fine
    Output(other / "sub" / "p.h5", a_run[0], {"genome": GENOME.canonical()}, ("lattice",), False).close()


def test_the_csv_beside_the_output_is_checked_too(a_run, tmp_path):
    (tmp_path / "p.csv").write_text("mine\n")
    assert _refusal(tmp_path / "p.h5", a_run[0]) == \
        f"{tmp_path}/p.csv (the CSV written beside --output): exists; choose another --output or pass --overwrite"
    assert (tmp_path / "p.csv").read_text() == "mine\n" and not (tmp_path / "p.h5").exists()
    Output(tmp_path / "p.h5", a_run[0], {"genome": GENOME.canonical()}, ("lattice",), True).close()
    assert (tmp_path / "p.csv").read_text() == "image,source,y,x,class,confidence\n"


@pytest.mark.parametrize("link", ["p.h5", "p.csv"])
@pytest.mark.parametrize("dangling", [True, False])
def test_a_symbolic_link_is_never_written_through(a_run, tmp_path, link, dangling):
    target = tmp_path / "victim" / "target"
    target.parent.mkdir()
    if not dangling:
        target.write_text("precious")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / link).symlink_to(target)
    before = _tree(tmp_path)
    for overwrite in (False, True):
        assert _refusal(tmp_path / "out" / "p.h5", a_run[0], overwrite).startswith(
            f"{tmp_path}/out/{link}{' (the CSV written beside --output)' if link.endswith('csv') else ''}: is a "
            "symbolic link; outputs are written as new files, not through links")
    assert _tree(tmp_path) == before


def test_a_directory_or_a_wrong_suffix_as_output(a_run, tmp_path):
    (tmp_path / "d.h5").mkdir()
    assert _refusal(tmp_path / "d.h5", a_run[0], True) == f"{tmp_path}/d.h5: is a directory; choose another --output"
    assert _refusal(tmp_path / "new" / "p.txt", a_run[0]) == \
        f"--output: must name an .h5 file, got '{tmp_path}/new/p.txt'"
    assert not (tmp_path / "new").exists()
