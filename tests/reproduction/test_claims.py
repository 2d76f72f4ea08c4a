"""The claim registry: every claim module registers its claims, listed in the report's order."""

from lorainit.reproduction import claims


def test_every_claim_in_the_reports_order_each_a_function_of_the_studies():
    got = claims.every_claim()
    assert list(got) == ["H1", "H2", "H3", "R1", "R2", "R4", "H4", "R3", "L1", "R5"]
    assert [fn.__module__.rsplit(".", 1)[1] for fn in got.values()] == 3 * ["toy_claims"] + 3 * ["mf_claims"] + 4 * [
        "tasks"
    ]
    assert claims.not_run("X", "t", "p", "toy").verdict == claims.NOT_RUN


def test_a_decorated_function_is_registered_under_its_upper_case_name():
    def z9(st, figdir):
        return claims.not_run("Z9", "t", "p", "toy")

    try:
        assert claims.claim(z9) is z9 and claims.CLAIMS["Z9"] is z9
    finally:
        claims.CLAIMS.pop("Z9", None)
