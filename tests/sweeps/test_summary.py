"""The sweep summary's arithmetic on hand-made trials: per-init selection on validation, divergence, duplicates."""

import math

import pytest

from lorainit.sweeps import summary

from .test_report import GRID, rec, records


def test_selection_is_per_init_on_validation_and_skips_diverged_lrs():
    s = summary.summarize(GRID, records())
    a, b = s["groups"][0]["inits"]["a"], s["groups"][0]["inits"]["b"]
    assert a["selected_lr"] == 0.1  # lr 1.0 has the best seed but one seed diverged there
    assert a["val_at_selected"][0] == pytest.approx(0.85)
    assert a["val_at_selected"][1] == pytest.approx(0.05 / math.sqrt(3))  # s.d. (ddof 1) / sqrt(n)
    assert a["test_at_selected"][0] == pytest.approx(0.75)
    assert (a["first_diverging_lr"], a["max_stable_lr"]) == (1.0, 0.1)
    assert b["selected_lr"] == 0.1 and b["selected_at_edge"] is False  # tie with 1.0: the smaller LR
    assert (b["first_diverging_lr"], b["max_stable_lr"]) == (None, 1.0)
    assert s["integrity"] == {
        "points": 18,
        "finished_points": 18,
        "points_finished_twice": 0,
        "trial_states": {"COMPLETE": 17, "PRUNED": 1, "FAIL": 1},
    }


def test_minimize_direction_and_double_finished_points_are_counted():
    rs = records() + [rec(99, 0, "b", 0.01, 0.1)]
    s = summary.summarize({**GRID, "direction": "minimize"}, rs)
    assert s["groups"][0]["inits"]["a"]["selected_lr"] == 0.01
    assert s["integrity"]["points_finished_twice"] == 1


def test_the_standard_error_of_equal_values_is_exactly_zero():
    """(numpy's s.d. of three equal 0.493 is 6.8e-17, the mean's rounding: a heatmap showed '± 4e-17')"""
    assert summary.mean_se([0.493] * 3) == (pytest.approx(0.493), 0.0)
    assert summary.mean_se([1.0, 2.0]) == (1.5, 0.5)
