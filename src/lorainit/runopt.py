r"""AdamW for K runs at once: every run's parameters of a kind in one run-major buffer, one update for all.

``lorainit.multi`` keeps each layer's K adapters as one tensor with a leading run dimension (lora_A:
(K, r, in)). Here every such tensor of a kind (lora_A, lora_B, head) becomes a contiguous block of one
buffer P (N,), and its gradient a block of a buffer G (N,) that autograd accumulates into in place. Per step
t, with lr_i the learning rate of the run element i belongs to (the schedule's factor times the run's peak;
lr x LoRA+ ratio for lora_B), every element gets torch's AdamW update (Loshchilov & Hutter 2019):

    P_i  <- P_i (1 - lr_i wd)
    M_i  <- beta1 M_i + (1 - beta1) G_i
    V_i  <- beta2 V_i + (1 - beta2) G_i^2
    P_i  <- P_i - lr_i / (1 - beta1^t) * M_i / (sqrt(V_i) / sqrt(1 - beta2^t) + eps)

so a few elementwise kernels update all runs and layers, where per-run AdamW groups cost thousands of
small tensors and their gradient accumulations per step. Checked run by run against torch.optim.AdamW
(tests). ``param_groups`` (one per kind and run, with "lr" and "base_lr") is what ``lorainit.train``'s
schedule sets; ``state_tensors`` / ``load_state_tensors`` are its checkpoint.
"""

from __future__ import annotations

import torch


class RunAdamW:
    """AdamW over ``params`` (kind -> entries, each a leaf tensor shaped (K, ...) or a list of K leaf tensors, one per
    run), run k of a kind at peak LR ``lrs[kind][k]``."""

    def __init__(
        self,
        params: dict[str, list],
        lrs: dict[str, list[float]],
        *,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ):
        self.betas, self.eps, self.weight_decay, self.t = betas, eps, weight_decay, 0
        self.buffers: dict[str, dict[str, torch.Tensor]] = {}
        self.leaves: list[tuple[torch.Tensor, str, int, int]] = []  # (parameter, kind, start, end) of its block
        self.segments: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.param_groups: list[dict] = []
        for kind, entries in params.items():
            if not entries:
                continue
            K = len(lrs[kind])
            leaves = [q for e in entries for q in (e if isinstance(e, (list, tuple)) else [e])]
            dtype = torch.promote_types(
                leaves[0].dtype, torch.float32
            )  # fp32 at least: adapters of a bf16 base train in fp32
            P = torch.empty(sum(q.numel() for q in leaves), dtype=dtype, device=leaves[0].device)
            G = torch.zeros_like(P)
            run, length, off = [], [], 0
            for e in entries:
                for k, q in enumerate(e if isinstance(e, (list, tuple)) else [e]):
                    n = q.numel()
                    self.leaves.append((q, kind, off, off + n))
                    P[off : off + n].copy_(q.detach().reshape(-1))
                    q.data = P[off : off + n].view(q.shape)  # the parameter now lives in its block of P ...
                    q.grad = G[off : off + n].view(q.shape)  # ... and autograd adds its gradient into G in place
                    per = K if not isinstance(e, (list, tuple)) else 1  # a (K, ...) tensor holds K runs' rows in order
                    run += list(range(K)) if per == K else [k]
                    length += [n // per] * per
                    off += n
            self.segments[kind] = (torch.tensor(run, device=P.device), torch.tensor(length, device=P.device))
            self.buffers[kind] = {
                "param": P,
                "grad": G,
                "exp_avg": torch.zeros_like(P),
                "exp_avg_sq": torch.zeros_like(P),
            }
            self.param_groups += [
                {"kind": kind, "run": k, "lr": lr, "base_lr": lr, "params": []} for k, lr in enumerate(lrs[kind])
            ]
        self.defaults = {"fused": False}
        self.state: dict = {}

    def zero_grad(self, set_to_none: bool = False) -> None:
        """Zero every gradient buffer (never None: autograd accumulates into them)."""
        for b in self.buffers.values():
            b["grad"].zero_()

    def gradients(self) -> list[torch.Tensor]:
        """The gradient buffers (what data parallel averages over processes)."""
        return [b["grad"] for b in self.buffers.values()]

    def gradient_sync(self, world: int, bucket_mb: float = 25.0) -> "BucketedAllReduce":
        """An all-reduce of the gradient buffers that runs during the backward (data parallel)."""
        return BucketedAllReduce(self, world, bucket_mb)

    def _lr(self, kind: str) -> torch.Tensor:
        """Each element's learning rate (N,): its run's, from the segments (run, length) the buffer is made of."""
        run, length = self.segments[kind]
        P = self.buffers[kind]["param"]
        lrs = torch.tensor([g["lr"] for g in self.param_groups if g["kind"] == kind], dtype=P.dtype, device=P.device)
        return lrs[run].repeat_interleave(length, output_size=P.numel())

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        beta1, beta2 = self.betas
        c1, c2 = 1 - beta1**self.t, (1 - beta2**self.t) ** 0.5
        for kind, b in self.buffers.items():
            lr = self._lr(kind)  # (N,)
            P, G, M, V = b["param"], b["grad"], b["exp_avg"], b["exp_avg_sq"]
            if self.weight_decay:
                P.mul_(1 - lr * self.weight_decay)
            M.lerp_(G, 1 - beta1)
            V.mul_(beta2).addcmul_(G, G, value=1 - beta2)
            P.sub_(M / (V.sqrt() / c2 + self.eps) * (lr / c1))

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Everything a resumed run needs: each kind's parameters and moments (N,), and the step count."""
        out = {  # (copies even on CPU: checkpoints are written in the background)
            f"{name}.{kind}": t.detach().to("cpu", copy=True)
            for kind, b in self.buffers.items()
            for name, t in b.items()
            if name != "grad"
        }
        return {**out, "step": torch.tensor([float(self.t)])}

    @torch.no_grad()
    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        for kind, b in self.buffers.items():
            for name in ("param", "exp_avg", "exp_avg_sq"):
                saved = tensors[f"{name}.{kind}"]
                if saved.shape != b[name].shape:
                    raise ValueError(
                        f"the checkpoint's {kind} {name} is {tuple(saved.shape)}, this run's {tuple(b[name].shape)}: "
                        "resume with the same runs and adapters, or start in a new folder"
                    )
                b[name].copy_(saved)
        self.t = int(tensors["step"].item())


class BucketedAllReduce:
    """Average ``RunAdamW``'s gradient buffers over the ``world`` processes while the backward still runs, as
    DistributedDataParallel does: each buffer is cut into buckets of about ``bucket_mb`` (consecutive parameter
    blocks, the last layers' first, as the backward produces them); once every parameter of a bucket has its
    gradient (``register_post_accumulate_grad_hook``), its asynchronous all-reduce starts. Buckets start in one
    fixed order on every process (a ready bucket waits for those before it), so the collectives match.
    ``arm()`` before the last micro-batch's backward, ``finish()`` after it (waits, then divides by ``world``)."""

    def __init__(self, opt: RunAdamW, world: int, bucket_mb: float = 25.0):
        self.world, self.armed, self.handles = world, False, []
        self.buckets: list[tuple[torch.Tensor, int]] = []  # (gradient view, how many parameters fill it)
        self.bucket_of: dict[int, int] = {}
        for kind, b in opt.buffers.items():
            leaves = sorted((x for x in opt.leaves if x[1] == kind), key=lambda x: -x[2])  # the last blocks first
            limit = max(1, int(bucket_mb * 2**20 / b["grad"].element_size()))
            group: list = []
            for leaf in leaves + [None]:
                if group and (leaf is None or group[0][3] - leaf[2] > limit):
                    lo, hi = group[-1][2], group[0][3]
                    for q, *_ in group:
                        self.bucket_of[id(q)] = len(self.buckets)
                    self.buckets.append((b["grad"][lo:hi], len(group)))
                    group = []
                if leaf is not None:
                    group.append(leaf)
        for q, *_ in opt.leaves:
            q.register_post_accumulate_grad_hook(self._ready)

    def arm(self) -> None:
        self.armed, self.handles, self.next = True, [], 0
        self.pending = [n for _, n in self.buckets]

    def _ready(self, param: torch.Tensor) -> None:
        if not self.armed:
            return
        self.pending[self.bucket_of[id(param)]] -= 1
        self._launch(only_ready=True)

    def _launch(self, only_ready: bool) -> None:
        while self.next < len(self.buckets) and (not only_ready or self.pending[self.next] == 0):
            self.handles.append(torch.distributed.all_reduce(self.buckets[self.next][0], async_op=True))
            self.next += 1

    def finish(self) -> None:
        self._launch(only_ready=False)  # buckets some parameter of which got no gradient this step: now, in order
        for h in self.handles:
            h.wait()
        for grad, _ in self.buckets:
            grad.div_(self.world)
        self.armed = False
