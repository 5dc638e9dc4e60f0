"""bench/emulation/stopping.py: where each criterion fires in one run's records (hand-made series)."""
from __future__ import annotations

from bench.emulation.stopping import fired_at, near_best_iteration, stopping_markdown

ST = {"stop_window": 2, "stop_kappa": 0.95, "stop_uncertainty": 0.1, "stop_min_gain": 0.01}


def rows(kappas, entropies, prequential, metrics):
    return [{"config": "standard", "seed": 0, "iteration": i, "stop_kappa": k, "stop_uncertainty": u,
             "prequential": p, "metric": m} for i, (k, u, p, m) in enumerate(zip(kappas, entropies, prequential,
                                                                                 metrics))]


def test_fired_at_by_hand():
    run = rows([None, 0.80, 0.96, 0.97, 0.99], [0.5, 0.3, 0.2, 0.08, 0.05],
               [0.5, 0.6, 0.61, 0.61, None], [0.6, 0.7, 0.75, 0.755, 0.76])
    out = fired_at(run, ST)
    assert out["stabilizing predictions"] == 3  # mean of (0.96, 0.97) >= 0.95; (0.80, 0.96) is not
    assert out["kappa average (small-text)"] == 3  # |0.97 - 0.96| = 0.01 < 0.05
    assert out["overall uncertainty"] == 3  # 0.08 < 0.1
    # at iteration 4 the known prequential values are models 0..3: mean(0.61, 0.61) - mean(0.5, 0.6) = 0.06
    assert out["prequential plateau"] is None
    assert out["advice: consider stopping"] == 3 and out["advice: stop"] == 3


def test_the_report_section():
    run = rows([None, 0.99, 0.99], [0.5, 0.4, 0.3], [0.5, 0.5, None], [0.6, 0.605, 0.606])
    lines = stopping_markdown(run, ["standard"], ST)
    text = "\n".join(lines)
    assert "## Stopping criteria vs the test curve" in text
    assert "| standard | stabilizing predictions | 2 | 0.606 | 1 | 0.605 | 0.606 | 0 |" in text
    assert "| standard | overall uncertainty | – | – | 1 | 0.605 | 0.606 | 0 |" in text
    assert stopping_markdown([{**r, "stop_uncertainty": None} for r in run], ["standard"], ST) == []


def test_near_best_iteration():
    """Where stopping would have cost less than the gain: the first point within it of the run's best."""
    run = rows([None] * 5, [0.5] * 5, [None] * 5, [0.6, 0.80, 0.842, 0.85, 0.845])
    assert near_best_iteration(run, 0.01) == 2  # 0.842 >= 0.85 - 0.01; 0.80 is not
    assert near_best_iteration(run, 0.0) == 3
