"""benchmarks/peers.py: each search stops candidates early its own way, within the compute it is given."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import peers  # noqa: E402

from menndl_py import config  # noqa: E402
from menndl_py.search import make_search  # noqa: E402
from menndl_py.tasks.elemnet.task import ElemNetTask  # noqa: E402

BUDGETS = [1, 3, 9]


class Bench:
    """A stand-in for training: a fitness from the genes that improves with the rung, each epoch 1 s of compute."""

    def __init__(self, compute: float):
        self.compute, self.spent, self.log = compute, 0.0, []

    def __call__(self, genome, rung: int) -> peers.Trained:
        if self.spent >= self.compute:
            raise peers.Spent
        assert rung == 0 or (genome.key, rung - 1) in {(k, r) for k, r, _ in self.log}, "trained on without a state"
        self.spent += BUDGETS[rung] - (BUDGETS[rung - 1] if rung else 0)
        lr = genome.training["learning_rate"]
        fitness = abs(lr - 1e-3) * 10 + 0.01 * genome.depth + 0.3 / (1 + rung)
        self.log.append((genome.key, rung, fitness))
        return peers.Trained(fitness, [{"epoch": 1, "train_loss": fitness}])


def space():
    return ElemNetTask().space().restricted({"depth": [1, 4], "width": [16, 32, 64]})


def menndl(promotion: bool, algorithm: str = "ga"):
    s = config.build(config.SearchConfig, {"population": 6, "seed": 3, "algorithm": algorithm,
                                           "surrogate": algorithm == "ga", "surrogate_min_results": 6}, "search")
    return peers.MenndlSearch(make_search(s, space(), False, {}, promotion=promotion), BUDGETS, 3, promotion)


def rungs(log):
    return [sum(r == k for _, r, _ in log) for k in range(len(BUDGETS))]


def test_menndl_promotes_only_from_the_top_third_of_a_rung_and_stops_when_the_compute_is_spent():
    bench = Bench(200)
    menndl(promotion=True).run(bench)
    assert 200 <= bench.spent < 200 + BUDGETS[-1]
    seen: dict[int, list[float]] = {0: [], 1: []}
    for key, rung, fitness in bench.log:
        if rung > 0:
            below = next(f for k, r, f in bench.log if k == key and r == rung - 1)
            ranked = sorted(seen[rung - 1])
            assert below <= ranked[len(ranked) // 3 - 1], "promoted from outside the top third"
        if rung < 2:
            seen[rung].append(fitness)
    counts = rungs(bench.log)
    assert counts[0] > counts[1] > counts[2] > 0, counts


def test_without_promotion_every_genome_trains_to_the_top():
    bench = Bench(60)
    menndl(promotion=False, algorithm="random").run(bench)
    counts = rungs(bench.log)
    assert counts[0] == counts[2] and counts[0] >= 60 // BUDGETS[-1], counts


def test_optuna_hyperband_prunes_and_finishes_some():
    bench = Bench(150)
    method = peers.OptunaHyperband(space(), 0, BUDGETS, 3)
    method.run(bench)
    trials = method.summary()["trials"]
    assert trials.get("PRUNED", 0) > 0 and trials.get("COMPLETE", 0) > 0, trials
    assert rungs(bench.log)[0] > rungs(bench.log)[2]


def test_deephyper_successive_halving_stops_some_and_finishes_some(tmp_path):
    bench = Bench(120)
    method = peers.DeepHyperSH(space(), 0, str(tmp_path), BUDGETS, 3, n_initial_points=5, n_points=200)
    method.run(bench)
    counts = rungs(bench.log)
    assert method.summary()["stopped_early"] > 0 and counts[2] > 0 and counts[0] > counts[2], counts
