"""menndl_py.search.surrogate: an SVR that ranks genomes, an SVC that flags failures, a bounded training set and
a log that scores each refit out of sample."""
import random
import warnings

import numpy as np
import pytest
from scipy.stats import spearmanr

from menndl_py.errors import CandidateRefused
from menndl_py.search import Surrogate
from menndl_py.tasks.elemnet.task import ElemNetTask

SPACE = ElemNetTask().space()


def landscape(x) -> float:
    """A learnable function of the features (lower is better)."""
    return float(np.sum((x[3:] - 0.35) ** 2) + 0.02 * (x[0] - 6) ** 2)


def features(n, seed):
    """n genomes' features, sampled as the GA samples them (skipping those over the parameter limit)."""
    rng, out = random.Random(seed), []
    while len(out) < n:
        try:
            out.append(SPACE.features(SPACE.sample(rng)))
        except CandidateRefused:
            pass
    return out


@pytest.mark.parametrize("higher_is_better", [False, True])
def test_ranks_held_out_genomes(higher_is_better):
    xs = features(200, seed=0)
    sign = 1.0 if higher_is_better else -1.0  # so that "better" is the same genomes either way
    s = Surrogate(higher_is_better, min_results=8, max_train=256, refit_every=1000)
    for x in xs[:150]:
        s.observe(x, sign * landscape(x))
    assert s.ready  # fitted once at min_results
    s.refit()
    predicted, flagged = s.predict(np.stack(xs[150:]))
    actual = [sign * landscape(x) for x in xs[150:]]
    assert spearmanr(predicted, actual).statistic > 0.7
    assert not flagged.any()  # nothing ever failed: no classifier, no flags
    # predictions are in fitness units: within the range of the training fitness
    train = [sign * landscape(x) for x in xs[:150]]
    assert min(train) <= predicted.min() and predicted.max() <= max(train)
    # choose() picks the best predicted row
    best, value = s.choose(np.stack(xs[150:]))
    assert value == (predicted.max() if higher_is_better else predicted.min()) and predicted[best] == value


def test_classifier_flags_a_region_that_always_fails():
    xs = features(200, seed=1)
    deep = [x[0] > 12 for x in xs]  # every network deeper than 12 layers fails
    s = Surrogate(False, min_results=8, refit_every=1000)
    for x, fail in zip(xs[:150], deep[:150]):
        s.observe(x, None if fail else landscape(x))
    s.refit()
    _, flagged = s.predict(np.stack(xs[150:]))
    truth = np.array(deep[150:])
    assert truth.any() and (~truth).any()
    assert (flagged == truth).mean() > 0.8
    assert flagged[truth].mean() > 0.8 and (~flagged[~truth]).mean() > 0.8
    # a flagged row is chosen only if every row is flagged
    pool = np.stack(xs[150:])
    best, _ = s.choose(pool)
    assert not flagged[best]


def test_training_set_is_capped():
    xs = features(60, seed=2)
    fitness = [None if i % 3 == 0 else landscape(x) for i, x in enumerate(xs)]  # 54 and 57 among the recent
    s = Surrogate(False, min_results=8, max_train=16, refit_every=1)
    for x, f in zip(xs, fitness):
        s.observe(x, f)
    assert s.log[-1]["n_train"] == 16 and s.log[-1]["n_results"] == 60
    rows = s._training_rows()
    assert len(rows) == 16 and len(set(rows)) == 16
    ok = [i for i, f in enumerate(fitness) if f is not None]
    best_half = sorted(ok, key=lambda i: fitness[i])[:8]
    assert set(best_half) <= set(rows)  # the best half ...
    assert 59 in rows and 58 in rows  # ... and the most recent
    # the models were fitted on those rows only
    n_ok = sum(fitness[i] is not None for i in rows)
    assert s.regressor.shape_fit_[0] == n_ok
    assert s.classifier is not None and s.classifier.shape_fit_[0] == 16


def test_training_rows_match_a_full_sort_over_a_long_history():
    # the best half is kept incrementally (a heap): the same rows as sorting the whole history, ties included
    rng = random.Random(10)
    s = Surrogate(True, min_results=8, max_train=32, refit_every=10**9)
    for i in range(500):
        f = None if rng.random() < 0.2 else float(rng.randint(0, 40))  # many equal fitnesses
        s.observe(np.zeros(3) + i, f, refit=False)
        if i % 37 == 0 or i == 499:
            ok = [j for j, v in enumerate(s.fitness) if v is not None]
            chosen = set(sorted(ok, key=lambda j: -s.fitness[j])[:16])
            j = len(s.x) - 1
            while len(s.x) > 32 and len(chosen) < 32:
                chosen.add(j)
                j -= 1
            expected = sorted(chosen) if len(s.x) > 32 else list(range(len(s.x)))
            assert s._training_rows().tolist() == expected


def test_numpy_predictions_equal_sklearns():
    xs = features(160, seed=11)
    s = Surrogate(False, min_results=8, refit_every=1000)
    for x in xs[:120]:
        s.observe(x, None if x[0] > 12 else landscape(x))
    s.refit()
    pool = np.stack(xs[120:])
    rank = np.clip(s.regressor.predict((pool - s._fitness_model.mean) / s._fitness_model.scale), 0, 1)
    np.testing.assert_allclose(s.predict(pool)[0], -np.quantile(s.y_sorted, rank), rtol=0, atol=1e-8)
    z = (pool - s._failure_model.mean) / s._failure_model.scale
    np.testing.assert_allclose(s._failure_model.decision(pool), s.classifier.decision_function(z), atol=1e-8)
    assert (s.predict(pool)[1] == s.classifier.predict(z)).all() and s.predict(pool)[1].any()


def test_log_rows_count_refits_and_score_them_out_of_sample():
    xs = features(40, seed=3)
    s = Surrogate(False, min_results=4, max_train=256, refit_every=4)
    closed = [s.observe(x, landscape(x)) for x in xs[:4]]
    assert closed == [None] * 4  # the first refit closes nothing
    assert s.ready and len(s.log) == 1
    first = s.log[0]
    assert (first["refit"], first["n_results"], first["n_train"], first["spearman"], first["n_scored"]) == \
        (1, 4, 4, None, 0)
    assert first["fit_seconds"] >= 0

    closed = [s.observe(x, landscape(x)) for x in xs[4:8]]
    assert closed[:3] == [None] * 3 and closed[3] is first  # the second refit closes the first row
    assert first["n_scored"] == 4 and -1.0 <= first["spearman"] <= 1.0
    assert [row["refit"] for row in s.log] == [1, 2] and s.log[1]["n_results"] == 8

    rhos = []
    for x in xs[8:]:
        row = s.observe(x, landscape(x))
        if row is not None:
            rhos.append(row["spearman"])
    assert [row["refit"] for row in s.log] == list(range(1, 11))
    assert len(rhos) == 8 and all(r is not None for r in rhos)
    assert s.log[-2]["n_scored"] == 32  # the last 32 results, each predicted on arrival: 36 were, the window holds 32
    assert np.mean(rhos) > 0.3  # it learns something: out-of-sample rank correlation is positive


def test_fewer_than_three_scored_results_give_no_spearman():
    xs = features(12, seed=4)
    s = Surrogate(False, min_results=4, refit_every=4)
    for x in xs[:4]:
        s.observe(x, landscape(x))
    # two successes and two failures since the refit: only the successes are scored
    rows = [s.observe(x, f) for x, f in zip(xs[4:8], (landscape(xs[4]), None, landscape(xs[6]), None))]
    closed = rows[-1]
    assert closed is not None and closed["n_scored"] == 2 and closed["spearman"] is None


def test_constant_predictions_give_no_spearman_and_no_warning():
    x = features(1, seed=9)[0]
    s = Surrogate(False, min_results=4, refit_every=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy's ConstantInputWarning used to be printed at such refits
        rows = [s.observe(x, float(i)) for i in range(8)]  # one genome's features: the SVR predicts a constant
    closed = rows[-1]
    assert closed is not None and closed["n_scored"] == 4 and closed["spearman"] is None


def test_replay_then_restart():
    xs = features(30, seed=5)
    s = Surrogate(False, min_results=8, refit_every=4)
    for x in xs:
        assert s.observe(x, landscape(x), refit=False) is None  # replaying a stored history
    assert not s.ready and s.log == []
    s.restart()
    assert s.ready and s.log == []
    # going on after a restart: the log starts afresh at refit 1
    s.observe(xs[0] * 1.01, 1.0)
    for x in features(8, seed=6):
        s.observe(x, landscape(x))
    assert [row["refit"] for row in s.log] == [1, 2]


def test_restart_clears_the_log():
    xs = features(24, seed=7)
    s = Surrogate(False, min_results=4, refit_every=4)
    for x in xs:
        s.observe(x, landscape(x))
    assert len(s.log) == 6
    s.restart()
    assert s.log == [] and s.ready and not s._scored


def test_restart_with_too_few_results_stays_unready():
    s = Surrogate(False, min_results=8)
    for x in features(5, seed=8):
        s.observe(x, landscape(x), refit=False)
    s.restart()
    assert not s.ready and s.log == []
