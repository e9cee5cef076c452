"""training.precision in the trainer, on tiny ElemNet data in one process (LocalGroup, CPU): bf16 and fp16
autocast train as well as fp32, fp16's gradient scaler skips overflowing steps and goes along with a stage's
state, and a precision the device cannot compute in is a one-line UserError."""
import io
import math

import pytest
import torch

from menndl_py.config import FaultConfig
from menndl_py.errors import UserError
from menndl_py.genome import Genome
from menndl_py.train.device import autocast
from menndl_py.train.group import LocalGroup
from menndl_py.train.trainer import Budget, Stage, Trainer

STEPS = 1500 // 64  # per epoch: 1500 training rows, batch 64


def genome(width=64, depth=2, batch_norm=False):
    layers = [{"width": width, "activation": "relu", "dropout": 0.0, "batch_norm": batch_norm}] * depth
    return Genome(layers, {"learning_rate": 5e-3, "batch_size": 64, "optimizer": "adam", "weight_decay": 0.0})


@pytest.fixture
def make_trainer(task, data, cpu):
    def make(precision, epochs=6, faults=FaultConfig()):
        return Trainer(task, task.space(), LocalGroup(), data, Budget(epochs, None, 60.0, precision=precision),
                       device=cpu, faults=faults)

    return make


@pytest.fixture(scope="module")
def fp32(task, data, cpu):
    return Trainer(task, task.space(), LocalGroup(), data, Budget(6, None, 60.0), device=cpu).evaluate(genome())


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_a_candidate_trains_as_well_as_in_fp32(make_trainer, data, fp32, precision):
    out = make_trainer(precision).evaluate(genome())
    assert out.status == "ok" and math.isfinite(out.fitness), out.message
    assert out.fitness != fp32.fitness  # the arithmetic did change...
    assert out.fitness == pytest.approx(fp32.fitness, rel=0.1), (out.fitness, fp32.fitness)  # ...but not the result
    (_, y_train), (_, y_val) = data["train"], data["val"]
    assert out.fitness < 0.8 * float((y_val - y_train.mean()).abs().mean())  # well below predicting the mean
    losses = [c["train_loss"] for c in out.curve]
    assert len(losses) == 6 and all(map(math.isfinite, losses)) and losses[-1] < 0.7 * losses[0]
    assert all(p.dtype == torch.float32 for p in out.model.parameters())  # weights stay in float32


def test_validation_is_scored_under_the_same_autocast(make_trainer, data, cpu):
    out = make_trainer("bf16", epochs=1).evaluate(genome(batch_norm=True))
    x, y = data["val"]
    out.model.eval()
    with torch.no_grad():
        with autocast(cpu, torch.bfloat16):
            prediction = out.model(x)
        mae = float((prediction.float().squeeze(-1).double() - y.double()).abs().mean())
        fp32_mae = float((out.model(x).squeeze(-1).double() - y.double()).abs().mean())
    assert out.fitness == pytest.approx(mae, rel=1e-9) and out.fitness != fp32_mae


def test_a_nonfinite_loss_still_fails_the_candidate_in_fp16(make_trainer):
    out = make_trainer("fp16", faults=FaultConfig(nonfinite=1.0)).evaluate(genome())
    assert out.status == "nonfinite" and out.fitness is None and "non-finite" in out.message


def _through_bytes(state: dict) -> dict:
    """A state as a promoted candidate gets it back: saved by its group, loaded with weights_only."""
    buf = io.BytesIO()
    torch.save(state, buf)
    return torch.load(io.BytesIO(buf.getvalue()), weights_only=True)


def test_the_fp16_scaler_goes_along_with_a_stage(make_trainer):
    trainer, g = make_trainer("fp16", epochs=10), genome(batch_norm=True)
    first = trainer.evaluate(g, stage=Stage("epochs", 1.0, keep=True))
    assert first.status == "ok" and set(first.state) == {"model", "optimizer", "epochs", "seconds", "scaler"}
    assert first.state["scaler"]["scale"] == 2.0 ** 16 and first.state["scaler"]["_growth_tracker"] == STEPS

    on = trainer.evaluate(g, stage=Stage("epochs", 2.0, state=_through_bytes(first.state), keep=True))
    assert on.status == "ok" and on.state["scaler"]["_growth_tracker"] == 2 * STEPS  # counting on: afresh, 1 * STEPS

    assert "scaler" not in make_trainer("bf16").evaluate(g, stage=Stage("epochs", 1.0, keep=True)).state
    assert "scaler" not in make_trainer("fp32").evaluate(g, stage=Stage("epochs", 1.0, keep=True)).state


def test_fp16_steps_that_overflow_are_skipped_and_training_goes_on(make_trainer):
    """A scale of 2**40 overflows fp16's gradients: the scaler skips those steps, halving the scale each time
    (it grows only after 2000 steps without one), until the gradients fit; the candidate trains on, its loss finite."""
    trainer, g = make_trainer("fp16", epochs=10), genome()
    first = trainer.evaluate(g, stage=Stage("epochs", 1.0, keep=True))
    state = _through_bytes(first.state)
    state["scaler"]["scale"] = 2.0 ** 40
    on = trainer.evaluate(g, stage=Stage("epochs", 3.0, state=state, keep=True))
    assert on.status == "ok" and math.isfinite(on.fitness), on.message
    skipped = 40 - math.log2(on.state["scaler"]["scale"])
    assert skipped == int(skipped) and 10 <= skipped < 2 * STEPS - 10  # most of the 2 epochs' steps did train
    assert on.fitness < first.fitness  # trained on after the skips


def test_a_precision_the_device_cannot_compute_in_is_a_one_line_error(task, data):
    with pytest.raises(UserError) as info:
        Trainer(task, task.space(), LocalGroup(), data, Budget(1, None, 60.0, precision="bf16"),
                device=torch.device("meta"))
    assert str(info.value) == f"training.precision: bf16 is not supported on meta by torch {torch.__version__}; " \
                              f"use fp32"
    # fp32 asks nothing of the device
    Trainer(task, task.space(), LocalGroup(), data, Budget(1, None, 60.0), device=torch.device("meta"))
