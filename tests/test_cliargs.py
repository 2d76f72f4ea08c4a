import dataclasses

import pytest

from lorainit import cliargs


@dataclasses.dataclass
class Cfg:
    n: int = 3
    """how many"""
    xs: tuple[float, ...] = (1.0,)
    """values"""


def test_field_docs():
    assert cliargs.field_docs(Cfg) == {"n": "how many", "xs": "values"}


def test_ranges():
    assert cliargs.parse_range("1e-3:1e-1:3", float) == pytest.approx((1e-3, 1e-2, 1e-1))
    assert cliargs.parse_range("0:1:3", float, "linear") == pytest.approx((0.0, 0.5, 1.0))
    assert cliargs.parse_range("1,2, 3", int) == (1, 2, 3)
    assert cliargs.parse_range("5e-4:1:1", float) == (5e-4,)
    for bad in ("1:2", "a:b:3", "1:2:0", "2:1:3", "0:1:3", "1,nan"):
        with pytest.raises(ValueError, match="malformed"):
            cliargs.parse_range(bad, float)


def test_only_given_flags_are_reported():
    p = cliargs.Parser(prog="x")
    cliargs.add_dataclass(p, Cfg)
    assert cliargs.given(p.parse_args([]), Cfg) == {}
    assert cliargs.given(p.parse_args(["--xs", "1e-2:1:3"]), Cfg) == {"xs": pytest.approx((1e-2, 1e-1, 1.0))}
