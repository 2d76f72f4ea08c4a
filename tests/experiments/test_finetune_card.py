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
