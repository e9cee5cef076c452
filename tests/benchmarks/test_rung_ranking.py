"""benchmarks/rung_ranking.py: per rung, how its ranking agrees with the top rung's."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from rung_ranking import ranking  # noqa: E402


def test_a_rung_that_reverses_the_top_ranking_is_said_to():
    # four networks, lower is better; rung 0 ranks them in reverse, rung 1 as the top rung does
    fitness = [[0.4, 0.5, 0.4], [0.3, 0.6, 0.5], [0.2, 0.7, 0.6], [0.1, 0.8, 0.7]]
    rows = ranking(fitness, eta=2, higher_is_better=False)
    assert rows[0]["spearman"] == pytest.approx(-1.0) and not rows[0]["picks_top_best"]
    assert rows[0]["regret"] == pytest.approx(0.7 - 0.4) and rows[0]["kept_share"] == 0.0
    assert rows[1]["spearman"] == pytest.approx(1.0) and rows[1]["picks_top_best"]
    assert rows[1]["regret"] == 0.0 and rows[1]["kept_share"] == 1.0


def test_higher_is_better_ranks_the_other_way():
    rows = ranking([[0.9, 0.8], [0.1, 0.2], [0.5, 0.5]], eta=3, higher_is_better=True)
    assert rows[0]["picks_top_best"] and rows[0]["regret"] == 0.0
