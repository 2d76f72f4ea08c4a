r"""K LoRA fine-tunes of one frozen base model in one process and one forward/backward per step.

Every target ``nn.Linear`` (W: out x in) becomes a ``MultiLoRALinear`` holding K adapters
(``lora_A[k]``: r x in, ``lora_B[k]``: out x r, scaling s). A step's input is the K runs' own
micro-batches stacked along the batch dimension (run k owns rows k*b .. (k+1)*b - 1); the frozen base
computes x W^T for all rows in one GEMM and each run adds its own update (LoRA, Hu et al. 2021, eq. 3):

    y_k = x_k W^T + s (x_k A_k^T) B_k^T - s (x_k A0_k^T) B0_k^T        (two batched matmuls over k)

The last term is a frozen correction carried by the runs of a residual scheme (PiSSA, LoRA-GA), whose
PEFT run replaces W by W - s B0 A0: the same function, on a base all runs share unchanged; it is the
rank-2r adapter [A; A0], [B, -B0] that ``lorainit.export`` saves. A task head that the fine-tune trains
(a classifier) becomes ``PerRun``: K copies, copy k applied to run k's rows.

Rows never mix (attention and normalization act within a sequence), so run k's loss depends on its own
adapter, head and data only, and the sum of the runs' losses gives each adapter exactly its own
gradient. A layer's K adapters are one tensor with a leading run dimension (``lora_A[k]`` is run k's), and
``optimizer`` gives the runs one AdamW with per-run learning rates (``lorainit.runopt``: its LR, and lr x
LoRA+ ratio for lora_B), so the optimizer arithmetic is that of K separate runs. Initial factors come from ``lorainit.starts``, the
draw a PEFT run of the same scheme and seed gets. Per-run losses and divergence: ``lorainit.runloss``.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from torch import nn

from . import merged, speed
from .inits import Factors
from .siblings import Siblings, shared_inputs
from .starts import PEFT_PREFIX


@dataclass(frozen=True)
class Run:
    """One of the K runs: its init scheme, learning rate, seed and LoRA+ ratio."""

    init: str
    lr: float
    seed: int = 0
    loraplus_ratio: float = 1.0


class MultiLoRALinear(nn.Module):
    """A frozen linear layer with K LoRA adapters, one per run (``lora_A`` (K, r, in), ``lora_B`` (K, out, r)),
    applied to the run's rows of the input;
    ``corrections[k]`` (or None) is run k's frozen (A0, B0), subtracted as s B0 A0 x."""

    def __init__(
        self,
        base: nn.Linear,
        A: list[torch.Tensor],
        B: list[torch.Tensor],
        scaling: float,
        corrections: list[Factors | None] | None = None,
    ):
        super().__init__()
        self.base = base
        device = base.weight.device
        self.lora_A = nn.Parameter(
            torch.stack([a.detach().float() for a in A]).to(device)
        )  # (K, r, in): lora_A[k] is run k's
        self.lora_B = nn.Parameter(torch.stack([b.detach().float() for b in B]).to(device))  # (K, out, r)
        self.scaling = scaling
        corr_A = corr_B = None
        if corrections is not None and any(c is not None for c in corrections):
            zero = Factors(A=torch.zeros_like(self.lora_A[0]), B=torch.zeros_like(self.lora_B[0]))
            cs = [zero if c is None else c for c in corrections]
            corr_A = torch.stack([c.A.float() for c in cs]).to(device)  # (K, r, in)
            corr_B = -torch.stack([c.B.float() for c in cs]).to(device)  # (K, out, r): -B0
        self.register_buffer("corr_A", corr_A, persistent=False)
        self.register_buffer("corr_B", corr_B, persistent=False)
        self.siblings = None  # a lorainit.siblings.Siblings where this layer shares its input with others

    def adapter_A(self, dtype: torch.dtype) -> torch.Tensor:
        """(K, r', in): [A; A0] with a frozen correction, else A."""
        A = self.lora_A if self.corr_A is None else torch.cat([self.lora_A, self.corr_A], 1)
        return A.to(dtype)

    def adapter_B(self, dtype: torch.dtype) -> torch.Tensor:
        """(K, out, r'): [B, -B0] with a frozen correction, else B."""
        B = self.lora_B if self.corr_B is None else torch.cat([self.lora_B, self.corr_B], 2)
        return B.to(dtype)

    merged = True
    """True: under torch.compile, the base output and the runs' updates from one GEMM per run (``lorainit.merged``:
    the update inside the product, with the siblings reading this layer's input; 1.09-1.10x the 8-run compiled step,
    bench/results/lora_path_merged_h100x2.json; with ``kernel`` the two products in one Triton kernel); eager, and
    with False: the base output, then s (x A^T) B^T added to it (``fused_add`` says how; the compiled path until
    2026-11-27). Eager keeps the added path: the merged one was
    measured faster only compiled (eager K=8: 412.2 vs 408.8 ms, one pair), and its concatenations are launches that
    only the compiler fuses; eager K=1's ratio to stock PEFT moved with the machine (1.36x, 1.08x merged, 0.95x:
    multi_run_h100_e_stock_graphs, _f_merged, _g_eager_added.json), so no eager effect either way is established."""

    kernel = False
    """True: the merged GEMM's two products in one Triton kernel (``lorainit.fused``, where ``fused.usable``), no
    concatenated input. ``compile_blocks`` sets it where the blocks replay as CUDA graphs (measured ahead there from
    ``fused.MIN_ROWS`` rows, and host-bound without graphs: ``fused.ENABLED``)."""

    def merging(self) -> bool:
        """Whether this call takes the merged GEMM (``merged``, and traced by torch.compile)."""
        return self.merged and torch.compiler.is_compiling()

    fused_add = True
    """With ``merged`` False, how s (x A^T) B^T joins the base output y: True, in place on y (eager; a layer alone,
    whose y is no view, so its backward keeps no copy) or as a product and an add that the compiler fuses into the
    add's consumer; False, one out-of-place baddbmm (a copy of y, then the product added to it). Siblings in eager
    take the baddbmm too (their y are views of one output)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        K = len(self.lora_A)
        shape = x.shape[:-1]
        if self.merging():
            if self.siblings is not None:  # computed with the layers sharing this input
                y = self.siblings.outputs(self, x)  # (K, rows_k, out)
            else:
                (y,) = merged.outputs(merged.by_run(x, K), self.base.weight, self.base.bias, [self])
            return merged.by_batch(y, shape)
        if self.siblings is not None:  # the base output and x A^T, computed with the layers sharing this input
            y, xa = self.siblings.outputs(self, x)  # y: a view of the siblings' one output
            y = merged.by_run(y, K)  # (K, rows_k, out)
        else:
            xs = merged.by_run(x, K)  # (K, rows_k, in): run k's rows
            y = self.base(xs)  # (K, rows_k, out)
            xa = torch.bmm(xs.to(y.dtype), self.adapter_A(y.dtype).transpose(1, 2))  # (K, rows_k, r')
        Bt = self.adapter_B(y.dtype).transpose(1, 2)  # (K, r', out)
        if self.fused_add and torch.compiler.is_compiling():  # inductor fuses the add and scaling into the next op
            y = y + self.scaling * torch.bmm(xa, Bt)
        elif self.fused_add and self.siblings is None:  # y is the base's own output (not a view), which its
            y = y.baddbmm_(xa, Bt, alpha=self.scaling)  # backward does not keep: the update is added in place
        else:
            y = torch.baddbmm(y, xa, Bt, alpha=self.scaling)
        return merged.by_batch(y, shape)

    @torch.no_grad()
    def feature_norms(self, x: torch.Tensor) -> tuple[list[float], list[float]]:
        """Per run, the mean token norms |Z_A| = ||A_k z|| and |Z_B| = ||B_k A_k z|| of the trainable adapter
        (Hayou et al. 2024, Fig. 3) over run k's rows of the input ``x``."""
        K = len(self.lora_A)
        xs = merged.by_run(x, K).float()  # (K, rows_k, in)
        za = torch.bmm(xs, self.lora_A.transpose(1, 2))  # (K, rows_k, r)
        zb = torch.bmm(za, self.lora_B.transpose(1, 2))  # (K, rows_k, out)
        return za.norm(dim=-1).mean(1).tolist(), zb.norm(dim=-1).mean(1).tolist()


class PerRun(nn.Module):
    """K copies of a module (a task head), copy k applied to run k's rows: dim 0 of the input, in K equal parts."""

    def __init__(self, original: nn.Module, copies: list[nn.Module]):
        super().__init__()
        self.runs = nn.ModuleList(copies)
        self.__dict__["original"] = original  # restored by ``detach``; not a submodule (not trained, not saved)

    def forward(self, x: torch.Tensor, *args, **kw) -> torch.Tensor:
        parts = x.split(x.shape[0] // len(self.runs))
        return torch.cat([m(p, *args, **kw) for m, p in zip(self.runs, parts)])


def targets_of(model: nn.Module, targets: list[str]) -> dict[str, nn.Linear]:
    """The model's linear layers whose last name component is in ``targets`` (PEFT's suffix matching)."""
    found = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.split(".")[-1] in targets}
    if not found:
        raise ValueError(f"no linear layer named {', '.join(targets)} in the model: check the target module names")
    return found


def scaling_of(rank: int, alpha: float, use_rslora: bool = False) -> float:
    """LoRA's scaling alpha / r, or rsLoRA's alpha / sqrt(r) (Kalajdzievski 2023)."""
    return alpha / math.sqrt(rank) if use_rslora else alpha / rank


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def attach(
    model: nn.Module,
    runs: list[Run],
    starts: list[dict[str, Factors]],
    *,
    scaling: float,
    targets: list[str],
    corrected: list[bool] | None = None,
    head: str | None = None,
    heads: list[nn.Module] | None = None,
    siblings: bool = True,
) -> dict[str, MultiLoRALinear]:
    """Replace each target layer of ``model`` (in place) by a ``MultiLoRALinear`` with one adapter per run, run k
    starting from ``starts[k]`` (PEFT layer name -> Factors; ``lorainit.starts``) and carrying its start as a frozen
    correction where ``corrected[k]`` (a residual scheme). ``heads``: one trainable copy of the module named
    ``head`` per run. Every other parameter is frozen. ``siblings``: target layers found reading one input compute
    together (``lorainit.siblings``). Returns the layers by module name; ``detach`` undoes it."""
    if len(starts) != len(runs) or (heads is not None and len(heads) != len(runs)):
        raise ValueError(f"{len(runs)} runs need as many starts (got {len(starts)}) and heads")
    corrected = corrected or [False] * len(runs)
    for p in model.parameters():
        p.requires_grad_(False)
    layers = {}
    linears = targets_of(model, targets)
    groups = shared_inputs(model, linears) if siblings else []
    for name, base in linears.items():
        fs = [s[PEFT_PREFIX + name] for s in starts]
        layer = MultiLoRALinear(
            base, [f.A for f in fs], [f.B for f in fs], scaling, [f if c else None for f, c in zip(fs, corrected)]
        ).to(base.weight.device)
        _set(model, name, layer)
        layers[name] = layer
    if heads is not None:
        original = model.get_submodule(head)
        for h in heads:
            h.to(next(original.parameters()).device).float().requires_grad_(True)
        _set(model, head, PerRun(original, heads))
    for names in groups:
        group = Siblings([layers[n] for n in names])
        for n in names:
            layers[n].siblings = group
    return layers


def detach(model: nn.Module) -> nn.Module:
    """Undo ``attach``: every ``MultiLoRALinear`` back to its base layer, a ``PerRun`` head back to the original."""
    for name, m in list(model.named_modules()):
        if isinstance(m, MultiLoRALinear):
            if m.siblings is not None:
                m.siblings.release()
                m.siblings = None
            _set(model, name, m.base)
        elif isinstance(m, PerRun):
            _set(model, name, m.original)
    return model


@contextlib.contextmanager
def base_only(model: nn.Module):
    """A context in which every ``MultiLoRALinear`` is its frozen base layer again (the adapters kept aside, put
    back on exit): the base model, taking one run's batch instead of K stacked ones."""
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, MultiLoRALinear)]
    for name, m in layers:
        _set(model, name, m.base)
    try:
        yield model
    finally:
        for name, m in layers:
            _set(model, name, m)


def optimizer(model: nn.Module, runs: list[Run], *, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
    """The runs' AdamW (``lorainit.runopt``): lora_A and the heads of run k at its lr, lora_B at lr x its LoRA+ ratio."""
    from .runopt import RunAdamW

    layers = [m for m in model.modules() if isinstance(m, MultiLoRALinear)]
    heads = next((m for m in model.modules() if isinstance(m, PerRun)), None)
    params = {
        "lora_A": [m.lora_A for m in layers],
        "lora_B": [m.lora_B for m in layers],
        "head": [] if heads is None else [list(ps) for ps in zip(*(h.parameters() for h in heads.runs))],
    }
    lrs = {
        "lora_A": [r.lr for r in runs],
        "lora_B": [r.lr * r.loraplus_ratio for r in runs],
        "head": [r.lr for r in runs],
    }
    return RunAdamW(params, lrs, betas=betas, eps=eps, weight_decay=weight_decay)


def stack_batches(batches: list[dict]) -> dict:
    """The K runs' micro-batches as one batch, run k's rows k*b..(k+1)*b-1; sequences of different lengths are
    right-padded to the longest (attention mask 0, label -100: a padded position changes no real position's output)."""
    out = {}
    for key in batches[0]:
        ts = [b[key] for b in batches]
        if ts[0].dim() > 1 and len({t.shape[1] for t in ts}) > 1:
            T = max(t.shape[1] for t in ts)
            fill = -100 if key == "labels" else 0
            ts = [torch.nn.functional.pad(t, (0, T - t.shape[1]), value=fill) for t in ts]
        out[key] = torch.cat(ts)
    return out


def compile_blocks(model: nn.Module, *, dynamic: bool = False, mode: str | None = None) -> int:
    """``speed.compile_blocks`` for a model of K runs, with each ``MultiLoRALinear``'s ``kernel`` set for ``mode``:
    on where the blocks replay as CUDA graphs ('reduce-overhead'), else off. Returns how many blocks."""
    for m in model.modules():
        if isinstance(m, MultiLoRALinear):
            m.kernel = mode == "reduce-overhead"
    return speed.compile_blocks(model, dynamic=dynamic, mode=mode)
