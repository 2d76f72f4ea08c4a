"""The feature figure of a run card: drawn from the Z_A / Z_B records of a LoRA run, skipped for a full fine-tune
(which has no adapter, so its evaluations carry no features)."""

from lorainit.experiments import finetune_card


def evals(features):
    return [{"step": s, "features": features(s)} for s in (0, 2, 4)]


def test_features_png_from_the_lora_layers_records(tmp_path):
    finetune_card._feature_plot(
        evals(lambda s: [{"q": [1.0 + s, 0.1 * s + 0.01], "v": [2.0, 0.5]}]), 0, tmp_path / "f.png", "t"
    )
    assert (tmp_path / "f.png").stat().st_size > 1000


def test_no_figure_without_features(tmp_path):
    finetune_card._feature_plot(evals(lambda s: [{}]), 0, tmp_path / "f.png", "t")
    assert not (tmp_path / "f.png").exists()


def test_every_layer_is_drawn_at_its_values_and_in_view(tmp_path, monkeypatch):
    import numpy as np

    figs = []
    monkeypatch.setattr(finetune_card.plots, "save", lambda fig, path, **kw: figs.append(fig))
    records = lambda s: [{"q": [1.0 + s, 0.1 * s + 0.01], "v": [20.0, 0.5]}]  # noqa: E731
    finetune_card._feature_plot(evals(records), 0, tmp_path / "f.png", "t")
    for j, ax in enumerate(figs[0].axes[:2]):  # |Z_A|, then |Z_B|
        segs = ax.collections[0].get_segments()  # one line per layer: (evals, 2) of (step, value)
        for seg, layer in zip(segs, ("q", "v")):
            np.testing.assert_allclose(seg, [[s, records(s)[0][layer][j]] for s in (0, 2, 4)])
        lo, hi = ax.get_ylim()
        values = [records(s)[0][n][j] for s in (0, 2, 4) for n in ("q", "v")]
        assert lo <= min(values) and max(values) <= hi  # autoscaled to the layers' lines, not only the mean's
