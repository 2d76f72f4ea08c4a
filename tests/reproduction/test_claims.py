"""The verdict rules of the toy and mf claims, on analyses with known answers."""

from lorainit.reproduction import claims
from lorainit.reproduction.load import Studies

from .conftest import mf_results, toy_results


def toy(tmp_path, slope_a=-0.5, slope_b=-1.0, za=0.3, seeds=3, noise=0.02):
    return Studies([toy_results(d, slope_a, slope_b, za, noise) for d in range(seeds)], {}, [], tmp_path)


def test_h1_holds_at_the_theory_slopes_and_not_when_init_b_is_as_flat(tmp_path):
    (tmp_path / "f").mkdir()
    v = claims.h1(toy(tmp_path), tmp_path / "f")
    assert (
        v.verdict == claims.HOLDS and "-0.50 ± " in v.numbers[0] and (tmp_path / "f" / "h1_max_stable_lr.png").exists()
    )
    assert claims.h1(toy(tmp_path, slope_b=-0.5), tmp_path / "f").verdict == claims.FAILS
    assert (
        claims.h1(toy(tmp_path, slope_b=-1.2, noise=0.0), tmp_path / "f").verdict == claims.OPEN
    )  # misses -1 by 0.2 < 0.25
    assert claims.h1(toy(tmp_path, seeds=1), tmp_path / "f").verdict == claims.OPEN
    assert claims.h1(Studies([], {}, [], tmp_path), tmp_path / "f").verdict == claims.NOT_RUN


def test_h2_and_h3(tmp_path):
    (tmp_path / "f").mkdir()
    v = claims.h2(toy(tmp_path), tmp_path / "f")
    assert v.verdict == claims.HOLDS and "6/6" in v.numbers[0]  # widths 512 and 1024 in 3 data seeds
    assert claims.h3(toy(tmp_path), tmp_path / "f").verdict == claims.HOLDS
    assert claims.h3(toy(tmp_path, za=-0.1), tmp_path / "f").verdict == claims.FAILS


def mfs(tmp_path, **by_target):
    return Studies([], by_target, [], tmp_path)


def test_r1_r2(tmp_path):
    (tmp_path / "f").mkdir()
    good = {6: mf_results(5.0, 0, 5.0, 4)}
    assert claims.r1(mfs(tmp_path, paper=good), tmp_path / "f").verdict == claims.HOLDS
    assert claims.r1(mfs(tmp_path, paper={6: mf_results(5.0, 4, 5.0, 4)}), tmp_path / "f").verdict == claims.FAILS
    assert claims.r1(mfs(tmp_path, paper={6: mf_results(5.0, 0, 5.0, 3)}), tmp_path / "f").verdict == claims.OPEN
    v = claims.r2(mfs(tmp_path, paper=good), tmp_path / "f")  # HRP: 10 steps + 100 of preheat vs 30
    assert v.verdict == claims.FAILS and "only when the preheat is not counted" in v.reason
    fast = {6: mf_results(5.0, 0, 5.0, 4, steps=(30.0, 10.0, 20.0))}
    assert claims.r2(mfs(tmp_path, paper=fast), tmp_path / "f").verdict == claims.HOLDS


def test_r4_grows_flat_falls(tmp_path):
    (tmp_path / "f").mkdir()
    gap = lambda gaps: {r: mf_results(1.0, 0, 1.0 + g, 4) for r, g in zip((2, 4, 8), gaps)}
    assert claims.r4(mfs(tmp_path, distinct=gap((0.1, 0.01, 0.001))), tmp_path / "f").verdict == claims.HOLDS
    v = claims.r4(mfs(tmp_path, paper=gap((0.0, 0.0, 0.0))), tmp_path / "f")
    assert v.verdict == claims.FAILS and "flat" in v.reason
    assert claims.r4(mfs(tmp_path, distinct=gap((0.001, 0.01, 0.1))), tmp_path / "f").verdict == claims.FAILS
    assert claims.r4(mfs(tmp_path, paper={6: mf_results(1.0, 0, 1.0, 4)}), tmp_path / "f").verdict == claims.NOT_RUN
