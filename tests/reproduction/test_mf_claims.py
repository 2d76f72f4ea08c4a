"""The verdict rules of the matrix-factorization claims (R1, R2, R4), on analyses with known answers."""

from lorainit.reproduction import claims, mf_claims
from lorainit.reproduction.load import Studies

from .conftest import mf_results


def mfs(tmp_path, **by_target):
    return Studies([], by_target, [], tmp_path)


def test_r1_r2(tmp_path):
    (tmp_path / "f").mkdir()
    good = {6: mf_results(5.0, 0, 5.0, 4)}
    assert mf_claims.r1(mfs(tmp_path, paper=good), tmp_path / "f").verdict == claims.HOLDS
    assert mf_claims.r1(mfs(tmp_path, paper={6: mf_results(5.0, 4, 5.0, 4)}), tmp_path / "f").verdict == claims.FAILS
    assert mf_claims.r1(mfs(tmp_path, paper={6: mf_results(5.0, 0, 5.0, 3)}), tmp_path / "f").verdict == claims.OPEN
    v = mf_claims.r2(mfs(tmp_path, paper=good), tmp_path / "f")  # HRP: 10 steps + 100 of preheat vs 30
    assert v.verdict == claims.FAILS and "only when the preheat is not counted" in v.reason
    fast = {6: mf_results(5.0, 0, 5.0, 4, steps=(30.0, 10.0, 20.0))}
    assert mf_claims.r2(mfs(tmp_path, paper=fast), tmp_path / "f").verdict == claims.HOLDS


def test_r4_grows_flat_falls(tmp_path):
    (tmp_path / "f").mkdir()
    gap = lambda gaps: {r: mf_results(1.0, 0, 1.0 + g, 4) for r, g in zip((2, 4, 8), gaps)}
    assert mf_claims.r4(mfs(tmp_path, distinct=gap((0.1, 0.01, 0.001))), tmp_path / "f").verdict == claims.HOLDS
    v = mf_claims.r4(mfs(tmp_path, paper=gap((0.0, 0.0, 0.0))), tmp_path / "f")
    assert v.verdict == claims.FAILS and "flat" in v.reason
    assert mf_claims.r4(mfs(tmp_path, distinct=gap((0.001, 0.01, 0.1))), tmp_path / "f").verdict == claims.FAILS
    assert mf_claims.r4(mfs(tmp_path, paper={6: mf_results(1.0, 0, 1.0, 4)}), tmp_path / "f").verdict == claims.NOT_RUN
