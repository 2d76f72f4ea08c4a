"""Sweep figures (sweeps/report_plots.py) read back from the figure objects: the heatmap's cells, the curves' points,
the selected LR's star and the first diverging LR's line, on hand-made trials with known means."""

import numpy as np
import pytest

from lorainit.sweeps import report_plots
from lorainit.sweeps.summary import summarize

GRID = {
    "experiment": "finetune",
    "dims": {"seed": [0, 1], "init": ["a", "b"], "lr": [0.01, 0.1, 1.0]},
    "config": {},
    "metric": "accuracy",
    "direction": "maximize",
}
VALUES = {
    ("a", 0.01): [0.5, 0.7],
    ("a", 0.1): [0.8, 0.9],
    ("a", 1.0): [0.95, None],  # None: diverged
    ("b", 0.01): [0.6, 0.6],
    ("b", 0.1): [0.7, 0.8],
    ("b", 1.0): [0.4, 0.5],
}


def summary():
    recs = [
        {
            "number": n,
            "state": "COMPLETE" if v is not None else "PRUNED",
            "seed": seed,
            "init": init,
            "lr": lr,
            "value": v,
            "test": v,
            "diverged_step": None if v is not None else 3,
        }
        for n, ((init, lr), vs) in enumerate(VALUES.items())
        for seed, v in enumerate(vs)
    ]
    return summarize(GRID, recs)


def test_heatmap_cells_are_the_seed_means_and_a_diverged_cell_is_grey(tmp_path, drawn):
    report_plots.heatmap(summary()["groups"][0], GRID, tmp_path / "h.png")
    ax = drawn[0].axes[0]
    cells = ax.get_images()[0].get_array()  # (inits, LRs), masked where nothing is to colour
    np.testing.assert_allclose(cells.filled(np.nan), [[0.6, 0.85, np.nan], [0.6, 0.75, 0.45]])
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t for t in ax.texts}
    assert texts[(0, 2)].get_text() == "div\n1/2"
    assert texts[(0, 1)].get_text() == "0.85\n±0.05" and texts[(0, 1)].get_fontweight() == "bold"  # the selected LR
    assert texts[(1, 0)].get_text() == "0.6\n±0" and texts[(1, 0)].get_fontweight() == "normal"


def test_curves_skip_diverged_lrs_star_the_selection_and_mark_the_first_divergence(tmp_path, drawn):
    report_plots.curves(summary()["groups"][0], GRID, tmp_path / "c.png")
    ax = drawn[0].axes[0]
    a = next(c for c in ax.containers if c.get_label() == "a").lines[0]  # the errorbar's data line
    np.testing.assert_allclose(np.asarray(a.get_xdata(), float), [0.01, 0.1])
    np.testing.assert_allclose(np.asarray(a.get_ydata(), float), [0.6, 0.85])
    stars = [(line.get_xdata()[0], line.get_ydata()[0]) for line in ax.get_lines() if line.get_marker() == "*"]
    assert stars == [(0.1, pytest.approx(0.85)), (0.1, pytest.approx(0.75))]
    vertical = [line.get_xdata()[0] for line in ax.get_lines() if line.get_linestyle() == ":"]
    assert vertical == [1.0]  # a's first diverging LR; b never diverged


def test_labels_and_file_names():
    assert report_plots.selection_label({"experiment": "toy", "config": {"select_on": "test"}}) == "final test loss"
    assert report_plots.selection_label({"experiment": "mf", "config": {}}) == "final loss"
    assert report_plots.selection_label(GRID) == "validation accuracy"
    assert (
        report_plots._tag({"width": 16, "mode": "classic"}) == "width16_modeclassic" and report_plots._tag({}) == "all"
    )


def test_figures_of_a_sweep_with_nothing_finished_yet(tmp_path):
    """A report while every trial still runs (or was lost) draws empty figures instead of failing."""
    grid = {**GRID, "metric": "perplexity", "direction": "minimize"}
    recs = [
        {"number": 0, "state": "RUNNING", "seed": 0, "init": "a", "lr": 0.01, "value": None, "test": None},
        {"number": 1, "state": "FAIL", "seed": 1, "init": "b", "lr": 0.1, "value": None, "test": None},
    ]
    s = summarize(grid, recs)
    assert s["integrity"]["finished_points"] == 0
    paths = report_plots.figures(s, grid, tmp_path)
    assert [p.name for p in paths] == ["heatmap_all.png", "curves_all.png"] and all(p.exists() for p in paths)
