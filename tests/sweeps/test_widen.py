"""--widen (sweeps/widen.py): the next LR beyond an edge, for the edge-selected init alone, until none is at an edge or
the cap; the extra points through the grid, store, summary and report."""

import dataclasses
import math
import os
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from helpers import TOY_SIZE

from lorainit.sweeps import experiment, report, summary, widen, worker
from lorainit.sweeps.experiment import Experiment, register
from lorainit.sweeps.grid import Grid
from lorainit.sweeps.store import Store

SRC = str(Path(__file__).resolve().parents[2] / "src")
CENTER = {"init_a": 0.1, "init_b": 1e-3}  # init_b's best LR lies two grid steps below the grid (0.01, 0.1, 1)


@dataclasses.dataclass
class BowlConfig:
    pass


class Bowl(Experiment):  # loss (log10(lr / center))^2 with a center per init, seed 1 a little worse
    name, config = "bowl", BowlConfig
    defaults = {"inits": ("init_a", "init_b"), "lrs": (0.01, 0.1, 1.0), "seeds": 2, "batch": 4}

    def metric(self, cfg):
        return "loss", "minimize"

    def run(self, cfg, points, out):
        return [
            (
                math.log10(p["lr"] / CENTER[p["init"]]) ** 2 + 0.01 * p["seed"],
                {"test": 0.0, "diverged_step": None, "reason": None},
            )
            for p in points
        ]


@pytest.fixture
def bowl(monkeypatch):
    experiment.names()
    monkeypatch.setattr(experiment, "EXPERIMENTS", dict(experiment.EXPERIMENTS))
    return register(Bowl())


def _store(path):
    st = Store(f"sqlite:///{path / 'study.db'}", "sweep")
    st.load()
    return st


def test_beyond_repeats_the_log_step_at_the_edge():
    assert widen.beyond([1e-3, 1e-2, 1e-1], low=True) == pytest.approx(1e-4)
    assert widen.beyond([1e-3, 1e-2, 1e-1], low=False) == pytest.approx(1.0)
    assert widen.beyond([2.5e-5, 7.07107e-5, 2e-4], low=True) == 8.83883e-6  # 2.5e-5 / 2^1.5, 6 digits
    assert widen.beyond([1e-3], low=True) is None  # one LR: no spacing to repeat


def test_grid_extra_points_run_at_every_seed_once():
    g = Grid("bowl", {"seed": [0, 1], "init": ["init_a", "init_b"], "lr": [0.1, 1.0]}, {}, "loss", "minimize")
    assert len(g.points()) == 8 and "extra" not in g.signature()  # a plain grid's signature is as before
    g = replace(g, extra=[{"init": "init_b", "lr": 0.01}, {"init": "init_a", "lr": 1.0}])  # the second: in the grid
    assert len(g.points()) == 10
    assert [p for p in g.points()[8:]] == [
        {"seed": 0, "init": "init_b", "lr": 0.01},
        {"seed": 1, "init": "init_b", "lr": 0.01},
    ]
    assert g.lrs("init_b", {}) == [0.01, 0.1, 1.0] and g.lrs("init_a", {}) == [0.1, 1.0]


def test_a_sweep_widens_only_the_edge_selected_init_until_it_is_interior(bowl, tmp_path):
    res = worker.run(worker.SweepConfig(experiment="bowl", widen=3), BowlConfig(), tmp_path, progress=False)
    # init_b: 0.01 is its lowest -> 1e-3 added; 1e-3 is then its lowest -> 1e-4 added; 1e-3 interior: stop
    assert res["widened"] == [
        "init_b: selected LR 0.01 is its lowest; adding LR 0.001",
        "init_b: selected LR 0.001 is its lowest; adding LR 0.0001",
    ]
    assert res["done"] == res["total"] == 2 * 3 * 2 + 2 * 2
    st = _store(tmp_path)
    assert st.grid.extra == [{"init": "init_b", "lr": 0.001}, {"init": "init_b", "lr": 0.0001}]
    s = report.write(st, tmp_path)
    inits = s["groups"][0]["inits"]
    assert inits["init_b"]["selected_lr"] == pytest.approx(1e-3) and not inits["init_b"]["selected_at_edge"]
    assert inits["init_a"]["selected_lr"] == 0.1
    a_rows = {r["lr"]: r for r in inits["init_a"]["rows"]}  # one table: init_a's row has the extra columns, empty
    assert not a_rows[1e-4]["in_grid"] and a_rows[1e-4]["finished"] == 0 and a_rows[0.01]["in_grid"]
    text = (tmp_path / "report.md").read_text()
    assert "+ 2 extra LRs of single inits (init_b at 0.001, init_b at 0.0001; --widen) x 2 seeds = 16 points" in text
    again = worker.run(worker.SweepConfig(experiment="bowl", widen=3), BowlConfig(), tmp_path, progress=False)
    assert again["ran"] == 0 and again["widened"] == []  # resumed: nothing left to add


def test_the_cap_stops_an_init_that_stays_at_the_edge(bowl, tmp_path):
    res = worker.run(worker.SweepConfig(experiment="bowl", widen=1), BowlConfig(), tmp_path, progress=False)
    assert len(res["widened"]) == 1 and res["done"] == res["total"] == 14
    st = _store(tmp_path)
    s = summary.summarize(st.grid.signature(), st.records())["groups"][0]["inits"]["init_b"]
    assert s["selected_lr"] == pytest.approx(1e-3) and s["selected_at_edge"]  # still at an edge: the cap said 1
    grid = st.grid.signature()
    assert widen.next_lrs(grid, summary.summarize(grid, st.records()), cap=1) == []
    assert [p["lr"] for p, _ in widen.next_lrs(grid, summary.summarize(grid, st.records()), cap=2)] == [1e-4]


def test_a_negative_widen_is_refused_naming_the_flag(bowl, tmp_path):
    with pytest.raises(ValueError, match="--widen is how many extra LRs an init may get"):
        worker.run(worker.SweepConfig(experiment="bowl", widen=-1), BowlConfig(), tmp_path, progress=False)
    assert not (tmp_path / "study.db").exists()  # refused before anything is written


def test_widening_twice_with_the_same_points_queues_them_once(bowl, tmp_path):
    worker.run(worker.SweepConfig(experiment="bowl"), BowlConfig(), tmp_path, progress=False)
    st = _store(tmp_path)
    more = [{"init": "init_b", "lr": 0.001}]
    st.open(replace(st.grid, extra=more))
    other = _store(tmp_path)  # a second worker that found the same edge
    other.open(replace(other.grid, extra=more))
    assert st.progress()[2] == other.progress()[2] == 14
    assert sum(t.state.name == "WAITING" for t in other.study.get_trials(deepcopy=False)) == 2


def test_two_workers_on_fake_gpus_widen_alike_and_run_every_point_once(tmp_path):
    # toy at LRs 1e-3, 1e-2 on CPU: 1e-2 wins at every width (the top edge): each (width, init) gets 0.1, once
    env = {**os.environ, "PYTHONPATH": SRC, "CUDA_VISIBLE_DEVICES": "0,1", "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "lorainit", "sweep", "--experiment", "toy", "--widths", "16,24,32", *TOY_SIZE]
    argv += ["--steps", "20", "--lrs", "1e-3,1e-2", "--seeds", "2", "--device", "cpu", "--batch", "6", "--widen", "1"]
    r = subprocess.run(
        [*argv, "--out", str(tmp_path), "--no-progress"], env=env, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "36/36 points finished by 2 workers" in r.stdout  # 2 inits x 2 LRs x 2 seeds x 3 widths + 6 extra x 2 seeds
    st = _store(tmp_path)
    assert sorted((e["width"], e["init"], e["lr"]) for e in st.grid.extra) == [
        (w, i, 0.1) for w in (16, 24, 32) for i in ("init_a", "init_b")
    ]
    done = Counter(t.user_attrs["point"] for t in st.study.get_trials() if t.state.name in ("COMPLETE", "PRUNED"))
    assert len(done) == 36 and set(done.values()) == {1}
    report.write(st, tmp_path)
    assert "init_a at 0.1 (width 16)" in (tmp_path / "report.md").read_text()


def _records(values: dict) -> list[dict]:
    """Finished records of seeds 0 and 1 from {(init, lr): value or None (diverged)}."""
    out = []
    for (init, lr), v in values.items():
        for seed in (0, 1):
            state = "PRUNED" if v is None else "COMPLETE"
            out.append({"number": len(out), "state": state, "seed": seed, "init": init, "lr": lr, "value": v})
    return out


GRID = {
    "experiment": "bowl",
    "dims": {"seed": [0, 1], "init": ["init_a"], "lr": [0.01, 0.1, 1.0]},
    "config": {},
    "metric": "loss",
    "direction": "minimize",
}


def test_an_init_whose_every_lr_diverged_widens_downwards():
    recs = _records({("init_a", 0.01): None, ("init_a", 0.1): None, ("init_a", 1.0): None})
    s = summary.summarize(GRID, recs)
    assert [(p["lr"], why) for p, why in widen.next_lrs(GRID, s, cap=1)] == [
        (pytest.approx(1e-3), "init_a: every LR diverged; adding LR 0.001")
    ]


def test_an_edge_chosen_by_the_tie_rule_on_a_flat_curve_is_left_alone():
    flat = _records({("init_a", 0.01): 0.5, ("init_a", 0.1): 0.5, ("init_a", 1.0): 0.5})
    s = summary.summarize(GRID, flat)
    assert s["groups"][0]["inits"]["init_a"]["selected_at_edge"]  # the smaller LR wins the tie
    assert widen.next_lrs(GRID, s, cap=3) == []
    sloped = _records({("init_a", 0.01): 0.4, ("init_a", 0.1): 0.5, ("init_a", 1.0): 0.5})
    assert len(widen.next_lrs(GRID, summary.summarize(GRID, sloped), cap=3)) == 1
