"""The files the report writes for a real sweep (its numbers: test_summary.py)."""

import csv
import json

from lorainit.experiments import toy
from lorainit.sweeps import report, worker
from lorainit.sweeps.store import Store

GRID = {
    "experiment": "finetune",
    "dims": {"seed": [0, 1, 2], "init": ["a", "b"], "lr": [0.01, 0.1, 1.0]},
    "config": {},
    "metric": "accuracy",
    "direction": "maximize",
}


def rec(n, seed, init, lr, value, test=None, state="COMPLETE", **kw):
    return {"number": n, "state": state, "seed": seed, "init": init, "lr": lr, "value": value, "test": test, **kw}


def records():
    vals = {
        ("a", 0.01): [0.5, 0.6, 0.7],
        ("a", 0.1): [0.8, 0.9, 0.85],
        ("a", 1.0): [0.95, None, 0.9],
        ("b", 0.01): [0.7, 0.7, 0.7],
        ("b", 0.1): [0.7, 0.75, 0.8],
        ("b", 1.0): [0.7, 0.75, 0.8],
    }
    out, n = [], 0
    for (init, lr), vs in vals.items():
        for seed, v in enumerate(vs):
            out.append(
                rec(
                    n,
                    seed,
                    init,
                    lr,
                    v,
                    None if v is None else v - 0.1,
                    state="PRUNED" if v is None else "COMPLETE",
                    diverged_step=3 if v is None else None,
                )
            )
            n += 1
    out.append(rec(n, 0, "a", 0.01, None, state="FAIL"))  # a lost attempt: ignored
    return out


def test_report_files_for_a_toy_sweep(tmp_path):
    cfg = toy.ToyConfig(
        widths=(16, 32), rank=2, steps=6, teacher_width=40, n_train=60, n_test=20, log_every=3, device="cpu"
    )
    worker.run(worker.SweepConfig(lrs=(1e-2, 1e-1, 1e3), seeds=2), cfg, tmp_path, progress=False)
    st = Store(f"sqlite:///{tmp_path / 'study.db'}", "sweep")
    st.load()
    summary = report.write(st, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "## width 16" in md and "## width 32" in md and "Width study" in md and "div" in md
    for name in ("heatmap_width16.png", "curves_width32.png", "opt_lr_vs_width.png"):
        assert (tmp_path / name).stat().st_size > 5000
    rows = list(csv.DictReader((tmp_path / "trials.csv").open()))
    assert len(rows) == 24 and {r["state"] for r in rows} == {"COMPLETE", "PRUNED"}
    assert sum(r["state"] == "PRUNED" for r in rows) == 8 and all(r["reason"] for r in rows if r["state"] == "PRUNED")
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["integrity"]["finished_points"] == 24 and "toy_analysis" in saved
    sel = summary["groups"][0]["inits"]["init_a"]
    assert sel["selected_lr"] in (1e-2, 1e-1) and sel["first_diverging_lr"] == 1e3
