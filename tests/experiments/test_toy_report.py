"""The teacher-student findings and figures (experiments/toy_report.py), from a study with known optima and from a
real tiny study."""

import numpy as np
from helpers import TINY_TOY as TINY
from helpers import known_study

from lorainit import plots
from lorainit.experiments import toy_report, toy_study


def test_findings_give_each_widths_optimum_and_the_papers_checks():
    text = toy_report.findings(known_study())
    assert "does NOT hold" in text and "512: True, 1024: False" in text
    rows = {
        line.split()[0]: line.split() for line in text.splitlines() if line.split()[:1] in (["256"], ["512"], ["1024"])
    }
    # per init: opt LR, its per-seed range, max-stable LR, loss at the optimum
    assert rows["512"][1:5] == ["0.01", "[0.01,0.01]", ">=0.1", "0.1"] and rows["512"][5:7] == [
        "0.001",
        "[0.001,0.001]*",
    ]
    assert rows["1024"][1] == "0.001" and rows["1024"][5] == "0.01"


def test_figures_plot_the_optima_and_each_widths_loss_curve(tmp_path, drawn):
    study = known_study()
    paths = toy_report.figures(study, tmp_path)
    assert [p.name for p in paths] == ["opt_lr_vs_width.png", "feature_norms.png", "loss_vs_lr.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)
    opt, features, losses = drawn
    a_line = next(line for line in opt.axes[0].get_lines() if line.get_label() == plots.label("init_a"))
    np.testing.assert_allclose(a_line.get_ydata(), [1e-2, 1e-2, 1e-3])  # the optimal LR per width
    for ax, rows in zip(losses.axes, zip(*study["analysis"]["per_width"].values())):
        stars = [line for line in ax.get_lines() if line.get_marker() == "*"]
        assert sorted(s.get_xdata()[0] for s in stars) == sorted(r["opt_lr"] for r in rows)
    titles = [ax.get_title() for ax in features.axes]
    assert titles == ["|Z_A|, width 256", "|Z_A|, width 1024", "|Z_B|, width 256", "|Z_B|, width 1024"]


def test_a_real_tiny_study_reports_and_draws(tmp_path, drawn):
    study = toy_study.run_study(TINY, tmp_path / "study", progress=False)
    text = toy_report.findings(study)
    assert text.startswith("Teacher-student study: 2 widths, inits init_a, init_b, 2 seeds, 3 LRs, 6 steps")
    toy_report.figures(study, tmp_path)
    za = [line for line in drawn[1].axes[0].get_lines() if line.get_label().startswith(plots.label("init_a"))]
    assert len(za) == TINY.seeds  # one line per seed at Init[A]'s optimal LR of the smallest width
