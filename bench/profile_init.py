"""Where an init scheme's apply time goes: torch.profiler over ``apply.apply`` on a randomly initialized
model of one of bench/init_cost.py's shapes; prints the top operators by CPU and by GPU time.

    python bench/profile_init.py --scheme pissa --niter 4
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import init_cost  # noqa: E402

from lorainit import apply  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="smollm2-135m-shape", choices=list(init_cost.SHAPES))
    ap.add_argument("--scheme", default="pissa")
    ap.add_argument("--niter", type=int, default=None, help="randomized SVD power iterations (SVD schemes)")
    ap.add_argument("--rows", type=int, default=25)
    args = ap.parse_args()
    device = torch.device("cuda")
    kw = {} if args.niter is None else {"niter": args.niter}

    def run(model):
        return apply.apply(model, args.scheme, rank=16, alpha=16, targets=init_cost.TARGETS, **kw)

    run(init_cost.model_of(args.shape, device))  # warm-up: cuSOLVER handles, kernels
    model = init_cost.model_of(args.shape, device)
    torch.cuda.synchronize()
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        run(model)
        torch.cuda.synchronize()
    for key in ("cpu_time_total", "cuda_time_total"):
        print(prof.key_averages().table(sort_by=key, row_limit=args.rows, max_name_column_width=50))


if __name__ == "__main__":
    main()
