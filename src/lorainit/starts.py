"""Where LoRA runs start: every target layer's initial factors under one or more schemes at one seed.

The one place that turns (scheme, seed, model, data) into ``Factors`` per layer, for a PEFT model
(``lorainit.apply``) and for K runs on one frozen base (``lorainit.multi``) alike:

- data-free schemes draw each layer from the generator ``draw`` seeds by (seed, scheme, PEFT layer name),
  through the scheme's stacked form where it has one (PiSSA: one decomposition per group of same-shape
  layers, within ``budget_mb``);
- data-dependent schemes get their statistics from ``lorainit.stats``, and schemes that need the same
  statistic share one data pass: lora_ga and lora_one at one seed take the same gradients, every eva
  scheme the same input scatter, every hrp scheme the same preheated adapter.

Layer names are PEFT's (``base_model.model.<module path>``), so a seed means the same factors on
either path. The model must compute its base function during the pass: a PEFT model has its adapters
disabled by ``stats``; a plain model must not carry adapters yet.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

from . import inits, stats
from .inits import Factors
from .seeding import generator

PEFT_PREFIX = "base_model.model."  # the module path prefix of a layer inside a PeftModel
# A need's data-pass settings, options of every scheme with that need beside the scheme's own keywords.
# HRP's preheat (stats.preheat): preheat_rank None means 4 x the LoRA rank.
PASS_OPTIONS = {"preheated": {"preheat_rank": None, "preheat_steps": 50, "preheat_lr": 1e-3}}


def options(scheme: str) -> dict[str, object]:
    """Every option ``scheme`` takes, with its default: its own keywords, then its needs' data-pass settings."""
    e = inits.entry(scheme)
    return {**e.hyperparameters(), **{k: v for need in e.needs for k, v in PASS_OPTIONS.get(need, {}).items()}}


def split_options(scheme: str, given: dict) -> tuple[dict, dict]:
    """(the scheme's keywords, its data-pass settings) of ``given``; a name ``scheme`` does not take is one
    ValueError line listing those it does."""
    known = options(scheme)
    wrong = [k for k in given if k not in known]
    if wrong:
        offer = ", ".join(known) or "none"
        raise ValueError(f"init scheme {scheme!r} takes no option {wrong[0]!r} (its options: {offer})")
    passes = {k for need in inits.entry(scheme).needs for k in PASS_OPTIONS.get(need, {})}
    return {k: v for k, v in given.items() if k not in passes}, {k: v for k, v in given.items() if k in passes}


def layer_generator(seed: int, scheme: str, layer: str) -> torch.Generator:
    """The CPU generator of one layer's draw: a function of (seed, scheme, PEFT layer name) only."""
    return generator("apply", seed, scheme, layer)


def _with_scaling(fn, scaling: float, kw: dict) -> dict:
    """``kw`` plus the layer's ``scaling`` where ``fn`` takes one and the caller gave none."""
    import inspect

    return {"scaling": scaling, **kw} if "scaling" in inspect.signature(fn).parameters else kw


def draw(scheme: str, W: torch.Tensor, rank: int, *, seed: int, layer: str, layer_scaling: float, **kw) -> Factors:
    """One layer's initial factors: ``scheme(W, rank, **kw)`` with the generator seeded by (seed, scheme, PEFT
    layer name), and for schemes that take a ``scaling`` the layer's, unless ``kw`` gives one. The one definition
    of the draw, so that ``lorainit.multi`` starts each run where the same run through PEFT would."""
    entry = inits.entry(scheme)
    return entry.fn(
        W, rank, generator=layer_generator(seed, scheme, layer), **_with_scaling(entry.fn, layer_scaling, kw)
    )


def draw_stacked(
    scheme: str,
    layers: dict[str, nn.Module],
    ranks: dict[str, int],
    scalings: dict[str, float],
    *,
    seed: int,
    budget_mb: float = 1024.0,
    **kw,
) -> Iterator[tuple[str, Factors]]:
    """(layer name, factors) of every layer through the scheme's stacked form: layers of one shape, dtype,
    device, rank and scaling go through as stacks whose working memory stays within ``budget_mb`` (counted
    as four float32 copies of each weight: the weight, its residual, and a full SVD's U and Vh), each layer
    drawing from the generator ``draw`` would give it, so the factors equal ``draw``'s up to rounding."""
    entry = inits.entry(scheme)
    groups: dict[tuple, list[str]] = {}
    for name, layer in layers.items():
        W = stats.base_weight(layer)
        groups.setdefault((tuple(W.shape), W.dtype, W.device, ranks[name], scalings[name]), []).append(name)
    for (shape, _dtype, _device, rank, scaling), names in groups.items():
        per = 4 * 4 * shape[0] * shape[1] / 2**20  # MiB: four float32 copies of one weight
        for group in stats.budget_groups({n: per for n in names}, budget_mb):
            W = torch.stack([stats.base_weight(layers[n]).detach() for n in group])  # (L, out, in)
            gens = [layer_generator(seed, scheme, n) for n in group]
            yield from zip(group, entry.stacked(W, rank, generators=gens, **_with_scaling(entry.stacked, scaling, kw)))


def draw_all(
    model,
    layers: dict[str, nn.Module],
    schemes: list[str],
    *,
    seed: int,
    ranks: dict[str, int],
    scalings: dict[str, float],
    data=None,
    loss_fn: stats.LossFn = stats.default_loss,
    budget_mb: float = 1024.0,
    hyperparameters: dict[str, dict] | None = None,
) -> Iterator[tuple[str, str, Factors]]:
    """(scheme, layer name, factors) for every scheme in ``schemes`` and every layer of ``layers`` (PEFT layer
    names -> PEFT LoRA layers or plain linear layers), at ``seed``. ``data`` (an iterable of batches) and
    ``loss_fn`` feed the data-dependent schemes; ``hyperparameters`` maps a scheme to its options (``options``:
    its keywords and its data passes' settings, checked by ``split_options``). Each needed statistic is computed
    once, in one data pass, and handed to every scheme that uses it, layer by layer (nothing model-sized is held);
    schemes sharing a pass must agree on its settings."""
    entries = {s: inits.entry(s) for s in dict.fromkeys(schemes)}
    split = {s: split_options(s, dict((hyperparameters or {}).get(s, {}))) for s in entries}
    kw = {s: own for s, (own, _) in split.items()}
    settings = {}  # need -> its data pass's settings
    for s, e in entries.items():
        for need in e.needs:
            mine = {k: split[s][1].get(k, v) for k, v in PASS_OPTIONS.get(need, {}).items()}
            if settings.setdefault(need, mine) != mine:
                raise ValueError(
                    f"the schemes sharing the {need!r} data pass ask for different settings ({settings[need]} "
                    f"and {s}'s {mine}); draw them in separate calls"
                )
    if any("target" in e.needs for e in entries.values()):
        raise ValueError(
            "'target' is an oracle for synthetic problems with a known update (lorainit mf); it has no meaning on a model"
        )
    if any(e.needs for e in entries.values()) and data is None:
        needy = next(s for s, e in entries.items() if e.needs)
        raise ValueError(
            f"{needy} needs training data ({', '.join(entries[needy].needs)}): pass data=an iterable of batches (and loss_fn)"
        )
    data = list(data) if data is not None else None

    def one(scheme: str, name: str, **stat) -> Factors:
        W = stats.base_weight(layers[name]).detach()
        return draw(scheme, W, ranks[name], seed=seed, layer=name, layer_scaling=scalings[name], **stat, **kw[scheme])

    for scheme, e in entries.items():  # data-free schemes first
        if e.needs:
            continue
        if e.stacked is not None:
            yield from (
                (scheme, n, f)
                for n, f in draw_stacked(scheme, layers, ranks, scalings, seed=seed, budget_mb=budget_mb, **kw[scheme])
            )
        else:
            yield from ((scheme, n, one(scheme, n)) for n in layers)
    by_need = lambda need: [s for s, e in entries.items() if need in e.needs]  # noqa: E731
    if by_need("grad"):
        for name, g in stats.gradients(model, layers, data, loss_fn, budget_mb=budget_mb):
            yield from ((s, name, one(s, name, grad=g)) for s in by_need("grad"))
    if by_need("activations"):
        keep = max(ranks.values())  # the top directions are all EVA takes
        for name, R in stats.activation_scatter(model, layers, data, loss_fn, budget_mb=budget_mb, keep=keep):
            yield from ((s, name, one(s, name, activations=R, center=False)) for s in by_need("activations"))
    if by_need("preheated"):
        p = settings["preheated"]
        rp = p["preheat_rank"] or 4 * max(ranks.values())
        pre = stats.preheat(
            model, layers, data, loss_fn, rank=rp, steps=p["preheat_steps"], lr=p["preheat_lr"], seed=seed
        )
        for name in layers:
            yield from ((s, name, one(s, name, preheated=pre[name])) for s in by_need("preheated"))
