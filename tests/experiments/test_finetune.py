"""The fine-tune config: validation; and the user data files it reads."""

import dataclasses

import pytest

from lorainit import data
from lorainit.experiments import finetune


def test_validate_refuses_bad_values():
    for field, value, message in (
        ("lr", 0.0, "lr must be > 0"),
        ("steps", 0, "steps must be a positive"),
        ("warmup_ratio", 1.0, "warmup_ratio must be in"),
        ("alpha", -1.0, "alpha and loraplus_ratio"),
        ("eval_batch_size", -1, "eval_batch_size must be >= 0"),
        ("max_eval", -2, "max_eval must be >= 0"),
    ):
        with pytest.raises(ValueError, match=message):
            finetune.validate(dataclasses.replace(finetune.FinetuneConfig(), **{field: value}))


@pytest.mark.parametrize("batch_size, given, want", [(16, 0, 64), (100, 0, 100), (16, 8, 8), (16, 200, 200)])
def test_the_evaluation_batch_is_64_or_the_training_batch_where_larger_unless_given(batch_size, given, want):
    cfg = finetune.FinetuneConfig(batch_size=batch_size, eval_batch_size=given)
    assert finetune.eval_batch(cfg) == want


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "holds no records"),
        ('{"text": "a"}\nnot json\n', ":2: not valid JSON"),
        ('{"txt": "a"}\n', ":1: missing field 'text'"),
        ('{"text": "a", "label": 1}\n{"text": "b"}\n', "record 2 has no 'label'"),
        ('{"text": "a"}\n{"text": "' + "x" * (1 << 20) + '"}\n', ":2: line longer than 1048576 bytes"),
        ("\n\n", "holds no records"),
        (
            '{"text": "a", "label": "x"}\n{"text": "b", "label": "x"}\n',
            "every record has the label 'x'; a classification task needs two",
        ),
        (
            '{"text": "a", "label": 1}\n{"text": "b", "label": "1"}\n{"text": "c", "label": true}\n',
            "labels must all be strings or all integers",
        ),
    ],
)
def test_bad_data_files(tmp_path, content, message):
    f = tmp_path / "d.jsonl"
    f.write_text(content)
    with pytest.raises(ValueError, match=message):
        data.load(str(f))


@pytest.mark.parametrize(
    "setting, kind, full, want",
    [
        ("auto", "lm", False, "reduce-overhead"),  # one shape every batch, adapters (one process or torchrun)
        ("auto", "classify", False, None),  # padded to a new length each batch: a graph per length
        ("auto", "choice", False, None),
        ("auto", "lm", True, None),  # a full fine-tune: not measured with graphs
        ("on", "classify", True, "reduce-overhead"),  # asked for: every compiled run
        ("off", "lm", False, None),  # never
    ],
)
def test_cuda_graphs_auto_only_for_adapters_on_language_modelling(setting, kind, full, want):
    assert finetune.graph_mode(setting, kind, object() if full else None) == want


def test_how_a_run_executes_is_not_part_of_what_it_is():
    """Device, compilation and CUDA graphs change how a run executes, not its identity: a folder started with one
    setting resumes with another, and a sweep's points match either way."""
    cfg = finetune.FinetuneConfig(model="smollm2-135m", task="wiki")
    other = dataclasses.replace(cfg, device="cpu", compile="off", cuda_graphs="on", eval_batch_size=7)
    point = {"init": "init_a", "lr": 1e-3, "seed": 0}
    assert finetune.identity(other, [point]) == finetune.identity(cfg, [point])
    assert finetune.run_identity(other, point) == finetune.run_identity(cfg, point)
    assert finetune.identity(dataclasses.replace(cfg, rank=4), [point]) != finetune.identity(cfg, [point])
