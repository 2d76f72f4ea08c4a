"""What a sweep trial runs (sweeps.runners): a point's value does not depend on how the points were batched, neither
on its batch neighbours nor on their number, nor on a worker dying and the study being finished in other batches
(issue 'Reliability', item 3). CPU, float32: bitwise equality."""

import pytest

from lorainit.experiments import mf, toy
from lorainit.sweeps import runners, summary, worker
from lorainit.sweeps.store import Store

TOY = toy.ToyConfig(widths=(32,), rank=2, teacher_width=40, n_train=60, n_test=20, device="cpu", steps=200)
TOY_POINTS = [
    {"width": 32, "seed": s, "init": i, "lr": lr}
    for s in (0, 1)
    for i in ("init_a", "init_b")
    for lr in (1e-3, 1e-2, 1e-1, 1e3)
]
MF_POINTS = [
    {"mode": m, "seed": s, "init": i, "lr": lr}
    for m in ("classic",)
    for s in (0, 1, 2)
    for i in ("gaussian", "hrp")
    for lr in (0.0125, 0.05)
]


def value_in(runner, cfg, target, batch):
    """The target's value and attributes (curves, divergence, test) as trained in ``batch``, all but its timing."""
    value, attrs = runner.run(cfg, batch, "/nonexistent")[batch.index(target)]
    return value, {k: v for k, v in attrs.items() if k != "seconds"}


@pytest.mark.parametrize(
    "runner, cfg, points, target",
    [
        (runners.Toy(), TOY, TOY_POINTS, {"width": 32, "seed": 1, "init": "init_b", "lr": 1e-1}),
        (runners.MF(), mf.MFConfig(steps=300), MF_POINTS, {"mode": "classic", "seed": 1, "init": "hrp", "lr": 0.05}),
    ],
    ids=["toy", "mf"],
)
def test_a_points_outcome_is_the_same_alone_and_in_any_batch(runner, cfg, points, target):
    """Alone, with neighbours of its own seed only (toy: one student), with others, first or last: one value. Before,
    a lone toy run (K = 1) and a batch of one seed (the output's bmm per seed) rounded differently, 18% apart
    after 200 steps at LR 0.1."""
    others = [p for p in points if p != target]
    same_seed = [p for p in others if p["seed"] == target["seed"]]
    alone = value_in(runner, cfg, target, [target])
    for batch in ([target] + same_seed, same_seed[:1] + [target], others[:5] + [target], [target] + others):
        assert value_in(runner, cfg, target, batch) == alone
    assert alone[0] is not None


def test_a_study_finished_after_a_worker_stopped_reports_what_one_uninterrupted_batch_does(tmp_path):
    sweep = {"experiment": "toy", "inits": ("init_a", "init_b"), "lrs": (1e-3, 1e-2, 1e-1, 1e3), "seeds": 2}
    cfg = toy.ToyConfig(widths=(16, 32), rank=2, teacher_width=40, n_train=60, n_test=20, device="cpu", steps=200)
    worker.run(worker.SweepConfig(**sweep, batch=64), cfg, tmp_path / "one", progress=False)
    worker.run(worker.SweepConfig(**sweep, batch=3, max_trials=5), cfg, tmp_path / "two", progress=False)  # stops early
    worker.run(
        worker.SweepConfig(**sweep, batch=1), cfg, tmp_path / "two", progress=False
    )  # another batch size finishes
    got = {}
    for name in ("one", "two"):
        st = Store(f"sqlite:///{tmp_path / name / 'study.db'}", "sweep")
        grid = st.load()
        recs = st.records()
        got[name] = (
            {(r["width"], r["seed"], r["init"], r["lr"]): (r["state"], r["value"], r["test"]) for r in recs},
            summary.summarize(grid, recs)["groups"],
        )
    assert got["one"][0] == got["two"][0] and len(got["one"][0]) == 32
    assert got["one"][1] == got["two"][1]
