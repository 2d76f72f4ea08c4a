r"""The gamma-operator calculus of Hayou, Ghosh, Yu 2024 (Sec. 3.3-3.6, App. A.3-A.5), executable.

For a quantity v that scales polynomially with the width n, gamma[v] is the exponent with
v = Theta(n^{gamma[v]}); gamma[0] = -inf. Rules: gamma[v v'] = gamma[v] + gamma[v'] and
gamma[v + v'] = max(gamma[v], gamma[v']).

Lemma 1 (under Assumption 1: Z, dZbar = Theta(1), g_A Z = Theta(n)) gives, for a learning rate
eta = Theta(n^{gamma[eta]}) with both factors trained at the same rate,

    gamma[Z_A^t] = max(gamma[Z_A^{t-1}], gamma[eta] + 1)                                   (3)
    gamma[B_t]   = max(gamma[B_{t-1}],   gamma[eta])

and from eq. (2), Delta Z_B^t = delta_1 + delta_2 + delta_3 with

    gamma[delta_1] = gamma[B_{t-1}] + gamma[eta] + 1        (B_{t-1} Delta Z_A^t)
    gamma[delta_2] = gamma[eta] + gamma[Z_A^{t-1}]          (Delta B_t Z_A^{t-1})
    gamma[delta_3] = gamma[eta] + gamma[eta] + 1            (Delta B_t Delta Z_A^t)

Verdicts (Definitions 3-5): stable iff gamma[Z_B] <= 0; feature learning iff stable and
gamma[Delta Z_B] = 0; efficient iff stable and gamma[delta_1] = gamma[delta_2] = 0; internal
instability iff stable and gamma[Z_A] > 0 (Z_A grows with width while Z_B stays bounded).
Theorem 1 (Init[A]): stable iff gamma[eta] <= -1/2. Theorem 2 (Init[B]): stable iff gamma[eta] <= -1.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

NEG_INF = -math.inf
_TOL = 1e-12

# gamma[Z_A^0] and gamma[B_0] for each init (Sec. 2.1): Init[A] has A_0 Z = Theta(1), B_0 = 0;
# Init[B] has A_0 = 0 (so Z_A^0 = 0), B_0 = Theta(1).
INITIAL_EXPONENTS: dict[str, tuple[float, float]] = {
    "init_a": (0.0, NEG_INF),
    "init_b": (NEG_INF, 0.0),
}


@dataclass(frozen=True)
class Exponents:
    """Width exponents of the LoRA quantities after ``steps`` steps, and the verdicts they imply."""

    init: str
    gamma_eta: float
    steps: int
    gamma_Z_A: float
    gamma_B: float
    gamma_Z_B: float
    gamma_delta_1: float
    gamma_delta_2: float
    gamma_delta_3: float
    gamma_dZ_B: float
    stable: bool
    feature_learning: bool
    efficient: bool
    internal_instability: bool

    def as_dict(self) -> dict:
        return asdict(self)


def _add(*xs: float) -> float:
    """gamma of a product: exponents add; a zero factor (-inf) makes the product zero."""
    return NEG_INF if any(x == NEG_INF for x in xs) else sum(xs)


def _is(x: float, value: float) -> bool:
    return x != NEG_INF and abs(x - value) < _TOL


def exponents(init: str, gamma_eta: float, steps: int = 2) -> Exponents:
    """Run Lemma 1 for ``steps`` >= 2 steps (Definition 5 is about t > 1) from ``init``'s exponents."""
    if init not in INITIAL_EXPONENTS:
        raise KeyError(f"no width theory for init {init!r}; known: {', '.join(sorted(INITIAL_EXPONENTS))}")
    if steps < 2:
        raise ValueError("steps must be >= 2: delta_1 and delta_2 are defined for t > 1")
    if not math.isfinite(gamma_eta):
        raise ValueError(f"gamma[eta] must be a finite exponent; got {gamma_eta}")
    g_za, g_b = INITIAL_EXPONENTS[init]
    for _ in range(steps - 1):  # state after step t-1
        g_za, g_b = max(g_za, gamma_eta + 1), max(g_b, gamma_eta)
    d1 = _add(g_b, gamma_eta + 1)  # B_{t-1} Delta Z_A^t
    d2 = _add(gamma_eta, g_za)  # Delta B_t Z_A^{t-1}
    d3 = _add(gamma_eta, gamma_eta + 1)  # Delta B_t Delta Z_A^t
    g_za, g_b = max(g_za, gamma_eta + 1), max(g_b, gamma_eta)  # state after step t
    g_zb = _add(g_b, g_za)
    g_dzb = max(d1, d2, d3)
    stable = g_zb <= _TOL
    return Exponents(
        init=init,
        gamma_eta=gamma_eta,
        steps=steps,
        gamma_Z_A=g_za,
        gamma_B=g_b,
        gamma_Z_B=g_zb,
        gamma_delta_1=d1,
        gamma_delta_2=d2,
        gamma_delta_3=d3,
        gamma_dZ_B=g_dzb,
        stable=stable,
        feature_learning=stable and _is(g_dzb, 0.0),
        efficient=stable and _is(d1, 0.0) and _is(d2, 0.0),
        internal_instability=stable and g_za > _TOL,
    )


def max_stable_exponent(init: str, lo: float = -3.0, hi: float = 1.0, step: float = 1 / 64) -> float:
    """Largest gamma[eta] on a grid over [lo, hi] whose dynamics are stable (Theorems 1-2: -1/2 and -1)."""
    grid = [lo + i * step for i in range(int(round((hi - lo) / step)) + 1)]
    stable = [g for g in grid if exponents(init, g).stable]
    if not stable:
        raise ValueError(f"no stable exponent in [{lo}, {hi}] for {init}")
    return max(stable)


def table(inits: list[str], gammas: list[float], steps: int = 2) -> list[Exponents]:
    return [exponents(i, g, steps) for i in inits for g in gammas]


def format_exponent(x: float) -> str:
    if x == NEG_INF:
        return "-inf"
    return f"{x:+.3g}" if abs(x) > _TOL else "0"


def format_table(rows: list[Exponents]) -> str:
    """A fixed-width text table of exponents and verdicts, one row per (init, gamma[eta])."""
    head = [
        "init",
        "g[eta]",
        "g[Z_A]",
        "g[B]",
        "g[Z_B]",
        "g[d1]",
        "g[d2]",
        "g[dZ_B]",
        "stable",
        "feat.learn",
        "efficient",
        "int.instab",
    ]
    lines = [" ".join(f"{h:>10}" for h in head)]
    for r in rows:
        cells = [
            r.init,
            format_exponent(r.gamma_eta),
            *(
                format_exponent(x)
                for x in (r.gamma_Z_A, r.gamma_B, r.gamma_Z_B, r.gamma_delta_1, r.gamma_delta_2, r.gamma_dZ_B)
            ),
        ]
        cells += ["yes" if v else "-" for v in (r.stable, r.feature_learning, r.efficient, r.internal_instability)]
        lines.append(" ".join(f"{c:>10}" for c in cells))
    return "\n".join(lines)
