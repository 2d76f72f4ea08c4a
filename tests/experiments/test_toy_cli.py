"""``lorainit toy`` (experiments/toy_cli.py), run as a user would, and the study it leaves read by ``lorainit theory``."""

import json

from helpers import TOY_SIZE, lorainit

TINY = [
    "--widths",
    "16,32",
    *TOY_SIZE,
    "--lrs",
    "1e-3:1e-1:3",
    "--seeds",
    "2",
    "--steps",
    "6",
    "--log-every",
    "3",
    "--no-progress",
]


def test_toy_smoke(tmp_path):
    out = tmp_path / "study"
    r = lorainit("toy", *TINY, "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "max-stable LR slope" in r.stdout and "theory -0.5" in r.stdout
    for name in ("results.json", "findings.txt", "opt_lr_vs_width.png", "feature_norms.png", "loss_vs_lr.png"):
        assert (out / name).stat().st_size > 0
    results = json.loads((out / "results.json").read_text())
    assert len(results["widths"]) == 2 and len(results["widths"][0]["runs"]) == 2 * 2 * 3
    t = lorainit("theory", "--study", str(out))
    assert t.returncode == 0 and "measured in" in t.stdout and "init_b: max-stable LR slope" in t.stdout


def test_a_missing_study_is_one_value_error(tmp_path):
    import pytest

    from lorainit.experiments import toy_cli

    with pytest.raises(ValueError, match="no study results at .*results.json: run 'lorainit toy' first"):
        toy_cli.study_results(tmp_path)


def test_a_width_that_cannot_fit_and_a_bad_setting_with_a_warning_are_each_one_error_line(tmp_path):
    out = tmp_path / "study"
    # 4 bytes x 2 seeds x (200000^2 + 2 x 1100 x 200000) = 301.3 GiB: refused before anything is written (found by test_cli_properties)
    r = lorainit("toy", "--widths", "200000", "--device", "cpu", "--no-progress", "--out", str(out))
    assert r.returncode == 2 and not out.exists()
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "width 200000 needs at least 301.3 GiB for its 2 frozen student(s)" in lines[0]
    # a width that warns on a CPU, with a bad rank: the error alone, not the warning first
    r = lorainit("toy", "--widths", "10000", "--rank", "0", "--device", "cpu", "--no-progress", "--out", str(out))
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "lorainit toy: error: rank must be a positive integer; got 0"
    ]


def test_a_study_whose_every_run_diverged_still_draws_its_figures(tmp_path):
    """`--lrs 12` (found by the hypothesis test): every run diverges, so the loss panel has nothing to put on a
    log axis; the command finishes and says so in the figure instead of a traceback."""
    size = ["--teacher-width", "30", "--n-train", "20", "--n-test", "8", "--widths", "8", "--steps", "2"]
    r = lorainit("toy", *size, "--lrs", "12", "--device", "cpu", "--no-progress", "--out", str(tmp_path / "t"))
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((tmp_path / "t" / "results.json").read_text())
    assert all(run["diverged_step"] is not None for w in res["widths"] for run in w["runs"])  # nothing finite to draw
    pngs = list((tmp_path / "t").glob("*.png"))
    assert len(pngs) == 3 and all(p.stat().st_size > 1000 for p in pngs)
