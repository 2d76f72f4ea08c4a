import matplotlib.pyplot as plt

from lorainit import plots


def test_lr_vs_width_accepts_an_optimum_outside_the_per_seed_range(tmp_path):
    """The seed-mean optimum can fall outside [min, max] of the per-seed optima (seen in a real run)."""
    fig, ax = plt.subplots()
    plots.lr_vs_width(ax, {"init_a": {"widths": [128, 256], "lr": [0.0078, 0.01], "lo": [0.0156, 0.005], "hi": [0.0312, 0.02]},
                           "init_b": {"widths": [128, 256], "lr": [0.01, float("nan")], "censored": [True, False]}}, "t")
    plots.save(fig, tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 5000
