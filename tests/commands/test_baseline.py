"""`menndl baseline`: the hand-made baselines trained under a candidate's budget (the top rung's, with rungs) or
under a budget of seconds given for all of them, each row saying which."""
import json

import pytest
import yaml
from launchers import MENNDL, mpirun

from menndl_py.commands.baseline import baseline_config, run_baselines
from menndl_py.commands.common import format_baselines
from menndl_py.errors import UserError

TINY = {"train_size": 300, "val_size": 100, "test_size": 100, "forest_trees": 5}


def config(make_config, data_dir, **training):
    return make_config({"task": {"name": "elemnet", "data_dir": str(data_dir), "options": TINY},
                        "training": {"epochs": 1, **training}})


def test_a_budget_of_seconds_is_given_to_every_network_and_said(make_config, elemnet_data_dir, cpu):
    cfg = config(make_config, elemnet_data_dir)
    results = run_baselines(cfg, seconds=0.5)
    network = results["ElemNet-17 (Jha et al. 2018)"]
    assert network["status"] == "ok" and network["budget"].startswith("0.5 s, ")  # the epoch cap is lifted
    assert json.loads((cfg.run_dir / "baselines.json").read_text())["ElemNet-17 (Jha et al. 2018)"]["budget"] == \
        network["budget"]
    table = format_baselines(results, "mae", "eV/atom")
    assert "0.5 s, " in table and "fit in " in table  # the forest: how long it took to fit


def test_with_rungs_a_baseline_has_the_top_rung(make_config, elemnet_data_dir, cpu):
    cfg = config(make_config, elemnet_data_dir, epochs=5,
                 rungs={"unit": "epochs", "min_budget": 0.5, "max_budget": 2, "eta": 2})
    network = run_baselines(cfg)["ElemNet-17 (Jha et al. 2018)"]
    assert network["budget"].startswith("2 epochs (the top rung)") and network["epochs"] == 2


def test_a_baseline_trained_to_a_top_rung_of_seconds_has_a_timeout_above_it(make_config, elemnet_data_dir):
    """A candidate's time-out covers one step up the rungs; a baseline trains to the top rung in one go (it had
    timed out at 900 s on the way to a top rung of 1,080 s)."""
    cfg = make_config({"task": {"name": "elemnet", "data_dir": str(elemnet_data_dir), "options": TINY},
                       "training": {"epochs": 1000, "rungs": {"unit": "seconds", "min_budget": 120,
                                                              "max_budget": 1080, "eta": 3}},
                       "cluster": {"candidate_timeout": 900}})
    assert baseline_config(cfg).cluster.candidate_timeout == 2160
    assert baseline_config(cfg, seconds=600).cluster.candidate_timeout == 1200
    epochs = make_config({"training": {"epochs": 10, "rungs": {"unit": "epochs", "min_budget": 1, "max_budget": 9,
                                                               "eta": 3}}, "cluster": {"candidate_timeout": 50}})
    assert baseline_config(epochs).cluster.candidate_timeout == 50


def test_a_budget_must_be_positive(make_config, elemnet_data_dir):
    with pytest.raises(UserError, match="--budget: must be > 0 seconds, got 0"):
        run_baselines(config(make_config, elemnet_data_dir), seconds=0)


@pytest.mark.slow
@pytest.mark.mpi
def test_on_two_ranks_each_network_trains_on_both_and_rank_0_writes(tmp_path):
    options = {"size": 9, "train_volumes": 24, "val_volumes": 6, "test_volumes": 6}
    cfg = {"run": {"name": "h", "directory": "runs"}, "task": {"name": "homogenization", "options": options},
           "training": {"epochs": 2, "eval_batch_size": 8}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    out = mpirun(2, MENNDL, "baseline", "c.yaml", cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("training baseline ") == 1 and out.stdout.count("written to runs/h") == 1
    rows = json.loads((tmp_path / "runs" / "h" / "baselines.json").read_text())
    network = rows["3-D CNN (hand-designed, after Yang et al. 2018)"]
    assert network["status"] == "ok" and network["epochs"] == 2 and "2 ranks with Horovod" in network["budget"]
    assert network["test_mae_pct"] > 0 and rows["rule of mixtures (Voigt)"]["test_mae_pct"] > 0
