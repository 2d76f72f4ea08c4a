"""``python -m lorainit``: a --gpus worker (LORAINIT_SWEEP_WORKER set) leaves with os._exit, its output flushed and
its exit code kept."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lorainit.sweeps import gpus

SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.mark.parametrize("worker", [False, True])
def test_exit_code_and_output_are_kept_with_or_without_the_fast_exit(worker):
    env = {k: v for k, v in os.environ.items() if k != gpus.WORKER} | {"PYTHONPATH": SRC}
    if worker:
        env[gpus.WORKER] = "0"
    for argv, code, text in (([], 2, "usage"), (["--version"], 0, "lorainit ")):
        r = subprocess.run(
            [sys.executable, "-m", "lorainit", *argv], env=env, capture_output=True, text=True, timeout=120
        )
        assert r.returncode == code and text in r.stdout.lower()  # (stdout is a pipe: written only if flushed)


def run_main(env: dict) -> str:
    """``python -m lorainit`` with its ``main`` replaced by one printing the environment's worker flag (what a child
    process would inherit), and an atexit handler (which only a normal interpreter exit runs)."""
    code = (
        "import atexit, os, runpy, lorainit.cli; atexit.register(lambda: print('teardown ran'));"
        f"lorainit.cli.main = lambda: print('flag', os.environ.get('{gpus.WORKER}')) or 0;"
        "runpy.run_module('lorainit', run_name='__main__')"
    )
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_a_worker_skips_the_teardown_and_keeps_its_flag_from_its_children():
    env = {k: v for k, v in os.environ.items() if k != gpus.WORKER} | {"PYTHONPATH": SRC}
    assert run_main(env | {gpus.WORKER: "0"}).split("\n") == ["flag None", ""]
    assert run_main(env).split("\n") == ["flag None", "teardown ran", ""]
