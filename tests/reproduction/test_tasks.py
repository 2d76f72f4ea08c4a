"""The real-task verdict rules on sweep folders written by the sweep report code from known per-seed values."""

from lorainit.reproduction import paired, tasks
from lorainit.reproduction.claims import FAILS, HOLDS, NOT_RUN, OPEN
from lorainit.reproduction.load import load

from .conftest import sweep_folder


def curve(best_lr, best, noise=0.01):
    """Perplexity with its minimum ``best`` at ``best_lr``; each seed shifts every value alike (a data-order effect)."""
    return lambda lr, seed: (
        best + abs(lr / best_lr - 1) + noise * seed,
        best + abs(lr / best_lr - 1) + noise * seed + 0.5,
    )


def studies(tmp_path, values, **kw):
    """A study with each curve's optimum inside the grid unless ``lrs`` puts it at an edge."""
    kw.setdefault("lrs", (1e-4, 2e-4, 1e-3, 5e-3))
    sweep_folder(tmp_path / "s" / "tiny-wiki", values, **kw)
    (tmp_path / "f").mkdir(exist_ok=True)
    return load(tmp_path / "s")


def test_h4_holds_when_init_a_wins_paired_at_a_larger_lr(tmp_path):
    st = studies(tmp_path, {"init_a": curve(1e-3, 19.0), "init_b": curve(2e-4, 20.0)})
    v = tasks.h4(st, tmp_path / "f")
    assert v.verdict == HOLDS and "better by 1 ± 0" in v.reason and (tmp_path / "f" / "task_tiny-wiki.png").exists()


def test_h4_does_not_hold_when_init_b_wins(tmp_path):
    st = studies(tmp_path, {"init_a": curve(1e-3, 20.0), "init_b": curve(2e-4, 19.0)})
    assert tasks.h4(st, tmp_path / "f").verdict == FAILS


def test_a_task_that_was_not_learned_is_inconclusive(tmp_path):
    flat = lambda lr, seed: (0.493, 0.5015)
    st = studies(tmp_path, {"init_a": flat, "init_b": flat, "hrp": flat}, direction="maximize", name_metric="accuracy")
    v = tasks.h4(st, tmp_path / "f")
    assert v.verdict == OPEN and "did not learn" in v.reason and "removes 0.0% of the errors" in v.reason
    assert paired.stuck(st.sweeps[0]) == (1.0, 0.493)


def test_a_win_over_an_init_selected_at_the_grids_edge_is_provisional(tmp_path):
    # init_b's optimum (1e-4) is the grid's lowest LR: its tuned value may lie below the grid, so Init[A]'s win is open
    st = studies(tmp_path / "a", {"init_a": curve(1e-3, 19.0), "init_b": curve(1e-4, 20.0)})
    v = tasks.h4(st, tmp_path / "f")
    assert v.verdict == OPEN and "init_b's selected LR 0.0001 is at the grid's edge" in v.reason
    # a loss for hrp stays a loss where only the winner sits at the edge
    st = studies(tmp_path / "b", {"init_a": curve(1e-4, 19.0), "hrp": curve(1e-3, 20.0)})
    assert tasks.r3(st, tmp_path / "f").verdict == FAILS
    # L1: a spread above 2% caused by an edge-selected worst init is open; without it the rest decide
    st = studies(tmp_path / "c", {"init_a": curve(1e-3, 19.0), "pissa": curve(1e-3, 19.1), "init_b": curve(5e-3, 21.0)})
    v = tasks.l1(st, tmp_path / "f")
    assert v.verdict == OPEN and "selected at the grid's edge: init_b" in v.numbers[0]
    st = studies(tmp_path / "d", {"init_a": curve(1e-3, 19.0), "pissa": curve(1e-3, 20.0), "init_b": curve(5e-3, 21.0)})
    v = tasks.l1(st, tmp_path / "f")
    assert v.verdict == FAILS and "without init_b: 5.1%" in v.numbers[0]


def test_an_extra_lr_beyond_the_edge_settles_the_edge_selected_init(tmp_path):
    # as above, but init_b also ran one grid step below (sweep --widen): 1e-4 is now inside its LRs, so H4 is decided
    st = studies(tmp_path, {"init_a": curve(1e-3, 19.0), "init_b": curve(1e-4, 20.0)}, extra=[("init_b", 5e-5)])
    assert not st.sweeps[0].per_init()["init_b"]["selected_at_edge"]
    v = tasks.h4(st, tmp_path / "f")
    assert v.verdict == HOLDS and "init_b also at LR 5e-05; 27/27 points finished" in v.setup


def test_r3_waits_for_an_unfinished_hrp(tmp_path):
    part = lambda lr, seed: (19.0, 19.5) if seed == 0 else None
    st = studies(tmp_path, {"init_a": curve(1e-3, 19.0), "hrp": part})
    v = tasks.r3(st, tmp_path / "f")
    assert v.verdict == OPEN and "hrp has no LR" in v.reason
    assert tasks.r3(studies(tmp_path / "x", {"init_a": curve(1e-3, 19.0)}), tmp_path / "f").verdict == NOT_RUN


def test_l1_spreads(tmp_path):
    close = {"init_a": curve(1e-3, 19.0), "pissa": curve(1e-4, 19.1)}  # tuned: 0.5%; at 2e-4: far apart
    v = tasks.l1(studies(tmp_path / "a", close), tmp_path / "f")
    assert v.verdict == HOLDS and "tuned spread 0.5%" in v.numbers[0]
    far = {"init_a": curve(1e-3, 19.0), "init_b": curve(2e-4, 20.0)}  # tuned: 5.2%
    assert tasks.l1(studies(tmp_path / "b", far), tmp_path / "f").verdict == FAILS


def test_r5_holds_within_2_percent_of_full_fails_beyond_and_reports_lr_ratios(tmp_path):
    # hrp 0.19 worse than full (test 19.51 on average) at 8x full's LR, equal seed shifts: a zero-width interval
    near = {"full": curve(1.25e-4, 19.0), "hrp": curve(1e-3, 19.19), "init_a": curve(1e-3, 19.0)}
    v = tasks.r5(studies(tmp_path / "a", near, lrs=(6.25e-5, 1.25e-4, 1e-3, 2e-3)), tmp_path / "f")
    assert v.verdict == HOLDS and "HRP -0.97% ± 0.00%" in v.reason
    assert "hrp 8x, init_a 8x" in v.numbers[0] and (tmp_path / "f" / "r5_tiny-wiki.png").exists()
    far = {"full": curve(1.25e-4, 19.0), "hrp": curve(1e-3, 19.6)}  # 3.2% worse
    assert tasks.r5(studies(tmp_path / "b", far, lrs=(6.25e-5, 1.25e-4, 1e-3, 2e-3)), tmp_path / "f").verdict == FAILS
    better = {"full": curve(1.25e-4, 19.6), "hrp": curve(1e-3, 19.0)}
    assert (
        tasks.r5(studies(tmp_path / "c", better, lrs=(6.25e-5, 1.25e-4, 1e-3, 2e-3)), tmp_path / "f").verdict == HOLDS
    )


def test_r5_is_not_run_without_full_and_full_is_no_init_for_r3_and_l1(tmp_path):
    assert tasks.r5(studies(tmp_path / "a", {"hrp": curve(1e-3, 19.0)}), tmp_path / "f").verdict == NOT_RUN
    st = studies(tmp_path / "b", {"init_a": curve(1e-3, 19.0), "hrp": curve(1e-3, 18.0), "full": curve(1e-4, 17.0)})
    r3 = tasks.r3(st, tmp_path / "f")
    assert r3.verdict == HOLDS and "full" not in r3.reason  # full beats hrp, yet R3 compares inits only
    l1 = tasks.l1(st, tmp_path / "f")
    assert "full" not in l1.numbers[0] and paired.lora(st.sweeps[0]) == ["init_a", "hrp"]
