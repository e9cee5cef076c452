"""menndl_py.train.trainer on tiny ElemNet data in one process (LocalGroup, CPU): scores, guards, budgets."""
import math
import time

import pytest
import torch

from menndl_py.config import FaultConfig
from menndl_py.genome import Genome
from menndl_py.train.group import LocalGroup
from menndl_py.train.trainer import Budget, Stage, Trainer, fault_plan, inherit_weights


def layer(width=32, activation="relu", dropout=0.0, batch_norm=False):
    return {"width": width, "activation": activation, "dropout": dropout, "batch_norm": batch_norm}


def genome(depth=2, *, learning_rate=1e-3, optimizer="adam", batch_size=64, **layer_genes):
    return Genome([layer(**layer_genes)] * depth, {"learning_rate": learning_rate, "batch_size": batch_size,
                                                   "optimizer": optimizer, "weight_decay": 0.0})


@pytest.fixture
def make_trainer(task, data, cpu):
    def make(epochs=4, time_budget=None, timeout=60.0, seed=0, faults=FaultConfig()):
        return Trainer(task, task.space(), LocalGroup(), data, Budget(epochs, time_budget, timeout),
                       device=cpu, seed=seed, faults=faults)

    return make


def test_ok_candidate_beats_predicting_the_mean(make_trainer, data):
    out = make_trainer(epochs=6).evaluate(genome(width=64, learning_rate=5e-3))
    assert out.status == "ok" and out.message == ""
    assert math.isfinite(out.fitness) and out.fitness == out.metrics["val_mae"]
    assert set(out.metrics) == {"val_mae", "val_rmse"} and out.metrics["val_rmse"] >= out.metrics["val_mae"]
    (_, y_train), (_, y_val) = data["train"], data["val"]
    mean_mae = float((y_val - y_train.mean()).abs().mean())
    assert out.fitness < 0.8 * mean_mae, (out.fitness, mean_mae)  # about 0.33 against 0.55 eV/atom
    assert out.epochs == 6 and [c["epoch"] for c in out.curve] == [1, 2, 3, 4, 5, 6]
    assert all(math.isfinite(c["train_loss"]) for c in out.curve)
    assert out.curve[-1]["train_loss"] < out.curve[0]["train_loss"]
    assert 0 < out.train_seconds and out.curve[-1]["seconds"] <= out.train_seconds
    assert isinstance(out.model, torch.nn.Module)


def test_metrics_score_the_returned_model(make_trainer, data, task):
    out = make_trainer(epochs=1).evaluate(genome(batch_norm=True, dropout=0.1))
    x, y = data["val"]
    out.model.eval()
    with torch.no_grad():
        mae = float((out.model(x).squeeze(-1).double() - y.double()).abs().mean())
    assert out.fitness == pytest.approx(mae, rel=1e-6)


def test_injected_exception_is_an_error_result(make_trainer):
    out = make_trainer(faults=FaultConfig(exception=1.0)).evaluate(genome())
    assert out.status == "error" and out.fitness is None and out.model is None
    assert "injected fault: exception during training" in out.message and "\n" not in out.message


def test_injected_nonfinite_loss(make_trainer):
    out = make_trainer(faults=FaultConfig(nonfinite=1.0)).evaluate(genome())
    assert out.status == "nonfinite" and out.fitness is None and "non-finite" in out.message


def test_injected_hang_times_out(make_trainer):
    start = time.monotonic()
    out = make_trainer(epochs=1000, timeout=1.0, faults=FaultConfig(timeout=1.0)).evaluate(genome())
    took = time.monotonic() - start
    assert out.status == "timeout" and out.fitness is None
    assert out.message == "exceeded the candidate time-out of 1 s"
    assert took >= 1.0  # it ran until its time-out, and then stopped instead of sleeping on (1000 epochs)
    assert took < 60.0


def test_faults_are_off_by_default_and_shares_add_up():
    assert all(fault_plan(FaultConfig(), f"{i:016x}", 0) is None for i in range(200))
    plans = [fault_plan(FaultConfig(exception=0.2, nonfinite=0.3, timeout=0.1), f"{i:016x}", 0) for i in range(2000)]
    shares = {kind: plans.count(kind) / len(plans) for kind in ("exception", "nonfinite", "timeout", None)}
    assert shares["exception"] == pytest.approx(0.2, abs=0.04) and shares["nonfinite"] == pytest.approx(0.3, abs=0.04)
    assert shares["timeout"] == pytest.approx(0.1, abs=0.04) and shares[None] == pytest.approx(0.4, abs=0.04)


def test_huge_learning_rate_is_nonfinite(make_trainer):
    # elu is linear above zero, so weights blow up multiplicatively (a relu net would just die at a finite loss)
    out = make_trainer(epochs=3).evaluate(genome(3, activation="elu", learning_rate=1e6, optimizer="sgd"))
    assert out.status == "nonfinite" and out.fitness is None and out.model is None
    assert "non-finite" in out.message


def test_too_big_a_network_is_refused(make_trainer):
    out = make_trainer().evaluate(genome(9, width=1024))
    assert out.status == "refused" and "exceed the limit" in out.message and out.epochs == 0


def test_time_budget_stops_training_early(make_trainer):
    out = make_trainer(epochs=100_000, time_budget=0.5).evaluate(genome(batch_size=32))
    assert out.status == "ok" and math.isfinite(out.fitness)
    assert out.epochs >= 1 and out.epochs < 100_000 and len(out.curve) == out.epochs
    assert 0.5 <= out.train_seconds < 0.5 + 1.5


def test_same_seed_same_fitness(make_trainer):
    g = genome(2, dropout=0.2, batch_norm=True)
    first, again = make_trainer(epochs=2).evaluate(g), make_trainer(epochs=2).evaluate(g)
    assert first.status == again.status == "ok"
    assert first.fitness == again.fitness and first.curve[-1]["train_loss"] == again.curve[-1]["train_loss"]
    for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)
    assert make_trainer(epochs=2, seed=1).evaluate(g).fitness != first.fitness  # the seed matters


def test_cosine_schedule_takes_the_learning_rate_down_to_zero_along_the_budget(make_trainer, monkeypatch):
    import dataclasses

    from menndl_py.train import trainer as trainer_module

    used, real = [], trainer_module.make_optimizer

    def recording(*args, **kwargs):
        optimizer = real(*args, **kwargs)
        step = optimizer.step
        optimizer.step = lambda *a, **k: (used.append(optimizer.param_groups[0]["lr"]), step(*a, **k))[1]
        return optimizer

    monkeypatch.setattr(trainer_module, "make_optimizer", recording)
    cosine = make_trainer(epochs=4)
    cosine.budget = dataclasses.replace(cosine.budget, lr_schedule="cosine")
    assert cosine.evaluate(genome(learning_rate=1e-3)).status == "ok"
    assert used[0] == 1e-3 and used == sorted(used, reverse=True) and used[-1] < 0.01e-3
    quarter = used[len(used) // 4 + 8]  # after a quarter of the steps and the next agreement
    assert 0.5e-3 < quarter < 1e-3
    used.clear()
    assert make_trainer(epochs=2).evaluate(genome(learning_rate=1e-3)).status == "ok"
    assert set(used) == {1e-3}


def test_a_failure_while_scoring_is_the_candidates_result(task, data, cpu):
    """Scoring is agreed on like every other phase: an error there is a result with its message, not a crash."""
    class Failing(type(task)):
        def metric_sums(self, prediction, target):
            raise MemoryError("while scoring")

    failing = Failing({"train_size": 1500, "val_size": 500}, task.data_dir)
    out = Trainer(failing, failing.space(), LocalGroup(), data, Budget(1, None, 60.0), device=cpu).evaluate(genome())
    assert out.status == "oom" and out.message == "MemoryError: while scoring" and out.model is None


def test_a_failing_step_ends_the_candidate_at_the_next_agreement(task, data, cpu):
    """A training step that raises is not retried: the rank joins the group's steps without a gradient of its own
    until the next agreement point, where the candidate fails with that step's error."""
    steps = []

    class Failing(type(task)):
        def augment(self, x, y, generator):
            steps.append(1)
            if len(steps) == 3:
                raise RuntimeError("in step 3")
            return x, y

    failing = Failing({"train_size": 1500, "val_size": 500}, task.data_dir)
    out = Trainer(failing, failing.space(), LocalGroup(), data, Budget(5, None, 60.0), device=cpu).evaluate(genome())
    assert out.status == "error" and out.message == "RuntimeError: in step 3"
    assert len(steps) == 3  # the later steps of the rank that failed compute nothing


def test_a_stage_goes_on_from_its_state_to_a_budget_counted_from_scratch(make_trainer):
    trainer, g = make_trainer(epochs=10), genome(width=64, batch_norm=True, optimizer="adamw")
    first = trainer.evaluate(g, stage=Stage("epochs", 1.5, keep=True))
    assert first.status == "ok" and first.epochs == 1 and first.state["epochs"] == pytest.approx(1.5, abs=0.05)
    assert [c["epoch"] for c in first.curve][0] == 1 and first.curve[-1]["epoch"] == first.state["epochs"]
    assert set(first.state["optimizer"]["state"])  # Adam's moments go along

    on = trainer.evaluate(g, stage=Stage("epochs", 3.0, state=first.state, keep=True))
    assert on.curve[0]["epoch"] == pytest.approx(first.state["epochs"] + 1, abs=1e-5)  # a whole pass, then part
    assert on.state["epochs"] == pytest.approx(3.0, abs=0.05)
    assert on.curve[0]["seconds"] > first.state["seconds"]  # seconds go on counting too

    again = trainer.evaluate(g, stage=Stage("epochs", 1.5, state=first.state))  # already there: nothing to train
    assert again.curve == [] and again.fitness == first.fitness and again.state is None
    scratch = trainer.evaluate(g, stage=Stage("epochs", 1.5))
    assert scratch.fitness == first.fitness  # training is deterministic; a stage from scratch is the same training


def test_inheriting_copies_the_tensors_whose_name_and_shape_match(task):
    space = task.space()
    parent = space.build(genome(depth=2, width=32))
    child = space.build(genome(depth=3, width=32))  # a layer more: the input layer and the first hidden match
    before = {k: v.clone() for k, v in child.state_dict().items()}
    copied = inherit_weights(child, parent.state_dict())
    own, theirs = child.state_dict(), parent.state_dict()
    same = [k for k in own if torch.equal(own[k], theirs.get(k, torch.empty(0)))]
    assert copied == len(same) > 0
    assert all(theirs[k].shape == own[k].shape for k in same)
    assert any(torch.equal(own[k], before[k]) for k in own if k not in same)  # the rest keeps its fresh values


def test_a_new_candidate_with_an_inherited_parent_starts_where_the_parent_ended(make_trainer):
    trainer = make_trainer(epochs=10)
    parent = trainer.evaluate(genome(width=64), stage=Stage("epochs", 3.0, keep=True))
    assert parent.status == "ok"
    child = genome(width=64, learning_rate=3e-4)  # the parent's layers, another gene
    inherited = trainer.evaluate(child, stage=Stage("epochs", 0.25, inherit=parent.state["model"]))
    scratch = trainer.evaluate(child, stage=Stage("epochs", 0.25))
    assert inherited.curve[-1]["epoch"] == scratch.curve[-1]["epoch"]  # the same training, from other weights
    assert inherited.fitness < 0.9 * scratch.fitness, (inherited.fitness, scratch.fitness)


def test_a_stage_in_seconds_stops_on_time_and_keeps_the_epoch_cap(make_trainer):
    out = make_trainer(epochs=2).evaluate(genome(), stage=Stage("seconds", 3600.0, keep=True))
    assert out.state["epochs"] == pytest.approx(2.0) and out.epochs == 2  # the cap, long before the hour
    short = make_trainer(epochs=1000).evaluate(genome(), stage=Stage("seconds", 0.3, keep=True))
    assert short.status == "ok" and 0.3 <= short.state["seconds"] and short.state["epochs"] < 1000
