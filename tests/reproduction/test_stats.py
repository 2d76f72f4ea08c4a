import numpy as np
import pytest
from scipy import stats as sps

from lorainit.reproduction import stats


@pytest.mark.parametrize("df", [1, 2, 5, 10, 30])
def test_t_table_is_student_t(df):
    assert stats.t975(df) == pytest.approx(sps.t.ppf(0.975, df), abs=1e-3)


def test_mean_ci_is_the_t_interval():
    x = [1.0, 2.0, 4.0, 3.5]
    m, h = stats.mean_ci(x)
    lo, hi = sps.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=sps.sem(x))
    assert m == pytest.approx(np.mean(x)) and h == pytest.approx((hi - lo) / 2, rel=1e-3)
    assert stats.mean_ci([2.0]) == (2.0, None)


def test_loglog_slope_recovers_a_power_law():
    w = np.array([128, 256, 1024, 4096])
    assert stats.loglog_slope(w, 3 * w**-0.5) == pytest.approx(-0.5)


def test_fmt_ci_and_spearman():
    assert stats.fmt_ci(19.93, 0.012558, ".4g") == "19.93 ± 0.013"
    assert stats.fmt_ci(0.5, 3.9e-17, ".4g") == "0.5 ± 0"
    assert stats.spearman([2, 4, 6], [0.1, 0.2, 0.3]) == pytest.approx(1.0)
    assert stats.spearman([2, 4, 6], [0.3, 0.2, 0.1]) == pytest.approx(-1.0)


def test_mean_ci_of_equal_values_has_zero_width():
    assert stats.mean_ci([0.493] * 3) == (pytest.approx(0.493), 0.0)
