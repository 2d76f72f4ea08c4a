import matplotlib.pyplot as plt

from lorainit import plots


def test_lr_vs_width_accepts_an_optimum_outside_the_per_seed_range(tmp_path):
    """The seed-mean optimum can fall outside [min, max] of the per-seed optima (seen in a real run)."""
    fig, ax = plt.subplots()
    plots.lr_vs_width(
        ax,
        {
            "init_a": {"widths": [128, 256], "lr": [0.0078, 0.01], "lo": [0.0156, 0.005], "hi": [0.0312, 0.02]},
            "init_b": {"widths": [128, 256], "lr": [0.01, float("nan")], "censored": [True, False]},
        },
        "t",
    )
    plots.save(fig, tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 5000


def test_tidy_log_axis_labels_plain_numbers_and_a_narrow_range_gets_several():
    fig, (narrow, wide) = plt.subplots(1, 2)
    narrow.plot([1e-3, 3e-3], [1, 2])
    wide.plot([1e-6, 1e-1], [1, 2])
    for ax in (narrow, wide):
        ax.set_xscale("log")
        plots.tidy_log_axis(ax.xaxis)
    fig.canvas.draw()
    shown = [
        t.get_text()
        for t in narrow.xaxis.get_majorticklabels() + narrow.xaxis.get_minorticklabels()
        if t.get_text() and 1e-3 <= t.get_position()[0] <= 3e-3
    ]
    assert len(shown) >= 2 and all("\\\\times" not in s and "^" not in s for s in shown), shown  # e.g. 0.001, 0.002
    assert all(t.get_text() == "" for t in wide.xaxis.get_minorticklabels())  # many decades: majors only
    plt.close(fig)


def test_caption_sits_below_every_axis_and_legend():
    fig, ax = plt.subplots()
    ax.plot([1, 2], [3, 4], label="a line")
    ax.set_xlabel("x label")
    fig.legend(loc="upper center", bbox_to_anchor=(0.5, 0.0))
    plots.caption(fig, "what the bands mean")
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    text = fig.texts[-1].get_window_extent(r)
    assert text.y1 <= ax.get_tightbbox(r).y0 and text.y1 <= fig.legends[0].get_window_extent(r).y0
    plt.close(fig)
