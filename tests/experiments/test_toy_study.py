"""Study folders resume, refuse a different config, and the analysis reads the right numbers off runs."""

import dataclasses

import pytest
from helpers import TINY_TOY as TINY
from helpers import fake_width, known_study

from lorainit import io
from lorainit.experiments import toy_study


def test_study_writes_everything_and_resumes_without_training(tmp_path, monkeypatch):
    study = toy_study.run_study(TINY, tmp_path, progress=False)
    assert (tmp_path / "results.json").exists() and (tmp_path / "config.json").exists()
    assert sorted(p.name for p in (tmp_path / "widths").iterdir()) == ["width_00016.json", "width_00032.json"]
    assert study["provenance"]["commit"] is None or len(study["provenance"]["commit"]) == 40

    def no_training(*a, **k):
        raise AssertionError("a finished width was trained again")

    monkeypatch.setattr(toy_study, "train_width", no_training)
    again = toy_study.run_study(TINY, tmp_path, progress=False)
    assert again["widths"] == study["widths"]


def test_partial_study_trains_only_the_missing_width(tmp_path, monkeypatch):
    toy_study.run_study(TINY, tmp_path, progress=False)
    (tmp_path / "widths" / "width_00032.json").unlink()
    trained = []
    real = toy_study.train_width
    monkeypatch.setattr(toy_study, "train_width", lambda cfg, w, *a, **k: trained.append(w) or real(cfg, w, *a, **k))
    toy_study.run_study(TINY, tmp_path, progress=False)
    assert trained == [32]


def test_a_different_config_is_refused_and_nothing_is_touched(tmp_path):
    toy_study.run_study(TINY, tmp_path, progress=False)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*.json")}
    with pytest.raises(ValueError, match="different config.*steps"):
        toy_study.run_study(dataclasses.replace(TINY, steps=7), tmp_path, progress=False)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*.json")} == before
    toy_study.run_study(dataclasses.replace(TINY, steps=7), tmp_path, overwrite=True, progress=False)
    assert io.read_json(tmp_path / "config.json")["steps"] == 7


def test_optimal_and_max_stable_lr_per_width():
    cfg = dataclasses.replace(TINY, lrs=(1e-3, 1e-2, 1e-1), zb_bound=1.0)
    loss = {
        ("init_a", 0, 1e-3): 0.5,
        ("init_a", 0, 1e-2): 0.1,
        ("init_a", 0, 1e-1): 0.3,
        ("init_a", 1, 1e-3): 0.5,
        ("init_a", 1, 1e-2): 0.2,
        ("init_a", 1, 1e-1): 0.15,
    }
    zb = {("init_a", 1, 1e-1): 5.0}  # seed 1 leaves the stable region at the largest LR
    r = toy_study.per_width(cfg, fake_width(64, loss, zb), "init_a")
    assert r["opt_lr"] == 1e-2  # seed means 0.5, 0.15, 0.225
    assert (r["opt_lr_seed_min"], r["opt_lr_seed_max"]) == (1e-2, 1e-1)
    assert r["opt_loss_mean"] == pytest.approx(0.15) and r["opt_loss_sem"] == pytest.approx(
        0.05
    )  # std 0.0707 / sqrt(2)
    assert r["max_stable_lr"] == 1e-2 and not r["max_stable_censored"]
    assert r["za_final_at_opt"] == pytest.approx(2.5)
    assert not r["opt_at_grid_edge"]


def test_diverged_runs_never_win_and_are_unstable():
    cfg = dataclasses.replace(TINY, lrs=(1e-3, 1e-2), seeds=1, zb_bound=1.0)
    loss = {("init_a", 0, 1e-3): 0.5, ("init_a", 0, 1e-2): 0.01}
    r = toy_study.per_width(cfg, fake_width(64, loss, diverged={("init_a", 0, 1e-2)}), "init_a")
    assert r["opt_lr"] == 1e-3 and r["opt_at_grid_edge"]
    assert r["max_stable_lr"] == 1e-3 and r["diverged_runs"] == 1


def test_censored_max_stable_lr_is_flagged():
    cfg = dataclasses.replace(TINY, lrs=(1e-3, 1e-2), seeds=1, zb_bound=1.0)
    r = toy_study.per_width(cfg, fake_width(64, {("init_b", 0, 1e-3): 0.5, ("init_b", 0, 1e-2): 0.4}), "init_b")
    assert r["max_stable_lr"] == 1e-2 and r["max_stable_censored"]


def test_slope_of_an_exact_power_law():
    pts = [(n, 3.0 * n**-0.5) for n in (128, 256, 512, 1024)]
    s = toy_study.fit_slope(pts)
    assert s["slope"] == pytest.approx(-0.5) and s["stderr"] == pytest.approx(0.0, abs=1e-9) and s["points"] == 4
    assert toy_study.fit_slope(pts[:1])["slope"] is None


def test_analysis_checks():
    an = known_study()["analysis"]
    assert an["checks"]["opt_lr_a_ge_b_at_width_ge_512"] == {"512": True, "1024": False}


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset"):
        toy_study.preset("fast")
    assert toy_study.preset("paper").widths == tuple(2**k for k in range(7, 14))
    assert len(toy_study.preset("paper").lrs) >= 12 and toy_study.preset("paper").seeds == 3
