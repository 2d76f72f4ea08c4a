"""``lorainit <command>``: the command line. Each command's flags come from a dataclass config (``cliargs``)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from . import cliargs, theory


@dataclasses.dataclass(frozen=True)
class TheoryConfig:
    """The width exponents of Lemma 1 / Theorems 1-2 over a range of learning-rate exponents."""

    inits: tuple[str, ...] = ("init_a", "init_b")
    """inits with a width theory"""
    gammas: tuple[float, ...] = dataclasses.field(
        default=(-1.5, -1.25, -1.0, -0.75, -0.5, -0.25, 0.0), metadata={"spacing": "linear"}
    )
    """learning-rate exponents gamma[eta] (eta = Theta(n^gamma)); 'LO:HI:N' gives N evenly spaced values"""
    steps: int = 2
    """fine-tuning step t >= 2 at which the exponents are read (Def. 5 is about t > 1)"""
    study: str = ""
    """optional toy study folder or results.json: print its measured slopes next to the theory"""


THEORY_HELP = """Gamma-operator calculus of Hayou, Ghosh, Yu 2024 (Lemma 1, Theorems 1-2): width exponents of
Z_A, B, Z_B and the feature updates delta_1, delta_2 for each init and learning-rate exponent, with
the verdicts stable / feature learning / efficient / internal instability."""


def _theory(argv: list[str]) -> int:
    p = cliargs.Parser(prog="lorainit theory", description=THEORY_HELP)
    cliargs.add_dataclass(p, TheoryConfig)
    cfg = TheoryConfig(**cliargs.given(p.parse_args(argv), TheoryConfig))
    try:
        if cfg.study:  # a missing study is refused before anything is printed
            from .experiments.toy_cli import study_results

            study_results(Path(cfg.study))
        rows = theory.table(list(cfg.inits), list(cfg.gammas), cfg.steps)
        print(theory.format_table(rows))
        print()
        for init in cfg.inits:
            hi = theory.max_stable_exponent(init)
            unstable = [
                r.gamma_eta for r in theory.table([init], [k / 64 for k in range(-192, 65)]) if r.internal_instability
            ]
            span = (
                f"; internal instability for gamma[eta] in [{min(unstable):g}, {max(unstable):g}] on a 1/64 grid"
                if unstable
                else ""
            )
            print(f"{init}: max stable exponent {hi:g} (LR up to Theta(n^{hi:g})){span}")
        if cfg.study:
            from .experiments.toy_cli import print_measured

            print_measured(Path(cfg.study))
    except (ValueError, KeyError, OSError) as e:
        cliargs.fail(p.prog, e.args[0] if isinstance(e, (ValueError, KeyError)) and e.args else str(e))
    return 0


SWEEP_HELP = """Init x learning-rate study: every (init, LR, seed[, width | mode]) point of the grid is one Optuna
trial in a study stored in SQLite (default: OUT/study.db) or PostgreSQL (--storage). Start the same
command in more processes or on more machines to add workers; re-run it to resume after a crash
(finished points are never re-run, lost ones are re-queued). Diverged runs are recorded with their step
and reason. A worker trains its claimed points (--batch) as one batched program: toy points of one
width, mf points of one mode, finetune points of any init on one frozen base. 'lorainit sweep
--experiment EXP --help' lists that experiment's flags. Then: lorainit report OUT."""


def _sweep(argv: list[str]) -> int:
    from .sweeps import gpus

    started = gpus.early(argv)  # a --gpus sweep's workers, started before the imports and checks below
    try:
        return _sweep_checked(argv, started)
    finally:
        if started is not None:
            started.discard()  # (flags that did not check out; nothing once run_on_gpus kept them)


def _sweep_checked(argv: list[str], started) -> int:
    from .sweeps import experiment, gpus, worker

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--experiment", default="toy")
    exp = pre.parse_known_args(argv)[0].experiment
    try:
        runner = experiment.get(exp)
    except ValueError as e:
        cliargs.fail("lorainit sweep", str(e))
    p = cliargs.Parser(prog="lorainit sweep", description=SWEEP_HELP)
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="sweep folder: study.db, run folders, report (default: runs/sweep-EXPERIMENT)",
    )
    p.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help="show a progress bar (default: on)"
    )
    cliargs.add_dataclass(p, worker.SweepConfig)
    cliargs.add_dataclass(
        p.add_argument_group(f"{exp} experiment"),
        runner.config,
        exclude=tuple(f for f in runner.replaced if f not in runner.from_config),
    )
    cliargs.name_the_inits(p, full=bool(runner.methods))
    args = p.parse_args(argv)
    out = args.out or Path("runs") / f"sweep-{exp}"
    try:
        sweep = worker.SweepConfig(**cliargs.given(args, worker.SweepConfig))
        cfg = runner.config(**cliargs.given(args, runner.config))
        runner.validate(cfg)
        # (gpus.early chose them from the GPUs nvidia-smi counts; otherwise from the ones torch sees)
        chosen = (
            started.ids if started else gpus.workers_for(sweep.gpus, gpus.visible() if sweep.gpus != "none" else [])
        )
        if chosen:  # a worker process per GPU, pinned to it
            res = worker.run_on_gpus(sweep, cfg, out, argv, chosen, progress=args.progress, started=started)
        else:
            res = worker.run(sweep, cfg, out, progress=args.progress)
    except (ValueError, KeyError, FileExistsError) as e:
        cliargs.fail(p.prog, e.args[0] if e.args else str(e))
    if "workers" in res:
        failed = {g: c for g, c in res["workers"].items() if c}
        print(
            f"study {res['study']!r} in {res['storage']}: {res['done']}/{res['total']} points finished by "
            f"{len(res['workers'])} workers (GPUs {', '.join(res['workers'])}; their logs in {res['logs']})"
        )
        if failed:
            cliargs.fail(
                p.prog,
                f"the workers on GPU {', '.join(failed)} exited with {', '.join(map(str, failed.values()))}; "
                f"see {res['logs']}; re-run the command to resume",
            )
        if res["done"] >= res["total"]:
            print(f"next: lorainit report {out}")
        return 0
    print(
        f"study {res['study']!r} in {res['storage']}: {res['done']}/{res['total']} points finished; this worker ran "
        f"{res['ran']} ({res['diverged']} diverged, {res['lost']} lost to re-queueing)"
    )
    if res["done"] >= res["total"]:
        print(f"next: lorainit report {out}")
    return 0


REPORT_HELP = """Report of a sweep: per init the validation-selected LR, the test metric there (mean and standard
error over seeds), the divergence boundary; init x LR heatmaps and metric-vs-LR curves (PNG); for toy
studies the optimal / max-stable LR vs width; trials.csv and summary.json for your own analysis.
Works on an unfinished study too (showing what is finished)."""


def _report(argv: list[str]) -> int:
    from . import io
    from .sweeps import report, storage, store

    p = cliargs.Parser(prog="lorainit report", description=REPORT_HELP)
    p.add_argument(
        "folder", type=Path, metavar="STUDY", help="the sweep folder (its sweep.json names the storage and study)"
    )
    p.add_argument(
        "--storage",
        default="",
        help="storage URL (default: the one in STUDY/sweep.json; needed for a PostgreSQL password)",
    )
    p.add_argument(
        "--study",
        "--study-name",
        dest="study_name",
        default="",
        help="study name inside the storage, as sweep's --study (default: the one in STUDY/sweep.json)",
    )
    p.add_argument("--out", type=Path, default=None, help="where to write the report (default: the sweep folder)")
    p.add_argument(
        "--export-best",
        type=Path,
        default=None,
        metavar="DIR",
        help="also copy the winning run's adapter (a plain PEFT folder, with its run card) to DIR (a new folder)",
    )
    args = p.parse_args(argv)
    try:
        meta = io.read_json(args.folder / "sweep.json") if (args.folder / "sweep.json").exists() else {}
        local = args.folder / "study.db"  # a copied sweep folder: its own database, wherever it was made
        url = (
            args.storage
            or (storage.sqlite_url(local) if local.exists() else meta.get("storage"))
            or storage.sqlite_url(local)
        )
        if not args.storage and not meta and not (args.folder / "study.db").exists():
            raise ValueError(
                f"{args.folder} is not a sweep folder (no sweep.json or study.db); give the folder 'lorainit sweep --out' wrote"
            )
        if "***" in url:
            raise ValueError(
                f"the storage password is not stored in {args.folder / 'sweep.json'}; pass --storage with it"
            )
        st = store.Store(url, args.study_name or meta.get("study", "sweep"), must_exist=True)
        st.load()
        out = args.out or args.folder
        summary = report.write(st, out, folder=args.folder)
        exported = report.export_best(summary, args.export_best) if args.export_best else None
    except (ValueError, KeyError) as e:
        cliargs.fail(p.prog, e.args[0] if e.args else str(e))
    integ = summary["integrity"]
    print(
        f"{integ['finished_points']}/{integ['points']} points finished; wrote {out / 'report.md'}, summary.json, trials.csv and figures"
    )
    for line in report.answer_lines(summary)[2:]:
        if line:
            print(line.replace("**", ""))
    if exported:
        print(f"exported the winning adapter to {exported} (loads with peft.PeftModel.from_pretrained)")
    for g in summary["groups"]:
        title = ", ".join(f"{k} {v}" for k, v in g["group"].items())
        for init, s in g["inits"].items():
            t = s["test_at_selected"]
            sel = "-" if s["selected_lr"] is None else f"{s['selected_lr']:.3g}"
            test = "-" if t[0] is None else f"{t[0]:.4g}" + (f" ± {t[1]:.2g}" if t[1] is not None else "")
            print(f"{title + ': ' if title else ''}{init}: selected LR {sel}, test {summary['metric']} {test}")
    return 0


def _reproduce(argv: list[str]) -> int:
    from .reproduction import render

    return render.main(argv)


TOOLS = {
    "theory": _theory,
    "sweep": _sweep,
    "report": _report,
    "reproduce": _reproduce,
}  # the experiments' own commands
# (toy, mf, finetune: ``Experiment.command``) come from the registry, imported only when one runs


def _quiet_libraries() -> None:
    """Library chatter (loading bars, deprecation notes) would bury our one-line messages."""
    import os
    import warnings

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")


USAGE = """lorainit: choose a LoRA adapter's initialization and its learning rate by measurement.

usage: lorainit COMMAND [options]        (lorainit COMMAND --help lists a command's options)

  toy       teacher-student study of Hayou et al. 2024: optimal and max-stable LR vs width, Init[A] vs Init[B]
  theory    the gamma-operator table of Hayou et al. 2024 (Lemma 1, Theorems 1-2), optionally beside a toy study
  mf        matrix factorization of Chen et al. 2025 (HRP, Fig. 1): HRP vs random inits
  finetune  one LoRA fine-tune of a real model with any init (resumable; torchrun for data parallel)
  sweep     init x learning-rate x seed study, every init at its own LR, batched, resumable, many workers
  report    a sweep's answer: the best init and LR, per-init tables, heatmaps, curves, CSV/JSON
  reproduce REPRODUCTION.md: every claim of the two papers judged on the committed studies

examples:
  lorainit toy --preset quick
  lorainit sweep --experiment finetune --model minilm-l6 --task nli --inits init_a,pissa,hrp --lrs 1e-5:3e-3:8
  lorainit report runs/sweep-finetune
"""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _quiet_libraries()
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE.rstrip())
        return 0 if argv else 2
    if argv[0] == "--version":
        from . import __version__

        print(f"lorainit {__version__}")
        return 0
    run = TOOLS.get(argv[0])
    if run is None:
        from .sweeps import experiment

        run = experiment.command(argv[0])
        if run is None:
            names = [n for n in experiment.names() if experiment.get(n).command] + list(TOOLS)  # (none imported)
            cliargs.fail("lorainit", f"unknown command {argv[0]!r}; choose one of {', '.join(names)} (lorainit --help)")
    try:
        return run(argv[1:])
    except KeyboardInterrupt:  # Ctrl-C: every result is written atomically and fine-tunes and sweeps checkpoint
        print(f"lorainit {argv[0]}: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except OSError as e:  # unwritable or missing path, full disk: files are written atomically, so nothing half-written
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        cliargs.fail(
            f"lorainit {argv[0]}", f"{e.strerror or e}{where}; check the path, its permissions and free disk space"
        )


if __name__ == "__main__":
    raise SystemExit(main())
