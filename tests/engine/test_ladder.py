"""menndl_py.engine.ladder: asynchronous successive halving, decided from stored results alone."""
from menndl_py.engine.ladder import Ladder


def test_the_best_third_of_a_rung_is_promoted_as_soon_as_it_ranks_there():
    ladder = Ladder([1, 3, 9], eta=3, higher_is_better=False)
    ladder.record(0, 0, 0.5)
    ladder.record(1, 0, 0.4)
    assert list(ladder.promotions()) == []  # 2 results: the best third is no one yet
    ladder.record(2, 0, 0.9)
    assert list(ladder.promotions()) == [(1, 1)]
    ladder.sent(1, 1)
    assert list(ladder.promotions()) == []  # on its way: never twice
    for i, f in enumerate([0.95, 0.96, 0.3], start=3):
        ladder.record(i, 0, f)
    assert list(ladder.promotions()) == [(5, 1)]  # 6 results: the best two, one of them gone on already


def test_higher_rungs_first_and_higher_is_better():
    ladder = Ladder([1, 2, 4], eta=2, higher_is_better=True)
    for i, f in enumerate([0.1, 0.9, 0.5, 0.7]):
        ladder.record(i, 0, f)
    assert list(ladder.promotions()) == [(1, 1), (3, 1)]
    ladder.record(1, 1, 0.8)
    ladder.record(3, 1, 0.95)
    assert list(ladder.promotions())[0] == (3, 2)  # rung 1 before rung 0
    assert ladder.leader() == (3, 1)


def test_finishing_takes_the_leader_up_to_the_top_rung_once():
    ladder = Ladder([1, 3, 9], eta=3, higher_is_better=False)
    ladder.record(0, 0, 0.5)
    assert ladder.finishing() == (0, 1)  # ASHA would wait for two more results
    ladder.sent(0, 1)
    assert ladder.finishing() is None
    ladder.record(0, 1, 0.3)
    assert ladder.finishing() == (0, 2)
    ladder.sent(0, 2)
    ladder.record(0, 2, 0.2)
    assert ladder.finishing() is None and ladder.leader() == (0, 2)


def test_failures_and_the_top_rung_are_hopeless_the_far_behind_too():
    ladder = Ladder([1, 3], eta=3, higher_is_better=False)
    ladder.record(0, 0, None)
    assert ladder.hopeless(0)
    for i in range(1, 11):
        ladder.record(i, 0, i / 10)
    assert not ladder.hopeless(1) and not ladder.hopeless(8)  # 10 results: ranks below 2 * 3 + 2 = 8 kept
    assert ladder.hopeless(9) and ladder.hopeless(10)
    ladder.sent(1, 1)
    assert not ladder.hopeless(1)  # in flight to rung 1: its state is needed if it is sent again
    ladder.record(1, 1, 0.05)
    assert ladder.hopeless(1)  # at the top
    assert not ladder.hopeless(99)  # not stored yet


def test_the_runner_up_is_the_best_not_yet_promoted_of_the_highest_rung():
    ladder = Ladder([1, 3, 9], eta=3, higher_is_better=False)
    for i, f in enumerate([0.5, 0.4, 0.3]):
        ladder.record(i, 0, f)
    ladder.sent(2, 1)
    assert ladder.runner_up() == (1, 1)
    ladder.record(2, 1, 0.2)
    assert ladder.runner_up() == (2, 2)  # the highest rung first
    ladder.sent(2, 2)
    assert ladder.runner_up() == (1, 1)
