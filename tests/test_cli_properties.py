"""Random command lines (hypothesis): every one either runs or fails with exactly one error line and
exit code 2; never a traceback, and a failed call leaves its output folder unwritten."""

import contextlib
import io
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lorainit import cli

junk = st.text(alphabet="0123456789.:,e-+x ", max_size=12)
widths = st.one_of(st.lists(st.integers(-3, 24), min_size=0, max_size=3).map(lambda v: ",".join(map(str, v))), junk)
lrs = st.one_of(
    st.tuples(
        st.sampled_from(["1e-3", "0", "-1", "1e-1", "x"]), st.sampled_from(["1e-1", "1e-4", "2"]), st.integers(-1, 3)
    ).map(lambda t: ":".join(map(str, t))),
    junk,
)
flags = st.fixed_dictionaries(
    {},
    optional={
        "--widths": widths,
        "--lrs": lrs,
        "--rank": st.integers(-2, 30).map(str),
        "--steps": st.integers(-1, 3).map(str),
        "--seeds": st.integers(-1, 2).map(str),
        "--inits": st.sampled_from(["init_a", "init_a,init_b", "init_c", "", "hrp"]),
        "--select-on": st.sampled_from(["train", "test", "val"]),
        "--log-every": st.integers(-1, 2).map(str),
    },
)


def run(argv):
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = cli.main(argv)
        except SystemExit as e:
            code = e.code
    return code, err.getvalue()


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(command=st.sampled_from(["toy", "sweep"]), given_flags=flags)
def test_random_command_lines_run_or_fail_in_one_line(command, given_flags):
    out = Path(tempfile.mkdtemp()) / "out"
    argv = [
        command,
        "--out",
        str(out),
        "--teacher-width",
        "30",
        "--n-train",
        "20",
        "--n-test",
        "8",
        "--device",
        "cpu",
        "--no-progress",
        *(["--widths", "8"] if "--widths" not in given_flags else []),
    ]
    if command == "toy":
        argv += ["--steps", "2"] if "--steps" not in given_flags else []
    for k, v in given_flags.items():
        if command == "sweep" and k == "--select-on":
            continue
        argv += [k, v] if not v.startswith("-") else [f"{k}={v}"]
    code, err = run(argv)
    assert code in (0, 2), (argv, code, err)
    if code == 2:
        lines = [l for l in err.splitlines() if l.strip()]
        assert len(lines) == 1 and "error:" in lines[0], (argv, err)
        assert "Traceback" not in err
        assert not out.exists() or not any(out.iterdir()), (argv, sorted(out.iterdir()))
