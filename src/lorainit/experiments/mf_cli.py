"""``lorainit mf``: the matrix factorization of Chen et al. 2025 (HRP, Fig. 1) from the command line."""

from __future__ import annotations

from pathlib import Path

from .. import cliargs, io
from . import mf, mf_report

HELP = """Matrix factorization toward M = diag(I_12, 0_20) with a rank-2 LoRA (Chen et al. 2025, HRP, Fig. 1):
classic and asymmetric LoRA from gaussian / orthogonal / HRP / target inits, several seeds, by
gradient descent. Prints final losses and steps to the optimum (with and without HRP's preheat) and
writes results.json, findings.txt and mf_loss_curves.png into --out. Seconds on a CPU."""


def main(argv: list[str]) -> int:
    p = cliargs.Parser(prog="lorainit mf", description=HELP)
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
