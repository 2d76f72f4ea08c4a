"""The reproduction's figures (reproduction/figures.py) read back from the figure objects: what each bold line, bar,
star and note shows, on studies with known answers."""

import numpy as np
import pytest

from lorainit import plots
from lorainit.reproduction import figures
from lorainit.reproduction.load import Studies, load

from .conftest import WIDTHS, mf_results, sweep_folder, toy_results
from .test_tasks import curve


def bold(ax, init):
    return next(line for line in ax.get_lines() if line.get_label() == plots.label(init))


def test_toy_figures_draw_the_geometric_mean_over_data_seeds(tmp_path, drawn):
    st = Studies([toy_results(d, -0.5, -1.0, noise=0.1) for d in range(3)], {}, [], tmp_path)
    figures.toy_lr_vs_width(st, "opt_lr", tmp_path / "a.png")
    figures.toy_features(st, tmp_path / "b.png")
    w = np.array(WIDTHS) / 128
    # slopes -0.5 - 0.1, -0.5, -0.5 + 0.1 over the data seeds: their geometric mean is the slope -0.5 itself
    np.testing.assert_allclose(bold(drawn[0].axes[0], "init_a").get_ydata(), 0.02 * w**-0.5)
    np.testing.assert_allclose(bold(drawn[0].axes[0], "init_b").get_ydata(), 0.01 * w**-1.0)
    assert len(drawn[0].axes[0].get_lines()) >= 2 * (3 + 1)  # a thin line per data seed and a bold one, per init
    np.testing.assert_allclose(bold(drawn[1].axes[0], "init_a").get_ydata(), 5 * w**0.3)  # |Z_A| at the optimum
    np.testing.assert_allclose(bold(drawn[1].axes[1], "init_b").get_ydata(), 10.0 - np.array(WIDTHS) / 1e4)


def test_mf_rank_draws_hrps_gap_to_the_optimum_floored_at_1e_7(tmp_path, drawn):
    st = Studies([], {"paper": {2: mf_results(5.0, 0, 5.5, 0), 6: mf_results(5.0, 0, 5.0, 4)}}, [], tmp_path)
    figures.mf_rank(st, tmp_path / "r.png")
    line = drawn[0].axes[0].get_lines()[0]
    np.testing.assert_allclose(line.get_xdata(), [2, 6])
    np.testing.assert_allclose(line.get_ydata(), [0.1, 1e-7])


def test_task_figures_star_the_selection_and_bar_each_methods_tuned_test(tmp_path, drawn):
    sweep_folder(tmp_path / "s" / "tiny-wiki", {"init_a": curve(1e-3, 19.0), "init_b": curve(2e-4, 20.0)})
    s = load(tmp_path / "s").sweeps[0]
    figures.task_curves(s, tmp_path / "c.png", 2e-4)
    ax = drawn[0].axes[0]
    stars = {
        (line.get_xdata()[0], round(line.get_ydata()[0], 6)) for line in ax.get_lines() if line.get_marker() == "*"
    }
    assert stars == {(1e-3, 19.01), (2e-4, 20.01)}  # the seed mean (seeds add 0, 0.01, 0.02) at each selected LR
    assert [line.get_xdata()[0] for line in ax.get_lines() if line.get_linestyle() == "--"] == [2e-4]
    figures.full_vs_lora(s, tmp_path / "f.png", ["init_a", "init_b"])
    ax = drawn[1].axes[0]
    np.testing.assert_allclose([b.get_height() for b in ax.patches], [19.51, 20.51])  # test = val + 0.5
    assert [t.get_text() for t in ax.texts] == ["LR 0.001", "LR 0.0002"]


def test_shared_lr_bars_leave_out_an_init_not_finished_there_and_an_empty_figure_says_why(tmp_path, drawn):
    unfinished = lambda lr, seed: None if lr == 2e-4 and seed == 2 else curve(1e-3, 19.0)(lr, seed)  # noqa: E731
    sweep_folder(tmp_path / "s" / "tiny-wiki", {"init_a": unfinished, "init_b": curve(2e-4, 20.0)})
    s = load(tmp_path / "s").sweeps[0]
    figures.shared_vs_tuned(s, 2e-4, tmp_path / "t.png", ["init_a", "init_b"])
    heights = [b.get_height() for b in drawn[0].axes[0].patches]  # tuned a, tuned b, shared a, shared b
    assert np.isnan(heights[2]) and heights[3] == pytest.approx(20.51)
    empty = lambda lr, seed: None if seed == 2 else curve(1e-3, 19.0)(lr, seed)  # noqa: E731  (no LR has every seed)
    sweep_folder(tmp_path / "e" / "tiny-wiki", {"init_a": empty})
    figures.full_vs_lora(load(tmp_path / "e").sweeps[0], tmp_path / "n.png", ["init_a"])
    assert "nothing to show yet" in drawn[1].axes[0].texts[0].get_text()


def test_bars_of_equal_values_get_a_readable_range(tmp_path, drawn):
    """(three seeds at one value gave a range of 2e-10 around it and an offset label '1e-10+2.5e-1')"""
    flat = lambda lr, seed: (19.0, 0.25)  # noqa: E731
    sweep_folder(tmp_path / "s" / "tiny-wiki", {"init_a": flat})
    figures.full_vs_lora(load(tmp_path / "s").sweeps[0], tmp_path / "f.png", ["init_a"])
    lo, hi = drawn[0].axes[0].get_ylim()
    assert lo < 0.25 < hi and hi - lo == pytest.approx(2 * 0.3 * 0.05 * 0.25)
