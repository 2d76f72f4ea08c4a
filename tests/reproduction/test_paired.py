"""Reading a finetune study for a verdict: a collapse to one class, and the paired comparisons behind the claims."""

from lorainit.reproduction import paired, tasks
from lorainit.reproduction.claims import HOLDS, OPEN

from .test_tasks import curve, studies


def collapsed_but(lr_learned, best, *, bump=0.0):
    """A classifier stuck at the majority class (0.493) at every LR but one, where it reaches ``best`` (+ bump)."""
    return lambda lr, seed: (
        (best + bump + 0.01 * seed, best + bump + 0.01 * seed) if lr == lr_learned else (0.493, 0.5015)
    )


def test_a_collapse_at_most_lrs_is_learned_where_one_lr_escapes_it_by_a_tenth_of_the_errors(tmp_path):
    # 3 of 4 LRs collapse (75% of cells) as at 1000 nli steps; the learned cell removes (0.70-0.493)/0.507 = 41% of
    # the one-class errors: the inits are ranked, Init[A] ahead by 0.02 in every seed
    st = studies(
        tmp_path / "a",
        {"init_a": collapsed_but(2e-4, 0.67, bump=0.02), "init_b": collapsed_but(2e-4, 0.67)},
        direction="maximize",
        name_metric="accuracy",
    )
    assert paired.stuck(st.sweeps[0]) == (0.75, 0.493) and paired.not_learned(st.sweeps[0]) is None
    assert tasks.h4(st, tmp_path / "f").verdict == HOLDS
    # the same collapse with the best cell at 0.51 (seed mean): 3.4% of the errors removed, below the 10% bar
    st = studies(
        tmp_path / "b",
        {"init_a": collapsed_but(2e-4, 0.49, bump=0.01), "init_b": collapsed_but(2e-4, 0.49)},
        direction="maximize",
        name_metric="accuracy",
    )
    note = paired.not_learned(st.sweeps[0])
    assert note is not None and "0.51, removes 3.4% of the errors" in note and "75% of the (init, LR) cells" in note


def test_paired_differences_and_an_init_at_the_grids_edge(tmp_path):
    # init_a beats init_b by exactly 1 in every seed (equal data-order shifts): a zero-width interval
    st = studies(tmp_path / "a", {"init_a": curve(1e-3, 19.0), "init_b": curve(2e-4, 20.0)})
    s = st.sweeps[0]
    assert paired.paired(s, "init_a", "init_b") == (1.0, 0.0, 3)
    assert paired.judge(paired.paired(s, "init_a", "init_b"), "A vs B") == (
        HOLDS,
        "A vs B: better by 1 ± 0 over 3 paired seeds",
    )
    assert paired.edge_checked(s, HOLDS, "r", "init_a", "init_b") == (HOLDS, "r")
    edge = studies(tmp_path / "b", {"init_a": curve(1e-3, 19.0), "init_b": curve(1e-4, 20.0)}).sweeps[0]
    assert paired.edge_checked(edge, HOLDS, "r", "init_a", "init_b") == (
        OPEN,
        "r, but init_b's selected LR 0.0001 is at the grid's edge",
    )
