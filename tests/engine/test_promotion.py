"""Multi-fidelity promotion (`training.rungs`) through the serial transport, with real training: a row per rung
under one id, continuation from the stored state, the winner at the top rung, resume in the middle of it."""
import json

import pytest
from test_master import N, interrupt, run

from menndl_py.commands.run import make_master
from menndl_py.engine.transport.serial import run_serial
from menndl_py.rundir import read_checkpoint
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



@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("minutes", [12, 20])
def test_with_rungs_in_seconds_the_winner_reaches_the_top_rung_within_the_time(make_config, cpu, seed, minutes):
    """The time kept back for the leader's climb is kept: the search ends within `search.max_minutes` with its
    winner at the top rung (a clock the test moves by each training's budget; no training)."""
    from menndl_py.engine.evaluator import Evaluator
    from menndl_py.tasks.synthetic import SyntheticTask
    from menndl_py.train.group import LocalGroup

    cfg = make_config({"task": {"name": "synthetic"}, "search": {"max_minutes": minutes, "seed": seed, "population": 4},
                       "training": {"rungs": {"unit": "seconds", "min_budget": 10, "max_budget": 270, "eta": 3}}})
    cfg.run_dir.mkdir(parents=True)
    task, now = SyntheticTask(), [0.0]
    evaluator = Evaluator(cfg, task, LocalGroup(), cpu)
    master = make_master(cfg, task, 1, progress=False, clock=lambda: now[0])
    budgets = cfg.training.rungs.budgets
    while (work := master.next_work(group=0)) is not None:
        now[0] += work.budget - (budgets[work.rung - 1] if work.rung else 0.0)
        master.on_result(evaluator.evaluate(work))
    master.close()
    assert now[0] <= minutes * 60
    assert master.best[2] == len(budgets) - 1, "the winner stopped below the top rung"


def test_with_inherit_offspring_start_from_their_first_parents_state(setup):
    """`search.inherit`: a new offspring carries its first parent's stored state; the states of the population
    (any parent to be) are kept, at the top rung too; a resumed run sends the offspring in flight with it again."""
    cfg, task, evaluator = rung_setup(setup, inherit=True)
    first = make_master(cfg, task, 1, progress=False)
    inherited = 0
    while (work := first.next_work(group=0)) is not None and not (inherited and work.parents and work.rung == 0):
        if work.rung == 0 and work.parents:
            assert work.inherit is not None and work.inherit == first.states.load(work.parents[0])
            inherited += 1
        else:
            assert work.inherit is None
        first.on_result(evaluator.evaluate(work))
        while first.catch_up():
            pass
        assert {first.ids[key] for key in first.search.parents()} <= first.states.ids
    assert inherited and work.inherit is not None
    assert any(first.ladder.reached[i] == 2 for i in first.states.ids)  # a population member at the top rung
    # the job dies with an offspring in flight

    second = make_master(cfg, task, 1, progress=False)
    again = second.next_work(group=0)
    assert again.id == work.id and again.inherit == work.inherit
    assert "inherit" not in json.dumps(read_checkpoint(cfg.run_dir / "checkpoint.json"))  # never journalled
    second.on_result(evaluator.evaluate(again))
    run_serial(second, evaluator)
    second.close()
    check_ladder(second.store.rows, top=2)
