"""What a study is: its grid's points in enqueue order, and the signature stored with the study."""

from lorainit.sweeps.grid import Grid, point_key

from .test_store import GRID


def test_grid_points_are_the_full_product_in_enqueue_order():
    pts = GRID.points()
    assert len(pts) == 16 and len({point_key(p) for p in pts}) == 16
    assert pts[0] == {"width": 8, "seed": 0, "init": "init_a", "lr": 0.1}
    assert [p["width"] for p in pts] == [8] * 8 + [16] * 8  # width-major: a worker's claims share a width


def test_the_signature_is_plain_json_and_rebuilds_the_grid():
    sig = GRID.signature()
    assert sig == {
        "experiment": "toy",
        "dims": GRID.dims,
        "config": {"steps": 3},
        "metric": "final loss",
        "direction": "minimize",
    }
    assert Grid(**sig) == GRID and point_key({"b": 1, "a": 2}) == '{"a": 2, "b": 1}'
