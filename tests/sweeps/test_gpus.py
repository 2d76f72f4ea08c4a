"""--gpus: which GPUs get a worker (fake device lists), and a sweep spread over two pinned worker processes."""

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from helpers import TOY_SIZE

from lorainit.sweeps import gpus
from lorainit.sweeps.store import Store

SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.mark.parametrize(
    "spec, devices, want",
    [
        ("all", ["0", "1", "2"], ["0", "1", "2"]),
        ("ALL", [], []),
        ("2", ["0", "1", "2"], ["0", "1"]),
        ("none", ["0", "1"], []),
        ("0", ["0", "1"], []),
        ("1,2", ["0", "1", "2"], ["1", "2"]),
        ("5", ["3", "5", "6", "7", "8"], ["3", "5", "6", "7", "8"]),  # an integer is a count, not an id
    ],
)
def test_resolve(spec, devices, want):
    assert gpus.resolve(spec, devices) == want


@pytest.mark.parametrize(
    "spec, message",
    [("4", "only 2 GPUs visible \\(0, 1\\)"), ("0,7", "no visible GPU 7"), ("1,1", "names a GPU twice")],
)
def test_resolve_refusals(spec, message):
    with pytest.raises(ValueError, match=message):
        gpus.resolve(spec, ["0", "1"])


def test_visible_follows_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert gpus.visible() == ["2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert gpus.visible() == []


def test_pinned_argv_replaces_gpus_and_progress():
    argv = ["--experiment", "toy", "--gpus", "all", "--progress", "--out", "x", "--gpus=1"]
    assert gpus.pinned_argv(argv, "3") == ["--experiment", "toy", "--out", "x", "--gpus", "3", "--no-progress"]


@pytest.mark.slow
def test_a_sweep_on_two_fake_gpus_runs_two_pinned_workers_and_every_point_once(tmp_path):
    env = {**os.environ, "PYTHONPATH": SRC, "CUDA_VISIBLE_DEVICES": "0,1", "OMP_NUM_THREADS": "1"}
    args = [
        "--experiment",
        "toy",
        "--widths",
        "16,24,32",
        *TOY_SIZE,
        "--steps",
        "20",
        "--lrs",
        "1e-3,1e-2,1e3",
        "--seeds",
        "2",
        "--device",
        "cpu",
        "--batch",
        "6",
        "--out",
        str(tmp_path / "sw"),
    ]
    r = subprocess.run(
        [sys.executable, "-m", "lorainit", "sweep", *args, "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "36/36 points finished by 2 workers (GPUs 0, 1" in r.stdout
    logs = sorted(p.name for p in (tmp_path / "sw" / "workers").iterdir())
    assert logs == ["gpu0.log", "gpu1.log"]
    st = Store(f"sqlite:///{tmp_path / 'sw' / 'study.db'}", "sweep")
    st.load()
    trials = st.study.get_trials()
    done = Counter(t.user_attrs["point"] for t in trials if t.state.name in ("COMPLETE", "PRUNED"))
    assert len(done) == 36 and set(done.values()) == {1}
    pids = {t.user_attrs["worker"]["pid"] for t in trials if "worker" in t.user_attrs}
    assert 1 <= len(pids) <= 2 and os.getpid() not in pids  # the workers trained; the command that started them did not
    again = subprocess.run(
        [sys.executable, "-m", "lorainit", "sweep", *args, "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 0 and "36/36 points finished" in again.stdout
