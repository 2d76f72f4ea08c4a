"""The verdict rules of the toy-model claims (H1-H3), on analyses with known answers."""

from lorainit.reproduction import claims, toy_claims
from lorainit.reproduction.load import Studies

from .conftest import toy_results


def toy(tmp_path, slope_a=-0.5, slope_b=-1.0, za=0.3, seeds=3, noise=0.02):
    return Studies([toy_results(d, slope_a, slope_b, za, noise) for d in range(seeds)], {}, [], tmp_path)


def test_h1_holds_at_the_theory_slopes_and_not_when_init_b_is_as_flat(tmp_path):
    (tmp_path / "f").mkdir()
    v = toy_claims.h1(toy(tmp_path), tmp_path / "f")
    assert (
        v.verdict == claims.HOLDS and "-0.50 ± " in v.numbers[0] and (tmp_path / "f" / "h1_max_stable_lr.png").exists()
    )
    assert toy_claims.h1(toy(tmp_path, slope_b=-0.5), tmp_path / "f").verdict == claims.FAILS
    assert (
        toy_claims.h1(toy(tmp_path, slope_b=-1.2, noise=0.0), tmp_path / "f").verdict == claims.OPEN
    )  # misses -1 by 0.2 < 0.25
    assert toy_claims.h1(toy(tmp_path, seeds=1), tmp_path / "f").verdict == claims.OPEN
    assert toy_claims.h1(Studies([], {}, [], tmp_path), tmp_path / "f").verdict == claims.NOT_RUN


def test_h2_and_h3(tmp_path):
    (tmp_path / "f").mkdir()
    v = toy_claims.h2(toy(tmp_path), tmp_path / "f")
    assert v.verdict == claims.HOLDS and "6/6" in v.numbers[0]  # widths 512 and 1024 in 3 data seeds
    assert toy_claims.h3(toy(tmp_path), tmp_path / "f").verdict == claims.HOLDS
    assert toy_claims.h3(toy(tmp_path, za=-0.1), tmp_path / "f").verdict == claims.FAILS
