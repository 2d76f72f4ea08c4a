"""Evaluating K stacked runs gives each run's metric as evaluating it alone; the feature monitor per run."""

import dataclasses

import pytest
import torch

from lorainit import batches, data, models, multi, starts
from lorainit.experiments import finetune, finetune_eval

pytestmark = pytest.mark.slow  # real models on CPU

CFG = finetune.FinetuneConfig(batch_size=3, seq_len=32, max_eval=4, device="cpu")


def trained(scheme, W, name, seed):
    """A start of ``scheme`` with A moved away from it (so that B A != 0 for init_b: a 'trained' adapter)."""
    f = starts.draw(scheme, W, 2, seed=seed, layer=name, layer_scaling=1.0)
    moved = (
        f.A + 0.05 * torch.randn(f.A.shape, generator=torch.Generator().manual_seed(seed))
        if scheme == "init_b"
        else f.A
    )
    return dataclasses.replace(f, A=moved)


def with_runs(model, targets, schemes, head=None):
    linears = multi.targets_of(model, targets)
    runs = [multi.Run(s, 1e-3, seed=k) for k, s in enumerate(schemes)]
    fs = [
        {starts.PEFT_PREFIX + n: trained(s, m.weight, n, k) for n, m in linears.items()} for k, s in enumerate(schemes)
    ]
    heads = [models.seeded_head(model, head, k) for k in range(len(schemes))] if head else None
    multi.attach(model, runs, fs, scaling=1.0, targets=targets, head=head, heads=heads)
    return model


@pytest.mark.parametrize("task_name", ["wiki", "mathqa"])
def test_lm_and_choice_metrics_of_stacked_runs_equal_each_run_alone(task_name):
    task = data.load(task_name)
    model, tok, _, _ = models.load("smollm2-135m")
    both = finetune_eval.evaluate(with_runs(model, ["q_proj"], ["init_b", "init_b"]), 2, task, tok, "val", CFG, "cpu")
    for k in range(2):
        single, _, _, _ = models.load("smollm2-135m")
        linears = multi.targets_of(single, ["q_proj"])
        f = {starts.PEFT_PREFIX + n: trained("init_b", m.weight, n, k) for n, m in linears.items()}
        multi.attach(single, [multi.Run("init_b", 1e-3, seed=k)], [f], scaling=1.0, targets=["q_proj"])
        alone = finetune_eval.evaluate(single, 1, task, tok, "val", CFG, "cpu")
        for key, v in alone.items():
            assert both[key][k] == pytest.approx(v[0], rel=1e-5), key
    if task.kind == "lm":
        assert both["val_loss"][0] != both["val_loss"][1]  # the two runs differ


def test_classification_accuracy_per_run_and_features(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text("".join('{"text": "word %d", "label": %d}\n' % (i, i % 2) for i in range(60)))
    task = data.load(str(f))
    model, tok, _, _ = models.load("minilm-l6", num_labels=2)
    base = finetune_eval.evaluate(model, 1, task, tok, "test", dataclasses.replace(CFG, task=str(f)), "cpu")
    with_runs(model, ["query", "value"], ["init_b", "init_b", "init_a"], head="classifier")
    got = finetune_eval.evaluate(model, 3, task, tok, "test", dataclasses.replace(CFG, task=str(f)), "cpu")
    assert (
        len(got["test_accuracy"]) == 3
        and all(0 <= a <= 1 for a in got["test_accuracy"])
        and len(base["test_accuracy"]) == 1
    )
    probe = batches.collate(task, tok, task.splits["val"][:3], 32, "cpu")
    feats = finetune_eval.features(model, 3, probe)
    assert len(feats) == 3 and len(feats[0]) == 2 * 6  # query and value in 6 layers
    za, zb = zip(*feats[2].values())
    assert all(z > 0 for z in za) and all(z == 0 for z in zb)  # init_a: B = 0, so Z_B = B A z = 0 at the start
    assert all(v[0] > 0 and v[1] > 0 for v in feats[0].values())  # init_b with A moved: both nonzero


@pytest.mark.parametrize("rows", [256, 3])  # 3: the log-softmax of the option tokens in chunks of 3 rows
def test_options_scored_on_the_prompts_cache_equal_each_text_scored_whole(monkeypatch, rows):
    monkeypatch.setattr(finetune_eval, "ROWS", rows)
    from lorainit.batches import choice_text

    task = data.load("mathqa")
    model, tok, _, _ = models.load("smollm2-135m")
    model = with_runs(model, ["q_proj", "v_proj"], ["init_b", "init_b"])  # two runs with B A != 0
    chunk = task.splits["val"][:3]
    prompts, owner, options = [], [], []
    for q, e in enumerate(chunk):
        prompts.append(tok(choice_text(e)[0])["input_ids"])
        for o in range(len(e["options"])):
            owner.append(q)
            options.append(tok(choice_text(e)[0] + choice_text(e, o)[1])["input_ids"])
    assert max(len(o) - len(prompts[q]) for q, o in zip(owner, options)) > 1  # some option has several tokens
    whole = finetune_eval._scores_whole(model, 2, tok, prompts, owner, options, "cpu")
    shared = finetune_eval._scores_shared(model, 2, tok, prompts, owner, options, "cpu")
    assert shared.shape == whole.shape == (2, len(owner))
    torch.testing.assert_close(shared, whole, rtol=1e-4, atol=1e-4)
    assert not torch.equal(whole[0], whole[1])  # the runs differ, each scored on its own rows


@pytest.mark.parametrize("task_name", ["mathqa", "sentiment"])
def test_metrics_do_not_depend_on_the_evaluation_batch(monkeypatch, task_name):
    """--eval-batch-size changes how many examples one forward takes (0: --batch-size, 3 here), not any run's
    metric (fp32: equal)."""
    task = data.load(task_name)
    name, targets, head = (
        ("minilm-l6", ["query"], "classifier") if task.kind == "classify" else ("smollm2-135m", ["q_proj"], None)
    )
    model, tok, _, _ = models.load(name, **({"num_labels": len(task.labels)} if head else {}))
    with_runs(model, targets, ["init_b", "init_b"], head=head)
    which = "_classify" if head else "_choose"
    sizes, inner = [], getattr(finetune_eval, which)
    monkeypatch.setattr(
        finetune_eval, which, lambda m, K, t, tk, chunk, *a: sizes.append(len(chunk)) or inner(m, K, t, tk, chunk, *a)
    )
    cfg = dataclasses.replace(CFG, task=task_name, max_eval=7)
    got = {}
    for b in (0, 2, 7):
        sizes.clear()
        got[b] = finetune_eval.evaluate(model, 2, task, tok, "val", dataclasses.replace(cfg, eval_batch_size=b), "cpu")
        assert sizes == {0: [7], 2: [2, 2, 2, 1], 7: [7]}[b]  # (0: 64 at most; 7 examples)
    assert got[0] == got[2] == got[7]


@pytest.mark.parametrize("task_name", ["wiki", "mathqa"])
def test_a_batch_that_does_not_fit_is_evaluated_in_halves(monkeypatch, task_name):
    """An out-of-memory evaluation batch is split (7 -> 3 + 4 -> 1 + 2 + 2 + 2 here), with the metrics of batches
    that fit; a single example that does not fit still fails."""
    task = data.load(task_name)
    model, tok, _, _ = models.load("smollm2-135m")
    with_runs(model, ["q_proj"], ["init_b", "init_b"])
    which = "_lm_sums" if task.kind == "lm" else "_choose"
    inner, tried, limit = getattr(finetune_eval, which), [], [2]

    def scarce(m, K, t, tk, chunk, *a):
        tried.append(len(chunk))
        if len(chunk) > limit[0]:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return inner(m, K, t, tk, chunk, *a)

    monkeypatch.setattr(finetune_eval, which, scarce)
    cfg = dataclasses.replace(CFG, task=task_name, max_eval=7)
    split = finetune_eval.evaluate(model, 2, task, tok, "val", dataclasses.replace(cfg, eval_batch_size=7), "cpu")
    assert tried == [7, 3, 1, 2, 4, 2, 2]
    tried.clear()
    fits = finetune_eval.evaluate(model, 2, task, tok, "val", dataclasses.replace(cfg, eval_batch_size=2), "cpu")
    assert tried == [2, 2, 2, 1]
    for key, v in fits.items():
        assert split[key] == pytest.approx(v, rel=1e-6), key
    limit[0] = 0
    with pytest.raises(torch.OutOfMemoryError):
        finetune_eval.evaluate(model, 2, task, tok, "val", dataclasses.replace(cfg, eval_batch_size=2), "cpu")
