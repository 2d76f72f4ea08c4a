"""``lorainit toy``: the teacher-student study of Hayou et al. 2024 from the command line (and the toy study readers
``lorainit theory --study`` uses)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import cliargs, devices, io
from . import toy, toy_report, toy_study

HELP = """Teacher-student LoRA study of Hayou, Ghosh, Yu 2024 (eq. 4, Sec. 3.7, App. B.1.1): every
(init, LR, seed) run of a width trains batched on one device; prints the optimal and max-stable LR per
init and width, their slopes vs width next to the theory's -1/2 (Init[A]) and -1 (Init[B]), and writes
results.json, findings.txt and three PNG figures into --out."""


def main(argv: list[str]) -> int:
    p = cliargs.Parser(prog="lorainit toy", description=HELP)
    p.add_argument(
        "--preset",
        choices=list(toy.PRESETS),
        default="quick",
        help="starting point: 'quick' (CPU, about a minute; the defaults shown below) or 'paper' (widths "
        "128..8192, 29 LRs, 3 seeds, 400 steps; meant for a GPU); flags below override it (default: quick)",
    )
    p.add_argument(
        "--out", type=Path, default=None, help="study folder (default: runs/toy-PRESET); re-running resumes it"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="discard a study already in --out, even with another config"
    )
    p.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help="show a progress bar (default: on)"
    )
    cliargs.add_dataclass(p, toy.ToyConfig)
    args = p.parse_args(argv)
    out = args.out or Path("runs") / f"toy-{args.preset}"
    try:
        cfg = toy_study.preset(args.preset, **cliargs.given(args, toy.ToyConfig))
        toy.validate(cfg)  # a bad setting is the one line, not after the warning below
        toy.check_fits(cfg)
        if max(cfg.widths) >= 4096 and devices.resolve_device(cfg.device).type == "cpu":
            print(
                f"lorainit toy: warning: widths up to {max(cfg.widths)} on a CPU take hours (the paper preset is meant for a "
                "GPU: 16 s on an H100); --preset quick or smaller --widths run in minutes",
                file=sys.stderr,
            )
        study = toy_study.run_study(cfg, out, overwrite=args.overwrite, progress=args.progress)
    except (ValueError, KeyError) as e:
        cliargs.fail(p.prog, e.args[0] if e.args else str(e))
    text = toy_report.findings(study)
    io.write_text(out / "findings.txt", text + "\n")
    figs = toy_report.figures(study, out)
    print(text)
    print(f"\nwrote {out / 'results.json'}, {out / 'findings.txt'}, " + ", ".join(str(f) for f in figs))
    return 0


def study_results(path: Path) -> Path:
    """A toy study's results.json (``path`` is it or its folder); a ValueError where there is none."""
    if path.is_dir():
        path = path / "results.json"
    if not path.exists():
        raise ValueError(f"no study results at {path}: run 'lorainit toy' first or point --study at its folder")
    return path


def print_measured(path: Path) -> None:
    path = study_results(path)
    slopes = io.read_json(path)["analysis"]["slopes"]
    print(f"\nmeasured in {path}:")
    for init, s in slopes.items():
        ms, op = s["max_stable"], s["optimal"]
        f = lambda v: "-" if v is None else f"{v:+.2f}"  # noqa: E731
        print(
            f"{init}: max-stable LR slope {f(ms['slope'])} (theory {f(toy_study.THEORY_SLOPE.get(init))}), optimal LR slope {f(op['slope'])}"
        )
