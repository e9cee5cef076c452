"""menndl_py.engine.master through the serial transport, in process: storage, the best model, resume, determinism."""
import csv
import json

import pytest
import torch

from menndl_py.commands.run import make_master
from menndl_py.engine.master import Master
from menndl_py.engine.transport.serial import run_serial
from menndl_py.genome import Genome
from menndl_py.records import Result
from menndl_py.rundir import read_checkpoint
from menndl_py.rundir.layout import SURROGATE_COLUMNS

N = 10
TINY_OPTIONS = {"train_size": 600, "val_size": 300, "test_size": 300}  # seconds per run on two shared cores


def search_config(data_dir, **search):
    """ElemNet on tiny data, a small space, one short epoch per candidate, the surrogate on."""
    return {
        "task": {"name": "elemnet", "data_dir": str(data_dir), "options": TINY_OPTIONS},
        "search": {"population": 4, "max_evaluations": N, "surrogate": True, "surrogate_min_results": 4,
                   "surrogate_refit_every": 2, "screen_factor": 4, "seed": 5,
                   "space": {"depth": [1, 2], "width": [16, 32, 64], "batch_size": [32, 64]}, **search},
        "cluster": {"candidate_timeout": 60},
        "training": {"epochs": 1},
    }


def run(cfg, task, evaluator) -> Master:
    master = make_master(cfg, task, 1, progress=False)
    run_serial(master, evaluator)
    master.close()
    return master


def read_rows(run_dir):
    with open(run_dir / "results.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_a_run_stores_every_evaluation_and_the_best_model(setup):
    cfg, task, evaluator = setup()
    master = run(cfg, task, evaluator)
    rows = master.store.rows
    assert len(rows) == N
    assert sorted(r["id"] for r in rows) == list(range(N))
    assert len({r["genome_hash"] for r in rows}) == N
    assert all(r["status"] == "ok" and r["fitness"] is not None for r in rows)
    for r in rows:
        genome = Genome.from_json(r["genome"])
        assert genome.key == r["genome_hash"] and r["depth"] == genome.depth and r["epochs"] == 1
        assert r["fitness"] == r["m:val_mae"] and r["submit_time"] <= r["start_time"] <= r["end_time"]
        assert (r["params"], r["flops"]) == master.search.space.cost(genome)
    assert [r["origin"] for r in rows[:4]] == ["random"] * 4 and all(r["origin"] == "offspring" for r in rows[4:])
    assert all(r["parents"] for r in rows[4:])
    for r in rows[4:]:  # parents are earlier evaluations
        assert all(int(p) < r["id"] for p in r["parents"].split(";"))
    assert any(r["predicted"] is not None for r in rows)  # the surrogate took part
    assert len(read_rows(cfg.run_dir)) == N  # the CSV holds them too

    best = min(rows, key=lambda r: r["fitness"])
    assert master.best == (best["fitness"], best["id"], 0)
    genome = Genome.from_json(json.loads((cfg.run_dir / "best" / "genome.json").read_text()))
    assert genome.key == best["genome_hash"]
    result = json.loads((cfg.run_dir / "best" / "result.json").read_text())
    assert result["id"] == best["id"] and result["fitness"] == best["fitness"]
    model = master.search.space.build(genome)
    model.load_state_dict(torch.load(cfg.run_dir / "best" / "model.pt", weights_only=True))
    x, y = (torch.as_tensor(a) for a in task.load("val"))
    model.eval()
    with torch.no_grad():
        mae = float((model(x).squeeze(-1).double() - y.double()).abs().mean())
    assert mae == pytest.approx(best["fitness"], rel=1e-6)  # the stored weights are the best network's

    checkpoint = read_checkpoint(cfg.run_dir / "checkpoint.json")
    assert checkpoint["finished"] is True and checkpoint["in_flight"] == [] and checkpoint["next_id"] == N
    assert checkpoint["fingerprint"] == cfg.fingerprint()
    with open(cfg.run_dir / "surrogate.csv", newline="") as fh:
        log = list(csv.DictReader(fh))
    assert log and list(log[0]) == SURROGATE_COLUMNS
    assert [int(r["refit"]) for r in log] == list(range(1, len(log) + 1))


def test_failures_are_stored_and_never_win(setup):
    cfg, task, evaluator = setup(data={"debug": {"inject_faults": {"exception": 0.4}}})
    master = run(cfg, task, evaluator)
    rows = master.store.rows
    failed = [r for r in rows if r["status"] != "ok"]
    assert len(rows) == N and failed and len(failed) < N
    assert all(r["status"] == "error" and r["fitness"] is None and "injected fault" in r["message"] for r in failed)
    best = json.loads((cfg.run_dir / "best" / "result.json").read_text())
    assert best["status"] == "ok" and best["id"] not in {r["id"] for r in failed}
    assert not {r["genome_hash"] for r in failed} & {m.genome.key for m in master.search.population}


def interrupt(cfg, task, evaluator, k):
    """Store k results, send one more genome, and die. Returns (the Master left behind, the work in flight)."""
    first = make_master(cfg, task, 1, progress=False)
    for _ in range(k):
        first.on_result(evaluator.evaluate(first.next_work(group=0)))
    return first, first.next_work(group=0)


@pytest.mark.parametrize("k", [0, 5])
def test_interrupted_run_resumes(setup, k):
    cfg, task, evaluator = setup()
    first, in_flight = interrupt(cfg, task, evaluator, k)
    stored = [dict(r) for r in first.store.rows]
    # the job dies: no close(), and `first` keeps its files open, as a killed process would have them

    second = make_master(cfg, task, 1, progress=False)
    assert second.store.rows == stored and len(stored) == k
    work = second.next_work(group=0)
    assert work.id == in_flight.id == k
    assert Genome.from_json(work.genome) == Genome.from_json(in_flight.genome)
    assert (work.parents, work.origin) == (in_flight.parents, in_flight.origin)
    second.on_result(evaluator.evaluate(work))
    run_serial(second, evaluator)
    second.close()

    rows = second.store.rows
    assert rows[:k] == stored
    assert len(rows) == N == len(read_rows(cfg.run_dir))
    assert sorted(r["id"] for r in rows) == list(range(N))
    assert len({r["genome_hash"] for r in rows}) == N
    assert read_checkpoint(cfg.run_dir / "checkpoint.json")["finished"] is True


def test_resuming_a_finished_run_does_nothing(setup):
    cfg, task, evaluator = setup()
    run(cfg, task, evaluator)
    before = (cfg.run_dir / "results.csv").read_bytes()
    again = make_master(cfg, task, 1, progress=False)
    assert again.next_work(group=0) is None and again.done
    again.close()
    assert (cfg.run_dir / "results.csv").read_bytes() == before


def test_same_seed_same_history(setup):
    histories = []
    for name in ("a", "b"):
        cfg, task, evaluator = setup(name)
        master = run(cfg, task, evaluator)
        histories.append([(r["genome_hash"], r["parents"], r["fitness"], r["predicted"]) for r in master.store.rows])
    assert histories[0] == histories[1]
    cfg, task, evaluator = setup("c", seed=6)
    other = [r["genome_hash"] for r in run(cfg, task, evaluator).store.rows]
    assert other != [h[0] for h in histories[0]]


def test_without_surrogate_a_resumed_run_repeats_the_uninterrupted_one(setup):
    # the GA is rebuilt from the stored rows plus the checkpoint (random state, genomes in flight); with no
    # surrogate (whose refits restart on resume) nothing else decides the proposals
    cfg, task, evaluator = setup("whole", surrogate=False)
    whole = [r["genome_hash"] for r in run(cfg, task, evaluator).store.rows]
    cfg, task, evaluator = setup("interrupted", surrogate=False)
    dead, _ = interrupt(cfg, task, evaluator, 6)  # kept: its files stay open, as in a killed job
    resumed = run(cfg, task, evaluator)
    assert [r["genome_hash"] for r in resumed.store.rows] == whole


def test_random_search_runs_behind_the_same_master_and_resumes_the_same(setup):
    cfg, task, evaluator = setup("random-whole", algorithm="random")
    whole = run(cfg, task, evaluator).store.rows
    assert len(whole) == N and {r["origin"] for r in whole} == {"random"}
    assert all(r["predicted"] is None and r["parents"] == "" for r in whole)
    assert not (cfg.run_dir / "surrogate.csv").exists()
    cfg, task, evaluator = setup("random-interrupted", algorithm="random")
    dead, _ = interrupt(cfg, task, evaluator, 4)  # kept: its files stay open, as in a killed job
    assert [r["genome_hash"] for r in run(cfg, task, evaluator).store.rows] == [r["genome_hash"] for r in whole]


def test_a_space_with_fewer_genomes_than_the_budget_ends_the_run_cleanly(setup):
    one_genome = {"depth": [1, 1], "width": [16], "activation": ["relu"], "dropout": [0.0], "batch_norm": [False],
                  "learning_rate": [1e-3], "batch_size": [32], "optimizer": ["adam"], "weight_decay": [0.0],
                  "inputs": ["fractions"]}
    cfg, task, evaluator = setup(space=one_genome, surrogate=False)
    master = run(cfg, task, evaluator)
    assert len(read_rows(cfg.run_dir)) == 1
    assert "exhausted" in master.exhausted
    assert read_checkpoint(cfg.run_dir / "checkpoint.json")["finished"] is True


def test_the_checkpoint_is_a_journal_line_per_genome_compacted_off_the_reply_path(make_config, monkeypatch):
    """Many groups in flight: sending a genome appends one line (checkpoint.json is not rewritten); catch_up
    compacts the journal now and then; a kill at any point resumes with every genome in flight."""
    from types import SimpleNamespace

    from menndl_py.engine import master as master_module
    from menndl_py.tasks.synthetic import SyntheticTask

    monkeypatch.setattr(master_module, "JOURNAL_LINES", 20)
    cfg = make_config({"task": {"name": "synthetic"}, "search": {"max_evaluations": 200, "seed": 2}})
    cfg.run_dir.mkdir(parents=True)
    task = SyntheticTask()
    trainer = SimpleNamespace(space=task.space())

    def answer(work):
        out = task.evaluate(Genome.from_json(work.genome), trainer)
        return Result(work.id, out.status, out.fitness, out.metrics, "", 1, 0.0, [], 0.0, 0.0, "h", 1)

    master = make_master(cfg, task, 30, progress=False)
    flight = [master.next_work(g) for g in range(30)]
    snapshot = (cfg.run_dir / "checkpoint.json").stat().st_mtime_ns
    for _ in range(40):  # results and replies, no deferred work: only the journal grows
        work = flight.pop(0)
        master.on_result(answer(work))
        flight.append(master.next_work(work.group))
    assert (cfg.run_dir / "checkpoint.json").stat().st_mtime_ns == snapshot
    assert master.checkpoints.lines == 29 + 40
    while master.catch_up():
        pass
    assert master.checkpoints.lines == 0  # compacted: over max(JOURNAL_LINES, 2 x 30 in flight)
    for _ in range(10):
        work = flight.pop(0)
        master.on_result(answer(work))
        flight.append(master.next_work(work.group))
    stored = {r["id"] for r in master.store.rows}
    # killed here (no close): the resumed master sends exactly the genomes in flight again, under their ids
    resumed = make_master(cfg, task, 30, progress=False)
    assert {w.id for w in resumed.resend} == {w.id for w in flight}
    assert not stored & {w.id for w in resumed.resend} and resumed.next_id == master.next_id
    resumed.close()
