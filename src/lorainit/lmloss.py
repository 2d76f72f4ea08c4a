r"""Next-token cross-entropy through a frozen output layer, chunk by chunk, gradient computed on the way.

For hidden states h (N x d), a frozen output matrix W (V x d) and targets y (label -100: no target),

    loss = (1 / n) sum_{i: y_i != -100} [ logsumexp_v (h_i W^T)_v - (h_i W^T)_{y_i} ]     (n = #targets)
    dloss/dh_i = (1 / n) (softmax(h_i W^T) - onehot(y_i)) W                               (0 where y_i = -100)

the mean cross-entropy transformers computes for a causal LM (fp32 softmax over the logits of the
compute dtype). The logits never exist for all N rows at once: rows go in chunks of about 2^27 logits,
and each chunk's gradient is formed at once and kept (N x d), so the backward is one multiply and the
output layer is not run twice (a checkpointed head recomputes its logits). Only h gets a gradient:
W must be frozen. Without a gradient (evaluation) a chunk computes the loss alone. On CUDA the per-chunk
arithmetic is one compiled kernel (torch.compile), in an evaluation too; elsewhere it runs eagerly.

``causal_lm_loss(model, batch)`` applies it to a transformers causal LM (or a PEFT model of one) whose
logits are exactly its hidden states times a frozen, bias-free output matrix (Llama, Mistral, Qwen);
any other model gets its own ``model(**batch).loss``.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

PLAIN_HEAD = ("llama", "mistral", "qwen2", "qwen3")  # model types whose logits are hidden @ W^T, nothing more
CHUNK_LOGITS = 2**27


def _softmax_grad(logits: Tensor, target: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
    """Per row: loss = lse - logit[target] (fp32) and weight * (softmax - onehot) in the logits' dtype."""
    z = logits.to(torch.promote_types(logits.dtype, torch.float32))  # (c, V): fp32 at least
    lse = torch.logsumexp(z, dim=-1)  # (c,)
    loss = lse - z.gather(1, target[:, None])[:, 0]
    # softmax - onehot as one element-wise expression (a scatter_add would make the compiler write the fp32
    # softmax out and read it back in a second kernel: twice the memory traffic of the logits)
    onehot = torch.arange(z.shape[1], device=z.device) == target[:, None]  # (c, V) bool
    p = torch.exp(z - lse[:, None]) - onehot.to(z.dtype)  # (c, V)
    return loss * weight, (p * weight[:, None]).to(logits.dtype)


def _nll(logits: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """Per row: loss = lse - logit[target] (fp32), times ``weight``; the loss alone (an evaluation needs no gradient)."""
    z = logits.to(torch.promote_types(logits.dtype, torch.float32))  # (c, V): fp32 at least
    return (torch.logsumexp(z, dim=-1) - z.gather(1, target[:, None])[:, 0]) * weight


_compiled: dict = {}


def _kernel(device: torch.device, grad: bool = True):
    """The per-chunk arithmetic: ``_softmax_grad`` (training) or ``_nll`` (no gradient), one compiled kernel each on
    CUDA (a second row count compiles one dynamic-shape kernel: choice tasks vary), plain elsewhere."""
    fn = _softmax_grad if grad else _nll
    if device.type != "cuda":
        return fn
    if fn not in _compiled:
        _compiled[fn] = torch.compile(fn)
    return _compiled[fn]


def _compiled_stance():
    """The kernel runs compiled also inside an evaluation, whose blocks run eager (``speed.eager``)."""
    return contextlib.nullcontext() if torch.compiler.is_compiling() else torch.compiler.set_stance("default")


class _FrozenHeadCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, labels: Tensor, chunk: int) -> Tensor:
        acc = torch.promote_types(hidden.dtype, torch.float32)  # the loss's dtype: fp32 at least
        valid = labels != -100  # (N,)
        target = labels.clamp(min=0)
        row_weight = valid.to(acc) / valid.sum().clamp(min=1).to(acc)  # (N,): 1/n for a target, 0 without
        need_grad = ctx.needs_input_grad[0]
        grad = torch.empty_like(hidden) if need_grad else None  # (N, d)
        total = torch.zeros((), dtype=acc, device=hidden.device)
        kernel = _kernel(hidden.device, need_grad)
        with _compiled_stance():
            for s in range(0, hidden.shape[0], chunk):
                h = hidden[s : s + chunk]  # (c, d)
                logits = h @ weight.T  # (c, V), the compute dtype (autocast's where active)
                out = kernel(logits, target[s : s + chunk], row_weight[s : s + chunk])
                if need_grad:
                    out, g = out
                    grad[s : s + chunk] = (g @ weight.to(g.dtype)).to(hidden.dtype)  # (c, d)
                total = total + out.sum()
        ctx.save_for_backward(grad if need_grad else hidden.new_empty(0))
        return total

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (grad,) = ctx.saved_tensors
        return grad * grad_out.to(grad.dtype), None, None, None


def linear_cross_entropy(hidden: Tensor, weight: Tensor, labels: Tensor, *, chunk: int | None = None) -> Tensor:
    """Mean cross-entropy of ``hidden @ weight.T`` (rows: ``hidden`` (..., d), targets ``labels`` (...)) with
    label -100 ignored; ``weight`` (V x d) must be frozen. Rows go ``chunk`` at a time (default: 2^27 logits)."""
    if weight.requires_grad:
        raise ValueError(
            "linear_cross_entropy computes no gradient for the output layer: freeze it or use F.cross_entropy"
        )
    h = hidden.reshape(-1, hidden.shape[-1])  # (N, d)
    y = labels.reshape(-1)  # (N,)
    if h.shape[0] != y.shape[0]:
        raise ValueError(f"{h.shape[0]} hidden rows but {y.shape[0]} labels")
    chunk = chunk or max(1, CHUNK_LOGITS // weight.shape[0])
    return _FrozenHeadCE.apply(h, weight, y, chunk)


def _plain_head(model) -> tuple[nn.Module, Tensor] | None:
    """(decoder, output matrix) when the model's logits are decoder(...) @ W^T with W frozen; else None (also
    for a DistributedDataParallel wrapper, whose own forward must run for its gradient averaging)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(getattr(base, "config", None), "model_type", None) not in PLAIN_HEAD or not hasattr(base, "get_decoder"):
        return None
    head = base.get_output_embeddings()
    if type(head) is not nn.Linear or head.bias is not None or head.weight.requires_grad:
        return None  # a LoRA-wrapped or trainable head: the model's own loss
    return base.get_decoder(), head.weight


def last_hidden(decoder: nn.Module, batch: dict) -> Tensor:
    """The decoder's final hidden states (b, T, d) for ``batch``, without a key/value cache (nothing generates)."""
    return decoder(
        input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"), use_cache=False
    ).last_hidden_state


def next_token_loss(hidden: Tensor, weight: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy of each position's logits (``hidden`` (b, T, d) @ ``weight``.T) against the next token's label."""
    return linear_cross_entropy(hidden[:, :-1], weight, labels[:, 1:])  # position t predicts token t + 1


def causal_lm_loss(model, batch: dict) -> Tensor:
    """The causal-LM loss of ``batch`` (input_ids, attention_mask, labels), equal to ``model(**batch).loss``."""
    plain = _plain_head(model)
    if plain is None:
        return model(**batch).loss
    decoder, weight = plain
    return next_token_loss(last_hidden(decoder, batch), weight, batch["labels"])


@torch.no_grad()
def token_logprobs(model, batch: dict, *, chunk_logits: int = CHUNK_LOGITS) -> Tensor:
    """log p(token t+1 | tokens <= t) of every position of ``batch`` (b, T-1), float32, for scoring (no gradient):
    through the frozen head chunk by chunk where the model allows it (``_plain_head``), else from its logits."""
    ids = batch["input_ids"]
    plain = _plain_head(model)
    if plain is None:
        logits = (
            model(input_ids=ids, attention_mask=batch.get("attention_mask"), use_cache=False).logits[:, :-1].float()
        )
        return logits.log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]
    decoder, weight = plain
    h = last_hidden(decoder, batch)[:, :-1].reshape(-1, weight.shape[1])  # (b (T-1), d)
    target = ids[:, 1:].reshape(-1)
    out = torch.empty(h.shape[0], dtype=torch.float32, device=h.device)
    step = max(1, chunk_logits // weight.shape[0])
    for s in range(0, h.shape[0], step):
        z = (h[s : s + step] @ weight.T).float()  # (c, V)
        out[s : s + step] = z.gather(1, target[s : s + step, None])[:, 0] - torch.logsumexp(z, dim=-1)
    return out.view(ids.shape[0], -1)
