"""``lorainit mf`` (experiments/mf_cli.py), run as a user would."""

from helpers import lorainit


def test_mf_smoke(tmp_path):
    r = lorainit("mf", "--seeds", "2", "--steps", "60", "--preheat-sweep", "10", "--out", str(tmp_path / "mf"))
    assert r.returncode == 0, r.stderr
    assert "asymmetric" in r.stdout and "preheat   10 steps" in r.stdout
    assert (tmp_path / "mf" / "mf_loss_curves.png").stat().st_size > 10_000
    again = lorainit("mf", "--seeds", "3", "--out", str(tmp_path / "mf"))
    assert (
        again.returncode == 2
        and "different config (preheat_sweep: [10] there, [10, 30, 100, 300] now, seeds: 2 there, 3 now, "
        "steps: 60 there, 1500 now)"
        in again.stderr
    )
