"""Where the batched teacher-student step's GPU time goes: torch.profiler over the runs of one width
(bench/toy_batched.py's grid), CUDA graphs off so every kernel is seen; prints the top kernels.

    python bench/profile_toy.py --width 8192 --runs 16
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import toy_batched  # noqa: E402

from lorainit import batched  # noqa: E402
from lorainit.experiments import toy, toy_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=8192)
    ap.add_argument("--runs", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rows", type=int, default=20)
    args = ap.parse_args()
    device = torch.device("cuda")
    cfg = toy_batched.grid_config(args.width, args.runs, args.steps, "cuda")
    data = toy_model.teacher_data(cfg)
    setup = toy.setup_width(cfg, args.width, data, device)
    real_fit = batched.fit
    with mock.patch.object(batched, "fit", lambda *a, **k: real_fit(*a, **{**k, "cuda_graph": False})):
        toy.train_width(dataclasses.replace(cfg, steps=3), args.width, data, device, setup=setup)  # warm-up, compiles
        torch.cuda.synchronize()
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            toy.train_width(cfg, args.width, data, device, setup=setup)
            torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=args.rows, max_name_column_width=60))


if __name__ == "__main__":
    main()
