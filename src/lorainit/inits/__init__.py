"""Registry of LoRA initialization schemes: one name, one pure function (see ``base.py``).

    from lorainit import inits
    factors = inits.get("init_a")(weight, rank=4, generator=g)

Registering validates the function's signature, so a scheme that does not follow the one protocol
fails at import time, not in the middle of a sweep.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

from ..io import did_you_mean
from .base import Factors, InitScheme, check_rank


@dataclass(frozen=True)
class Entry:
    """A registered scheme and what it promises."""

    name: str
    fn: InitScheme
    preserves_output: bool  # the model's output is unchanged at step 0: B A = 0, or a residual base W - s B A
    needs: tuple[str, ...]  # keyword arguments carrying data the scheme consumes ("grad", ...); () if data-free
    stochastic: bool  # with default hyperparameters, draws from the generator (a seed changes the result)
    residual: bool = False  # replaces the base weight by a residual (Factors.residual is set)
    # the scheme over a stack (L, out, in) of same-shape weights with one generator each (``generators=``),
    # giving ``fn``'s factors per matrix; ``lorainit.apply`` uses it on groups of same-shape layers
    stacked: Callable[..., list[Factors]] | None = None

    def hyperparameters(self) -> dict[str, object]:
        """The scheme's own keywords and their defaults: everything after (weight, rank) but the generator and the
        data it ``needs`` (a layer's ``scaling`` is filled in per layer unless given)."""
        skip = {"generator", *self.needs}
        return {
            p.name: p.default for p in list(inspect.signature(self.fn).parameters.values())[2:] if p.name not in skip
        }


INITS: dict[str, Entry] = {}


def register(
    name: str,
    *,
    preserves_output: bool,
    needs: tuple[str, ...] = (),
    stochastic: bool = True,
    residual: bool = False,
    stacked: Callable[..., list[Factors]] | None = None,
) -> Callable[[InitScheme], InitScheme]:
    """Decorator adding ``fn`` to ``INITS`` under ``name`` after checking its signature (and that of its
    ``stacked`` form: (weights, rank, *, generators, ...) with ``fn``'s other keywords)."""

    def wrap(fn: InitScheme) -> InitScheme:
        params = list(inspect.signature(fn).parameters.values())
        if len(params) < 2 or [p.name for p in params[:2]] != ["weight", "rank"]:
            raise TypeError(f"init scheme {name!r} must take (weight, rank, *, generator, ...)")
        keyword_only = {p.name for p in params[2:] if p.kind is inspect.Parameter.KEYWORD_ONLY}
        if "generator" not in keyword_only or len(keyword_only) != len(params) - 2:
            raise TypeError(
                f"init scheme {name!r}: everything after (weight, rank) must be keyword-only, incl. generator"
            )
        missing = [n for n in needs if n not in keyword_only]
        if missing:
            raise TypeError(f"init scheme {name!r} needs {missing} but takes no such keyword argument")
        if stacked is not None:
            sp = list(inspect.signature(stacked).parameters)
            want = ["weights", "rank", "generators"] + [p.name for p in params[2:] if p.name != "generator"]
            if needs or sorted(sp) != sorted(want) or sp[:2] != want[:2]:
                raise TypeError(
                    f"init scheme {name!r}: its stacked form must take (weights, rank, *, generators) and the "
                    "scheme's other keywords, and data-dependent schemes have none"
                )
        if name in INITS:
            raise ValueError(f"init scheme {name!r} is already registered")
        INITS[name] = Entry(
            name=name,
            fn=fn,
            preserves_output=preserves_output,
            needs=tuple(needs),
            stochastic=stochastic,
            residual=residual,
            stacked=stacked,
        )
        return fn

    return wrap


def get(name: str) -> InitScheme:
    """The scheme registered as ``name``; a ``KeyError`` naming the closest valid names otherwise."""
    return entry(name).fn


def entry(name: str) -> Entry:
    if name not in INITS:
        raise KeyError(f"unknown init scheme {name!r}{did_you_mean(name, INITS)} (known: {', '.join(sorted(INITS))})")
    return INITS[name]


def names() -> list[str]:
    return sorted(INITS)


from . import activation as _activation  # noqa: E402,F401  (each module registers its schemes)
from . import gradient as _gradient  # noqa: E402,F401
from . import hrp as _hrp  # noqa: E402,F401
from . import random as _random  # noqa: E402,F401
from . import spectral as _spectral  # noqa: E402,F401

__all__ = ["INITS", "Entry", "Factors", "InitScheme", "check_rank", "entry", "get", "names", "register"]
