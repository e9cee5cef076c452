"""Multi-fidelity promotion (`training.rungs`) through the serial transport, with real training: a row per rung
under one id, continuation from the stored state, the winner at the top rung, resume in the middle of it."""
import json

import pytest
from test_master import N, interrupt, run

from menndl_py.commands.run import make_master
from menndl_py.engine.transport.serial import run_serial
from menndl_py.rundir.layout import RECORD

RUNGS = {"unit": "epochs", "min_budget": 0.25, "max_budget": 1.0, "eta": 2}  # rungs at 0.25, 0.5 and 1 epoch


def rung_setup(setup, rungs=None, **search):
    return setup(data={"training": {"epochs": 1, "rungs": rungs or RUNGS}}, **search)


def check_ladder(rows, top):
    """Every promoted row follows its own row one rung down, no (id, rung) twice, the first rung is new genomes."""
    seen = set()
    for row in rows:
        key = (row["id"], row["rung"])
        assert key not in seen
        assert row["rung"] == 0 or (row["id"], row["rung"] - 1) in seen
        seen.add(key)
    assert sorted(i for i, r in seen if r == 0) == list(range(N))
    assert any(r == top for _, r in seen)
    return seen


def test_promoted_candidates_continue_and_the_winner_stands_at_the_top_rung(setup):
    cfg, task, evaluator = rung_setup(setup)
    master = run(cfg, task, evaluator)
    rows = master.store.rows
    check_ladder(rows, top=2)
    assert len(rows) > N  # promotions are not counted against max_evaluations
    budgets = {0: 0.25, 1: 0.5, 2: 1.0}
    for row in rows:
        assert row["budget"] == budgets[row["rung"]]
        curve = json.loads(row["curve"])
        # counted from scratch, ended at the first step past the budget (at least 9 steps an epoch here)
        assert row["budget"] - 1e-6 <= curve[-1]["epoch"] <= row["budget"] + 1 / 9 + 1e-6
        if row["rung"] > 0:  # continued: it starts where its lower rung stopped
            assert curve[0]["epoch"] > budgets[row["rung"] - 1]
            assert row["origin"] in ("random", "offspring")
    top = [r for r in rows if r["rung"] == 2 and r["status"] == "ok"]
    best = min(top, key=lambda r: r["fitness"])
    assert master.best == (best["fitness"], best["id"], 2)
    record = json.loads((cfg.run_dir / "best" / RECORD).read_text())
    assert (record["id"], record["rung"]) == (best["id"], 2)
    states = {int(p.stem) for p in (cfg.run_dir / "states").glob("*.pt")}
    assert not states & {r["id"] for r in top}  # a candidate at the top is never promoted again
    assert len(states) < N


def test_a_search_stopped_mid_promotion_resumes_it_from_the_stored_state(setup):
    cfg, task, evaluator = rung_setup(setup)
    first, in_flight = interrupt(cfg, task, evaluator, 6)
    while in_flight.rung == 0:  # store on until a promotion is in flight
        first.on_result(evaluator.evaluate(in_flight))
        in_flight = first.next_work(group=0)
    assert in_flight.state is not None  # it continues: its lower rung's state went with it
    stored = [dict(r) for r in first.store.rows]
    # the job dies here

    second = make_master(cfg, task, 1, progress=False)
    work = second.next_work(group=0)
    assert (work.id, work.rung, work.budget) == (in_flight.id, in_flight.rung, in_flight.budget)
    assert work.state == in_flight.state
    second.on_result(evaluator.evaluate(work))
    run_serial(second, evaluator)
    second.close()
    assert second.store.rows[:len(stored)] == stored
    check_ladder(second.store.rows, top=2)


def test_a_promoted_candidate_whose_state_is_gone_trains_from_scratch(setup):
    cfg, task, evaluator = rung_setup(setup)
    first, in_flight = interrupt(cfg, task, evaluator, 6)
    while in_flight.rung == 0:
        first.on_result(evaluator.evaluate(in_flight))
        in_flight = first.next_work(group=0)
    (cfg.run_dir / "states" / f"{in_flight.id}.pt").unlink()
    second = make_master(cfg, task, 1, progress=False)
    work = second.next_work(group=0)
    assert work.id == in_flight.id and work.state is None
    second.on_result(evaluator.evaluate(work))
    row = second.store.rows[-1]
    assert (row["id"], row["rung"], row["status"]) == (work.id, work.rung, "ok")
    assert row["epochs"] == work.budget == 1.0  # a whole epoch, from the first step (continued: half of one)


def test_rungs_may_train_on_a_share_of_the_rows(setup):
    cfg, task, evaluator = rung_setup(setup, {"unit": "epochs", "min_budget": 1, "max_budget": 2, "eta": 2,
                                              "data": [0.25, 1.0]})
    seen = []
    augment = task.augment
    task.augment = lambda x, y, g: (seen.append(len(x)), augment(x, y, g))[1]
    master = make_master(cfg, task, 1, progress=False)
    work = master.next_work(group=0)
    master.on_result(evaluator.evaluate(work))
    rows = evaluator.trainer.data["train"][0].shape[0]
    assert sum(seen) == pytest.approx(0.25 * rows, rel=0.2)  # an epoch of a quarter of the rows

