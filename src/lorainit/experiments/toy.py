r"""Teacher-student LoRA fine-tuning: Hayou, Ghosh, Yu 2024, eq. (4), Sec. 3.7 and App. B.1.1.

    f(x) = W_out relu(W_in x + (W_h + scaling B A) relu(W_in x))

Teacher: input dim d = 5, width 1000, W_h = 0, a rank-20 LoRA (A, B) injected; every weight
N(0, 1/fan_in). Data: X ~ N(0, I_d), Y = f_teacher(X), 1000 train and 100 test points.
Student of width n: frozen W_in ~ N(0, 1/d), W_h ~ N(0, 1/n), W_out ~ N(0, 1/n); only the rank-r
LoRA factors A (r x n) and B (n x r) train, with AdamW (beta1 0.9, beta2 0.99, no weight decay)
on the full-batch mean squared error.

The LoRA input relu(W_in x) and the frozen part of the hidden pre-activation
P = W_in x + W_h relu(W_in x) do not depend on A or B, so both are computed once per seed.
All (seed, init, LR) runs of one width then train as one batched program (``lorainit.batched``),
the hidden layer through ``toy_head`` (fused Triton kernels on the GPU). The model's tensors (teacher, students,
forward, feature norms) are in ``toy_model``; this module holds the config and the training of one width.
Seeds vary the student's frozen weights and the LoRA init; the teacher and data come from
``data_seed`` and are shared by every run.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from .. import batched, devices, divergence, inits
from ..seeding import generator
from .toy_model import Student, feature_norms, forward, students


@dataclass(frozen=True)
class ToyConfig:
    """Teacher-student study: every (init, LR, seed) at every width."""

    widths: tuple[int, ...] = (128, 256, 512)
    """student widths n"""
    rank: int = 4
    """student LoRA rank r"""
    inits: tuple[str, ...] = ("init_a", "init_b")
    """LoRA init schemes to compare (names from the registry)"""
    lrs: tuple[float, ...] = tuple(2.0**k for k in range(-13, 0))
    """learning-rate grid; on the command line 'LO:HI:N' (N log-spaced values) or 'a,b,c'"""
    seeds: int = 2
    """number of seeds (each: student frozen weights and LoRA init)"""
    steps: int = 200
    """full-batch AdamW steps per run"""
    scaling: float = 1.0
    """LoRA multiplier alpha/r on B A (eq. 4 has none: 1)"""
    beta1: float = 0.9
    """AdamW beta1"""
    beta2: float = 0.99
    """AdamW beta2"""
    eps: float = 1e-8
    """AdamW epsilon"""
    input_dim: int = 5
    """input dimension d"""
    teacher_width: int = 1000
    """teacher width"""
    teacher_rank: int = 20
    """rank of the teacher's injected LoRA"""
    n_train: int = 1000
    """training points"""
    n_test: int = 100
    """test points"""
    data_seed: int = 0
    """seed of the teacher and the data"""
    log_every: int = 5
    """record losses and |Z_A|, |Z_B| every this many steps"""
    diverge_factor: float = divergence.STUDY_FACTOR
    """a run whose train loss exceeds this multiple of its initial loss is stopped and recorded as diverged"""
    zb_bound: float = 10.0
    """a run counts as stable if its per-coordinate |Z_B| (mean ||B A z|| / sqrt(n)) stays below this"""
    select_on: Literal["train", "test"] = "train"
    """loss that defines the optimal LR: final train loss (as in the paper's Fig. 2-3) or test loss"""
    device: str = "auto"
    """'auto' (cuda if available), 'cpu' or 'cuda'"""


PRESETS: dict[str, dict] = {
    "quick": {},
    "paper": {
        "widths": tuple(2**k for k in range(7, 14)),
        "lrs": tuple(2.0 ** (k / 2) for k in range(-30, -1)),
        "seeds": 3,
        "steps": 400,
        "log_every": 10,
    },
}


def validate(cfg: ToyConfig) -> None:
    """Raise ValueError with one line naming the bad setting and how to fix it."""
    if not cfg.widths:
        raise ValueError("widths is empty: give at least one width, e.g. --widths 128,256")
    if any(n <= 0 for n in cfg.widths):
        raise ValueError(f"widths must be positive integers; got {cfg.widths}")
    if cfg.rank <= 0:
        raise ValueError(f"rank must be a positive integer; got {cfg.rank}")
    if cfg.rank > min(cfg.widths):
        raise ValueError(
            f"rank {cfg.rank} exceeds the smallest width {min(cfg.widths)}; lower --rank or raise --widths"
        )
    if not cfg.lrs:
        raise ValueError("the learning-rate grid is empty: give e.g. --lrs 1e-4:1e-1:8")
    if any(not lr > 0 for lr in cfg.lrs):
        raise ValueError(f"learning rates must be > 0; got {cfg.lrs}")
    if not cfg.inits:
        raise ValueError("no init schemes given: e.g. --inits init_a,init_b")
    for name in cfg.inits:
        e = inits.entry(name)  # KeyError with the closest name
        if e.needs or e.residual:
            why = f"needs {', '.join(e.needs)}" if e.needs else "replaces the frozen W_h by a residual"
            raise ValueError(
                f"init {name!r} {why}; the teacher-student study takes data-free schemes that keep W_h "
                f"(e.g. {', '.join(n for n in inits.names() if not inits.entry(n).needs and not inits.entry(n).residual)})"
            )
    for name in ("seeds", "steps", "input_dim", "teacher_width", "teacher_rank", "n_train", "n_test", "log_every"):
        if getattr(cfg, name) <= 0:
            raise ValueError(f"{name} must be a positive integer; got {getattr(cfg, name)}")
    if cfg.select_on not in ("train", "test"):
        raise ValueError(f"select_on must be 'train' or 'test'; got {cfg.select_on!r}")


def frozen_bytes(cfg: ToyConfig, width: int) -> int:
    """A lower bound on one width's memory: its seeds' frozen students in float32, W_h (n x n) and the
    train and test Z and P ((N_train + N_test) x n each)."""
    return 4 * cfg.seeds * (width * width + 2 * (cfg.n_train + cfg.n_test) * width)


def check_fits(cfg: ToyConfig) -> None:
    """A ValueError, before anything runs or is written, where the widest student cannot fit the device at all."""
    device = devices.resolve_device(cfg.device)
    need, free = frozen_bytes(cfg, max(cfg.widths)), devices.free_bytes(device)
    if need > free:
        raise ValueError(
            f"width {max(cfg.widths)} needs at least {need / 2**30:.1f} GiB for its {cfg.seeds} frozen student(s) "
            f"(W_h is width x width float32), more than the {free / 2**30:.1f} GiB free on {device}; "
            "choose smaller --widths or fewer --seeds"
        )


def run_grid(cfg: ToyConfig) -> list[tuple[int, str, float]]:
    """The runs of one width in batch order: seed-major, then init, then LR."""
    return list(itertools.product(range(cfg.seeds), cfg.inits, cfg.lrs))


def grid_seeds(grid: list[tuple[int, str, float]]) -> list[int]:
    """The seeds of a batch of runs, which must be seed-major with the same number of runs per seed
    (the batched forward puts run k on seed k // M); raises ValueError otherwise."""
    seeds = list(dict.fromkeys(s for s, _, _ in grid))
    M = len(grid) // len(seeds)
    if len(grid) != M * len(seeds) or any(grid[k][0] != seeds[k // M] for k in range(len(grid))):
        raise ValueError("a batch of toy runs must be seed-major with the same number of runs per seed")
    return seeds


def init_factors(
    cfg: ToyConfig, width: int, student: Student, device: torch.device, grid: list[tuple[int, str, float]] | None = None
) -> tuple[Tensor, Tensor]:
    """Stacked initial (A, B) of every run; one draw per (seed, init), shared by all its LRs."""
    grid = run_grid(cfg) if grid is None else grid
    position = {s: i for i, s in enumerate(grid_seeds(grid))}
    As, Bs = [], []
    for seed, name, _lr in grid:
        g = generator("toy-lora-init", cfg.data_seed, seed, width, name)
        f = inits.get(name)(student.W_h[position[seed]], cfg.rank, generator=g)
        As.append(f.A)
        Bs.append(f.B)
    return torch.stack(As).to(device), torch.stack(Bs).to(device)  # (K, r, n), (K, n, r)


@dataclass
class Setup:
    """Everything a width's runs share before training: the frozen students and the initial factors."""

    grid: list[tuple[int, str, float]]
    students: dict[str, Student]  # split -> Student, the (n, n) W_h already dropped
    A: Tensor  # (K, r, n) initial lora_A of every run
    B: Tensor  # (K, n, r) initial lora_B


def setup_width(
    cfg: ToyConfig,
    width: int,
    data: dict[str, Tensor],
    device: torch.device,
    grid: list[tuple[int, str, float]] | None = None,
) -> Setup:
    """Build the students of the seeds in ``grid`` (default: the whole grid) and every run's init."""
    grid = run_grid(cfg) if grid is None else grid
    st = students(cfg, width, {"train": data["X_train"], "test": data["X_test"]}, device, seeds=grid_seeds(grid))
    A, B = init_factors(cfg, width, st["train"], device, grid)
    for s in st.values():
        s.W_h = []  # the inits have run; free the (n, n) weights
    return Setup(grid, st, A, B)


def train_width(
    cfg: ToyConfig,
    width: int,
    data: dict[str, Tensor],
    device: torch.device,
    on_step=None,
    grid: list[tuple[int, str, float]] | None = None,
    setup: Setup | None = None,
) -> dict:
    """Train every (seed, init, LR) run of one width together (or only the runs of ``grid``, seed-major
    with equal runs per seed, or those of a prepared ``setup``, which is left unchanged); return
    JSON-ready results."""
    start = time.perf_counter()
    grid = run_grid(cfg) if grid is None and setup is None else grid
    lone = setup is None and len(grid) == 1
    if (
        lone
    ):  # K = 1 takes other kernels (a bmm of one, einsum's 2-D path) whose rounding differs from any K >= 2, and a
        grid = grid * 2  # run's value must not depend on its batch: a lone run trains as one of two identical runs
    setup = setup_width(cfg, width, data, device, grid) if setup is None else setup
    grid, st = setup.grid, setup.students
    Y = {"train": data["Y_train"].to(device), "test": data["Y_test"].to(device)}
    A = setup.A.clone().requires_grad_(True)
    B = setup.B.clone().requires_grad_(True)
    lr = torch.tensor([lr for _, _, lr in grid], dtype=torch.get_default_dtype(), device=device)

    def loss_fn(params, log):
        out, Z_A = forward(st["train"], *params, cfg.scaling)
        return ((out - Y["train"]) ** 2).mean(-1), feature_norms(Z_A.detach(), params[1].detach()) if log else {}

    def evaluate(params):
        out, _ = forward(st["test"], *params, cfg.scaling)
        return {"test_loss": ((out - Y["test"]) ** 2).mean(-1)}

    opt = batched.AdamW(beta1=cfg.beta1, beta2=cfg.beta2, eps=cfg.eps, weight_decay=0.0)
    hist = batched.fit(
        [A, B],
        loss_fn,
        lr,
        cfg.steps,
        opt=opt,
        log_every=cfg.log_every,
        evaluate=evaluate,
        diverge_factor=cfg.diverge_factor,
        on_step=on_step,
    )
    runs = []
    for k, (seed, name, lr_k) in enumerate(grid):
        curve = lambda t: [None if v != v else float(v) for v in t[:, k].tolist()]  # NaN -> null  # noqa: E731
        runs.append(
            {
                "seed": seed,
                "init": name,
                "lr": lr_k,
                "diverged_step": int(hist.diverged_step[k]) if hist.diverged_step[k] >= 0 else None,
                "diverged_reason": hist.reason[k],
                "train_loss": curve(hist.train_loss),
                "test_loss": curve(hist.metrics["test_loss"]),
                "za": curve(hist.metrics["za"]),
                "zb": curve(hist.metrics["zb"]),
            }
        )
    return {
        "width": width,
        "steps": hist.steps,
        "runs": runs[:1] if lone else runs,
        "seconds": time.perf_counter() - start,
    }
