"""The matrix-factorization findings and Figure 1 (experiments/mf_report.py) from a real small run."""

import dataclasses

import numpy as np
import pytest

from lorainit.experiments import mf, mf_report

SMALL = mf.MFConfig(seeds=2, steps=60, preheat_steps=20, preheat_sweep=(10,))


@pytest.fixture(scope="module")
def run():
    return mf.run(SMALL), dataclasses.asdict(SMALL)


def test_target_text_names_the_paper_target_and_a_distinct_spectrum():
    assert mf_report.target_text({"n": 32, "ones": 12, "singular_values": []}) == "diag(I_12, 0_20)"
    assert mf_report.target_text({"n": 32, "singular_values": [5, 4, 3]}) == "diag(5, 4, 3, 0_29)"
    assert mf_report.target_text({"n": 3, "singular_values": [3, 2, 1]}) == "diag(3, 2, 1)"


def test_findings_list_every_mode_and_init_with_the_runs_numbers(run):
    res, cfg = run
    text = mf_report.findings(res, cfg)
    assert (
        f"L* = {res['optimal_loss']:.4g}" in text and f"random A = {res['expected_random_asymmetric_loss']:.4g}" in text
    )
    rows = [line.split() for line in text.splitlines() if line.split()[:1] in (["classic"], ["asymmetric"])]
    assert {(r[0], r[1]) for r in rows} == {(m, i) for m in SMALL.modes for i in SMALL.inits}
    for r in rows:
        s = res["summary"][r[0]][r[1]]
        assert r[2] == f"{s['final_loss_mean']:.4f}" and r[5] == f"{s['seeds_reaching_optimum']}/{SMALL.seeds}"
    assert "preheat   10 steps:" in text


def test_figure_draws_each_inits_mean_curve_and_hrp_shifted_by_its_preheat(run, tmp_path, drawn):
    res, cfg = run
    path = mf_report.figure(res, cfg, tmp_path / "fig.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    axes = drawn[0].axes
    assert [ax.get_title().split()[0] for ax in axes] == list(SMALL.modes)
    for ax, mode in zip(axes, SMALL.modes):
        lines = {line.get_label(): line for line in ax.get_lines()}
        for name, per_seed in res["curves"][mode].items():
            np.testing.assert_allclose(lines[name].get_ydata(), np.mean(per_seed, axis=0))
            np.testing.assert_allclose(
                lines[name].get_xdata(), np.arange(SMALL.steps + 1) + 1
            )  # step + 1, for the log axis
        shifted = lines[f"hrp, x shifted by {SMALL.preheat_steps} preheat steps"]
        np.testing.assert_allclose(shifted.get_xdata(), np.arange(SMALL.steps + 1) + 1 + SMALL.preheat_steps)
        assert lines[f"optimal rank-{SMALL.rank} loss {res['optimal_loss']:.3g}"].get_ydata()[0] == res["optimal_loss"]
