"""Each claim of Lemma 1 and Theorems 1-2 of Hayou et al. 2024, checked against the executable calculus."""

import math

import pytest

from lorainit import theory

GRID = [k / 16 for k in range(-40, 9)]  # gamma[eta] from -2.5 to 0.5


def test_lemma_1_recursion():
    # Init[A], gamma = -3/4: Z_A = max(0, 1/4), B = -3/4 at any t >= 1
    e = theory.exponents("init_a", -0.75, steps=5)
    assert (e.gamma_Z_A, e.gamma_B) == (0.25, -0.75)
    # Init[B] keeps B = Theta(1) for gamma <= 0, and Z_A = gamma + 1
    e = theory.exponents("init_b", -1.25, steps=3)
    assert (e.gamma_Z_A, e.gamma_B) == (-0.25, 0.0)


@pytest.mark.parametrize("g", GRID)
def test_theorem_1_init_a(g):
    e = theory.exponents("init_a", g)
    assert e.stable == (g <= -0.5)  # stable iff gamma <= -1/2
    assert e.feature_learning == (g == -0.5)  # Delta Z_B = Theta(1) iff gamma = -1/2
    assert e.efficient == (g == -0.5)  # and then delta_1 = delta_2 = Theta(1)
    assert e.internal_instability == (-1 < g <= -0.5)  # Z_A grows while Z_B stays bounded
    if g == -0.5:
        assert e.gamma_Z_A == 0.5 and e.gamma_B == -0.5  # Z_A = Theta(n^1/2), B = Theta(n^-1/2)


@pytest.mark.parametrize("g", GRID)
def test_theorem_2_init_b(g):
    e = theory.exponents("init_b", g)
    assert e.stable == (g <= -1)  # stable iff gamma <= -1
    assert e.feature_learning == (g == -1)
    assert not e.efficient  # efficient feature learning is impossible with Init[B]
    assert not e.internal_instability
    if g == -1:
        assert e.gamma_delta_1 == 0 and e.gamma_delta_2 == -1  # B is undertrained: delta_2 -> 0


def test_max_stable_exponents():
    assert theory.max_stable_exponent("init_a") == -0.5
    assert theory.max_stable_exponent("init_b") == -1.0


def test_zero_quantities_are_minus_infinity():
    e = theory.exponents("init_b", -2.0)
    assert e.gamma_delta_2 == -3.0  # Delta B (-2) times Z_A^{t-1} (-1)
    assert theory._add(-math.inf, 1.0) == -math.inf  # anything times zero is zero
    assert theory.exponents("init_a", -1.0, steps=2).gamma_B == -1.0  # B_0 = 0, B_1 = Theta(eta)
    assert theory.format_exponent(-math.inf) == "-inf"


def test_table_rows_and_text():
    rows = theory.table(["init_a", "init_b"], [-1.0, -0.5])
    assert [(r.init, r.gamma_eta) for r in rows] == [
        ("init_a", -1.0),
        ("init_a", -0.5),
        ("init_b", -1.0),
        ("init_b", -0.5),
    ]
    text = theory.format_table(rows).splitlines()
    assert len(text) == 5 and text[0].split()[0] == "init"
    assert text[2].split()[-4:] == ["yes", "yes", "yes", "yes"]  # Init[A] at -1/2


def test_bad_arguments():
    with pytest.raises(KeyError, match="no width theory"):
        theory.exponents("pissa", -1)
    with pytest.raises(ValueError, match="steps"):
        theory.exponents("init_a", -1, steps=1)
    with pytest.raises(ValueError, match="finite"):
        theory.exponents("init_a", math.nan)
