"""The command line, run as a user would: a real subprocess per call, except the bad-input cases (``lorainit_here``:
``cli.main`` in this process; a real process's exit code and one-line error are checked by the subprocess tests here:
a missing study, an unwritable output, Ctrl-C)."""

import json
import os
import subprocess
import sys

import pytest
from helpers import TOY_SIZE, lorainit, lorainit_here  # (a real subprocess; cli.main in this process)


def test_theory_table():
    r = lorainit("theory", "--gammas", "-1.5:0:7")
    assert r.returncode == 0, r.stderr
    assert "init_a: max stable exponent -0.5" in r.stdout and "init_b: max stable exponent -1 " in r.stdout
    assert len([l for l in r.stdout.splitlines() if l.strip().startswith("init_")]) >= 14


@pytest.mark.parametrize(
    "args, message",
    [
        (["toy", "--inits", "init_a,init_bb"], "unknown init scheme 'init_bb'; did you mean 'init_b'?"),
        (["toy", "--widths", "0,16"], "widths must be positive"),
        (["toy", "--rank", "0"], "rank must be a positive integer"),
        (["toy", "--lrs", "1e-3,-1"], "learning rates must be > 0"),
        (["toy", "--lrs", ""], "the learning-rate grid is empty"),
        (["toy", "--lrs", "1e-3:1e-1"], "malformed range"),
        (["toy", "--lrs", "1e-1:1e-3:4"], "HI > LO"),
        (["toy", "--widths", "a,b"], "malformed list"),
        (["toy", "--select-on", "val"], "invalid choice"),
        (["theory", "--inits", "pissa"], "no width theory for init 'pissa'"),
        (["theory", "--study", "/nonexistent"], "no study results"),
        (
            ["finetune", "--model", "minilm-l6", "--task", "wiki"],
            "task wiki needs a causal LM (e.g. smollm2-135m); minilm-l6 is an encoder",
        ),
        (["frobnicate"], "unknown command 'frobnicate'"),
        (["mf", "--rank", "0"], "rank must be a positive integer"),
        (["finetune", "--model", "smollm2-13m"], "unknown model 'smollm2-13m'; did you mean 'smollm2-135m'?"),
        (["finetune", "--task", "wikki"], "unknown task 'wikki'; did you mean 'wiki'?"),
        (["finetune", "--lr", "0"], "lr must be > 0"),
        (["finetune", "--lr", "-1e-3"], "lr must be > 0"),
        (["finetune", "--init", "lora_gaa"], "did you mean 'lora_ga'?"),
        (["finetune", "--init", "fulll"], "or 'full' (every weight trains)"),
        (["mf", "--inits", "hrp,pisa"], "did you mean 'pissa'"),
    ],
)
def test_bad_input_one_line_nonzero_exit_nothing_written(tmp_path, args, message):
    r = lorainit_here(
        *args, *(["--out", str(tmp_path / "s")] if args[0] in ("toy", "mf", "finetune") else []), cwd=tmp_path
    )
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert message in r.stderr
    assert not (tmp_path / "s").exists()


def test_a_rank_past_a_layers_size_is_one_line_after_the_model_loads(tmp_path):
    """A check made after the model is loaded: a real process (in this one, transformers, imported by other tests
    before the CLI quiets it, would print its loading bar)."""
    r = lorainit("finetune", "--rank", "400", "--max-train", "4", "--max-eval", "2", "--out", str(tmp_path / "s"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "rank 400 exceeds min(out, in) = 192 of layer" in r.stderr and not (tmp_path / "s").exists()


def test_help_shows_field_docs():
    r = lorainit("toy", "--help")
    assert r.returncode == 0
    assert "student LoRA rank r (default: 4)" in r.stdout and "LO:HI:N" in r.stdout


def test_the_help_lists_every_experiments_command_from_the_registry():
    from lorainit import cli
    from lorainit.sweeps import experiment

    for name in experiment.names():
        exp = experiment.get(name)
        if exp.command:
            assert (
                f"\n  {name:<9} {exp.summary}\n" in cli.USAGE
            )  # (the help is static: the registry costs a torch import)
            assert callable(experiment.command(name))


def test_top_level_help_version_and_init_names():
    top = lorainit("--help")  # (a real process: the entry point; the rest in this one)
    assert top.returncode == 0 and top.stdout.startswith("lorainit: choose a LoRA adapter's initialization")
    assert all(f"\n  {c} " in top.stdout for c in ("toy", "theory", "mf", "finetune", "sweep", "report"))
    assert lorainit_here().returncode == 2
    v = lorainit_here("--version")
    assert v.returncode == 0 and v.stdout.startswith("lorainit 0.")
    for command in (["finetune", "--help"], ["sweep", "--experiment", "finetune", "--help"]):
        h = " ".join(lorainit_here(*command).stdout.split())
        assert (
            "one of: eva, gaussian, hrp, init_a, init_b, lora_ga, lora_one, orthogonal, pissa" in h
            and "or full (no adapter)" in h
        )
        assert "(default: )" not in h and not any(part.count("(default") > 1 for part in h.split(" --"))
    assert "--train-embeddings" in lorainit_here("finetune", "--help").stdout
    assert "or full" not in lorainit_here("sweep", "--experiment", "toy", "--help").stdout


def test_theory_with_a_missing_study_prints_no_table(tmp_path):
    r = lorainit("theory", "--study", str(tmp_path / "none"))
    assert r.returncode == 2 and r.stdout == "" and "no study results" in r.stderr


def test_ctrl_c_is_one_line_and_exit_130(tmp_path):
    import signal
    import time

    env = {**os.environ, "PYTHONPATH": os.path.join(os.path.dirname(__file__), "..", "src")}
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lorainit",
            "toy",
            "--widths",
            "16,32,64,128",
            "--steps",
            "4000",
            "--seeds",
            "4",
            "--no-progress",
            "--out",
            str(tmp_path / "t"),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C's default action, also where this test runs with SIGINT ignored (a non-interactive shell's background
        # job: its children inherit that, and Python then installs no KeyboardInterrupt handler)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (tmp_path / "t" / "config.json").exists():
            time.sleep(0.1)
        time.sleep(1.0)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=120)
    finally:
        p.kill()  # (nothing once it has exited; else no run left training beside the rest of the suite)
    assert p.returncode == 130, err
    assert err.strip() == "lorainit toy: interrupted; re-run the same command to resume"


@pytest.mark.parametrize(
    "command",
    [
        ["toy", "--widths", "16", "--steps", "2", "--no-progress"],
        ["mf", "--steps", "5", "--seeds", "1", "--preheat-sweep", "5"],
    ],
)
def test_unwritable_output_is_one_clear_line(tmp_path, command):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = lorainit(*command, "--out", str(blocker / "sub"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Not a directory" in r.stderr and "check the path" in r.stderr
    assert blocker.read_text() == "x"


SWEEP = [
    "sweep",
    "--widths",
    "16",
    *TOY_SIZE,
    "--steps",
    "4",
    "--lrs",
    "1e-2,1e-1",
    "--seeds",
    "1",
    "--device",
    "cpu",
    "--no-progress",
]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--inits", "init_a,hrpp"], "unknown init scheme 'hrpp'; did you mean 'hrp'?"),
        (["--lrs", "1e-3:1e-1"], "malformed range '1e-3:1e-1': write LO:HI:N"),
        (["--lrs", "1e-3:x:4"], "malformed range"),
        (["--lrs", "0,1e-3"], "learning rates must be > 0"),
        (["--experiment", "tooy"], "unknown experiment 'tooy'"),
        (
            ["--storage", "postgresql://me:s3cret@127.0.0.1:1/db"],
            "cannot open storage postgresql://me:***@127.0.0.1:1/db",
        ),
        (["--storage", "redis://h"], "unsupported storage 'redis://h'"),
        (["--batch", "-1"], "batch must be a positive integer"),
        (["--rank", "64"], "rank 64 exceeds the smallest width 16"),
    ],
)
def test_sweep_bad_input_one_line_nothing_written(tmp_path, args, message):
    r = lorainit_here(*SWEEP, *args, "--out", str(tmp_path / "s"), cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert message in r.stderr and "s3cret" not in r.stderr
    assert not (tmp_path / "s").exists()


def test_sweep_grows_a_study_refuses_another_setup_untouched_then_reports(tmp_path):
    import hashlib

    out = tmp_path / "s"
    r = lorainit(*SWEEP, "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "4/4 points finished" in r.stdout and f"lorainit report {out}" in r.stdout
    grown = lorainit(*SWEEP[:-5], "--seeds", "2", "--device", "cpu", "--no-progress", "--out", str(out))
    assert grown.returncode == 0 and "8/8 points finished; this worker ran 4" in grown.stdout, grown.stderr
    db = hashlib.sha256((out / "study.db").read_bytes()).hexdigest()
    other = lorainit(*[a if a != "4" else "5" for a in SWEEP], "--out", str(out))  # --steps 5
    assert other.returncode == 2 and "different setup (config.steps: 4 there, 5 now)" in other.stderr
    assert hashlib.sha256((out / "study.db").read_bytes()).hexdigest() == db
    rep = lorainit("report", str(out))
    assert rep.returncode == 0, rep.stderr
    assert "8/8 points finished" in rep.stdout and "width 16: init_a: selected LR" in rep.stdout
    assert (out / "report.md").exists() and (out / "heatmap_width16.png").exists()
    missing = lorainit("report", str(tmp_path / "nothing"))
    assert missing.returncode == 2 and "is not a sweep folder" in missing.stderr


def test_sweep_help_lists_the_experiments_flags():
    r = lorainit("sweep", "--experiment", "mf", "--help")
    assert r.returncode == 0 and "mf experiment" in r.stdout and "--preheat-rank" in r.stdout and "--modes" in r.stdout
    assert "--lr " not in r.stdout  # the grid's --lrs replaces mf's single --lr


def test_report_of_a_copied_sweep_folder_uses_its_own_database(tmp_path):
    import shutil

    out = tmp_path / "s"
    assert lorainit(*SWEEP, "--out", str(out)).returncode == 0
    moved = tmp_path / "elsewhere"
    shutil.copytree(out, moved)
    shutil.rmtree(out)  # sweep.json still names the original path
    r = lorainit("report", str(moved))
    assert r.returncode == 0, r.stderr
    assert not out.exists()  # nothing created at the recorded path
    grown = lorainit(
        *SWEEP[:-5], "--seeds", "2", "--device", "cpu", "--no-progress", "--out", str(moved)
    )  # goes on in the copy
    assert grown.returncode == 0 and "8/8 points finished; this worker ran 4" in grown.stdout, grown.stderr
    assert not out.exists() and json.loads((moved / "sweep.json").read_text())["storage"].endswith("elsewhere/study.db")
    other = lorainit(*SWEEP, "--study", "other", "--out", str(moved))
    assert other.returncode == 2 and "holds the sweep of study 'sweep'" in other.stderr
    (moved / "study.db").unlink()
    r = lorainit("report", str(moved))
    assert r.returncode == 2 and "no study database at" in r.stderr and not out.exists()


@pytest.mark.parametrize(
    "flag,value,message",
    [
        ("--widths", "8,6,6", "--widths lists 6 more than once"),
        ("--lrs", "1e-3,1e-2,1e-3", "--lrs lists 0.001 more than once"),
        ("--inits", "init_a,init_b,init_a", "--inits lists init_a more than once"),
    ],
)
def test_sweep_refuses_a_repeated_grid_value(tmp_path, flag, value, message):
    """Found by the hypothesis CLI test: --widths 11,6,6 made two trials of one point and the worker waited on itself."""
    r = lorainit_here("sweep", flag, value, "--steps", "2", "--out", str(tmp_path / "s"), "--no-progress", cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert message in r.stderr
    assert not (tmp_path / "s").exists()


def test_input_edge_cases_are_one_line_and_write_nothing(tmp_path):
    """Issue 'Reliability', item 7: a lone surrogate, a pickle-only model folder, an empty study.db."""
    bad = tmp_path / "s.jsonl"
    bad.write_text('{"text": "ok", "label": 0}\n{"text": "\\ud800", "label": 1}\n')
    r = lorainit_here("finetune", "--model", "minilm-l6", "--task", str(bad), "--out", str(tmp_path / "r"))
    assert (
        r.returncode == 2
        and len(r.stderr.strip().splitlines()) == 1
        and "s.jsonl:2: the text holds an unpaired surrogate" in r.stderr
    )
    assert not (tmp_path / "r").exists()
    pickled = tmp_path / "model"
    pickled.mkdir()
    (pickled / "config.json").write_text('{"architectures": ["LlamaForCausalLM"], "model_type": "llama"}')
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded")
    r = lorainit_here("finetune", "--model", str(pickled), "--task", "wiki", "--out", str(tmp_path / "r"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "holds only pytorch_model.bin (pickled weights, which lorainit does not load)" in r.stderr
    empty = tmp_path / "sw"
    empty.mkdir()
    (empty / "study.db").write_bytes(b"")
    r = lorainit_here("report", str(empty))
    assert r.returncode == 2 and "(an empty file)" in r.stderr and (empty / "study.db").stat().st_size == 0


def test_sweep_folder_names_with_a_question_mark_and_another_study_in_a_folder(tmp_path):
    out = tmp_path / "what?now"
    r = lorainit(*SWEEP, "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert (out / "study.db").stat().st_size > 0 and not (tmp_path / "what").exists()
    other = lorainit(*SWEEP, "--study", "other", "--out", str(out))
    assert other.returncode == 2 and "holds the sweep of study 'sweep'" in other.stderr
    assert json.loads((out / "sweep.json").read_text())["study"] == "sweep"
    rep = lorainit("report", str(out))
    assert rep.returncode == 0 and "4/4 points finished" in rep.stdout
