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


def sweep_on_two_fake_gpus(*args: str) -> subprocess.CompletedProcess:
    """``lorainit sweep ARGS --no-progress`` as a user runs it on a host that shows GPUs 0 and 1 (CPU work)."""
    env = {**os.environ, "PYTHONPATH": SRC, "CUDA_VISIBLE_DEVICES": "0,1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "lorainit", "sweep", *args, "--no-progress"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


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


@pytest.mark.parametrize(
    "spec, devices, want",
    [("all", ["0"], []), ("all", [], []), ("all", ["0", "1"], ["0", "1"]), ("1", ["0", "1"], ["0"]), ("1", ["1"], [])],
)
def test_workers_for_leaves_the_one_gpu_this_process_sees_to_it(spec, devices, want):
    assert gpus.workers_for(spec, devices) == want


def test_visible_follows_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert gpus.visible() == ["2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert gpus.visible() == []


def test_pinned_argv_replaces_gpus_and_progress():
    argv = ["--experiment", "toy", "--gpus", "all", "--progress", "--out", "x", "--gpus=1"]
    assert gpus.pinned_argv(argv, "3") == ["--experiment", "toy", "--out", "x", "--gpus", "3", "--no-progress"]


def test_pinned_argv_leaves_the_batch_to_the_worker():
    """A worker's --batch is the command's; its share of a small sweep it works out itself (fair_batch, from
    LORAINIT_SWEEP_WORKERS)."""
    argv = ["--experiment", "toy", "--batch=6", "--out", "x"]
    assert gpus.pinned_argv(argv, "1") == [*argv, "--gpus", "1", "--no-progress"]


@pytest.mark.parametrize(
    "batch, queued, workers, want",
    [
        (8, 8, 2, 4),
        (8, 16, 2, 8),
        (8, 48, 2, 8),
        (8, 3, 2, 2),
        (8, 12, 2, 6),
        (8, 0, 2, 1),
        (6, 36, 2, 6),
        (8, 5, 1, 5),
    ],
)
def test_fair_batch_gives_every_worker_points_of_a_small_sweep(batch, queued, workers, want):
    assert gpus.fair_batch(batch, queued, workers) == want


def test_watch_returns_the_exit_codes_and_logs_when_it_saw_each_exit(tmp_path):
    procs = [
        subprocess.Popen([sys.executable, "-c", f"import sys, time; time.sleep({s}); sys.exit({c})"])
        for s, c in ((0.2, 0), (0.6, 3))
    ]
    for gpu in ("0", "1"):
        (tmp_path / f"gpu{gpu}.log").write_text("worker output\n")
    calls = []
    codes = gpus.watch(procs, ["0", "1"], tmp_path, lambda: calls.append(1) or (1, 1, 2), progress=False, poll=0.05)
    assert codes == [0, 3] and len(calls) >= 3
    for gpu, code in (("0", 0), ("1", 3)):
        first, seen = (tmp_path / f"gpu{gpu}.log").read_text().splitlines()
        assert first == "worker output" and seen.endswith(f" exited with {code} (seen by the sweep command)")
        assert len(seen.split()[0]) == 12  # HH:MM:SS.mmm


def test_a_new_sweep_with_a_bad_grid_or_flag_leaves_nothing(tmp_path):
    """Its workers started before the flags were checked (gpus.early): stopped again, and no folder is left."""
    r = sweep_on_two_fake_gpus("--experiment", "toy", "--lrs", "1e-3,1e-3", "--out", str(tmp_path / "sw"))
    assert r.returncode == 2 and "--lrs lists 0.001 more than once" in r.stderr
    assert not (tmp_path / "sw").exists()
    r = sweep_on_two_fake_gpus("--experiment", "toy", "--steps", "many", "--out", str(tmp_path / "a" / "sw"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--steps" in r.stderr
    assert not (tmp_path / "a").exists()


def test_early_starts_workers_only_for_a_sweep_over_gpus(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert gpus.early(["--experiment", "toy", "--out", str(tmp_path / "x")]) is None  # one GPU: in this process
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    for argv in (["--help"], ["--gpus", "none"], ["--gpus", "0"], ["--gpus", "3"], ["--gpus"]):
        assert gpus.early([*argv, "--out", str(tmp_path / "x")]) is None, argv
    assert not (tmp_path / "x").exists()
    st = gpus.early(["--experiment", "toy", "--no-such-flag", "--gpus=1", "--out", str(tmp_path / "x")])
    assert st.ids == ["0"] and [p.name for p in (tmp_path / "x" / "workers").iterdir()] == ["gpu0.log.starting"]
    st.discard()
    assert not (tmp_path / "x").exists()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi: it cannot tell, and the usual path decides
    assert gpus.counted() is None and gpus.early(["--gpus", "2"]) is None


def test_started_workers_are_kept_or_leave_no_trace(tmp_path, monkeypatch):
    """``start`` logs to gpu<ID>.log.starting; ``keep`` renames the logs, ``discard`` stops the workers and removes
    their logs and the folders made for them (not a folder that was there before)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(gpus.sys, "executable", sys.executable)
    monkeypatch.setattr(gpus, "pinned_argv", lambda argv, gpu: ["--no-such-flag"])  # (each worker exits with 2)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "keep.txt").write_text("x")
    for folder, keep in ((tmp_path / "new" / "sw", False), (tmp_path / "old", False), (tmp_path / "k", True)):
        st = gpus.start(["--experiment", "toy"], ["0", "1"], folder / "workers")
        assert sorted(p.name for p in (folder / "workers").iterdir()) == ["gpu0.log.starting", "gpu1.log.starting"]
        assert all(p.wait(timeout=60) is not None for p in st.procs)
        if keep:
            st.keep()
            st.discard()  # (nothing once kept)
            assert sorted(p.name for p in (folder / "workers").iterdir()) == ["gpu0.log", "gpu1.log"]
        else:
            st.discard()
            assert not (folder / "workers").exists()
    assert not (tmp_path / "new").exists() and (tmp_path / "old" / "keep.txt").exists()


def test_each_worker_gets_its_share_of_the_hosts_threads_unless_the_user_set_them():
    assert gpus.thread_env(2, {}, cpus=32) == {"OMP_NUM_THREADS": "16", "TORCHINDUCTOR_COMPILE_THREADS": "16"}
    assert gpus.thread_env(3, {}, cpus=32) == {"OMP_NUM_THREADS": "10", "TORCHINDUCTOR_COMPILE_THREADS": "10"}
    assert gpus.thread_env(8, {}, cpus=2) == {"OMP_NUM_THREADS": "1", "TORCHINDUCTOR_COMPILE_THREADS": "1"}
    assert gpus.thread_env(2, {"OMP_NUM_THREADS": "4"}, cpus=32) == {"TORCHINDUCTOR_COMPILE_THREADS": "16"}
    assert gpus.thread_env(2, {}) == gpus.thread_env(2, {}, cpus=len(os.sched_getaffinity(0)))


def test_started_workers_see_their_thread_share(tmp_path, monkeypatch):
    seen = []

    class Popen:
        def __init__(self, cmd, env, stdout, stderr):
            seen.append(env)

    monkeypatch.setattr(gpus.subprocess, "Popen", Popen)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("TORCHINDUCTOR_COMPILE_THREADS", "3")
    gpus.start(["--experiment", "toy"], ["0", "1"], tmp_path / "workers")
    share = str(max(1, len(os.sched_getaffinity(0)) // 2))
    assert [(e["CUDA_VISIBLE_DEVICES"], e["OMP_NUM_THREADS"], e["TORCHINDUCTOR_COMPILE_THREADS"]) for e in seen] == [
        ("0", share, "3"),
        ("1", share, "3"),
    ]


@pytest.mark.slow
def test_a_sweep_smaller_than_gpus_times_batch_is_shared(tmp_path):
    """4 points at --batch 8 on two (fake) GPUs: each worker claims at most 2 (the second is not left idle)."""
    toy = ["--experiment", "toy", "--inits", "init_a", "--widths", "16", *TOY_SIZE, "--steps", "5", "--seeds", "2"]
    r = sweep_on_two_fake_gpus(
        *toy, "--lrs", "1e-3,1e-2", "--device", "cpu", "--batch", "8", "--out", str(tmp_path / "sw")
    )
    assert r.returncode == 0, r.stderr[-2000:]
    logs = "".join(p.read_text() for p in (tmp_path / "sw" / "workers").iterdir())
    claims = [int(line.split("claimed ")[1].split(":")[0]) for line in logs.splitlines() if "claimed " in line]
    assert sum(claims) == 4 and max(claims) == 2


@pytest.mark.slow
def test_a_sweep_on_two_fake_gpus_runs_two_pinned_workers_and_every_point_once(tmp_path):
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
    r = sweep_on_two_fake_gpus(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "36/36 points finished by 2 workers (GPUs 0, 1" in r.stdout
    logs = sorted(p.name for p in (tmp_path / "sw" / "workers").iterdir())
    assert logs == ["gpu0.log", "gpu1.log"]
    for log in logs:  # each worker said it was done, then the sweep command saw it exit (os._exit, code 0)
        lines = (tmp_path / "sw" / "workers" / log).read_text().splitlines()
        assert " done: ran " in lines[-4] and lines[-1].endswith("exited with 0 (seen by the sweep command)")
    st = Store(f"sqlite:///{tmp_path / 'sw' / 'study.db'}", "sweep")
    st.load()
    trials = st.study.get_trials()
    done = Counter(t.user_attrs["point"] for t in trials if t.state.name in ("COMPLETE", "PRUNED"))
    assert len(done) == 36 and set(done.values()) == {1}
    pids = {t.user_attrs["worker"]["pid"] for t in trials if "worker" in t.user_attrs}
    assert 1 <= len(pids) <= 2 and os.getpid() not in pids  # the workers trained; the command that started them did not
    again = sweep_on_two_fake_gpus(*args)
    assert again.returncode == 0 and "36/36 points finished" in again.stdout
