"""A finetune sweep on the real package-shipped MiniLM and nli data (tiny slices): each trial a resumable
run folder, the validation metric as the trial value, test beside it, a diverging LR recorded as such."""

import dataclasses
import shutil

import pytest

from lorainit.experiments import finetune
from lorainit.sweeps import experiment, report, summary, worker
from lorainit.sweeps.store import Store

pytestmark = pytest.mark.slow  # real models on CPU

TINY = finetune.FinetuneConfig(
    model="minilm-l6",
    task="nli",
    steps=4,
    batch_size=4,
    seq_len=32,
    eval_every=2,
    checkpoint_every=2,
    max_train=16,
    max_eval=8,
    rank=4,
    device="cpu",
)


def test_finetune_sweep_records_val_test_and_divergence(tmp_path):
    res = worker.run(
        worker.SweepConfig(experiment="finetune", inits=("init_a",), lrs=(1e-3, 1e9), seeds=1),
        TINY,
        tmp_path,
        progress=False,
    )
    assert (res["done"], res["total"], res["diverged"]) == (2, 2, 1)
    st = Store(f"sqlite:///{tmp_path / 'study.db'}", "sweep")
    grid = st.load()
    assert (grid["metric"], grid["direction"]) == ("accuracy", "maximize")
    by_lr = {r["lr"]: r for r in st.records()}
    ok, bad = by_lr[1e-3], by_lr[1e9]
    assert ok["state"] == "COMPLETE" and 0 <= ok["value"] <= 1 and 0 <= ok["test"] <= 1
    assert [h["step"] for h in ok["val_history"]] == [0, 2, 4]
    assert (tmp_path / "trials" / "init_a-lr0.001-seed0" / "run_card.json").exists()
    assert (
        bad["state"] == "PRUNED"
        and bad["reason"] in ("loss exploded", "non-finite loss")
        and bad["diverged_step"] is not None
    )
    s = summary.summarize(grid, st.records())
    a = s["groups"][0]["inits"]["init_a"]
    assert a["selected_lr"] == 1e-3 and a["test_at_selected"][0] == ok["test"] and a["first_diverging_lr"] == 1e9
    again = worker.run(
        worker.SweepConfig(experiment="finetune", inits=("init_a",), lrs=(1e-3, 1e9), seeds=1),
        dataclasses.replace(TINY),
        tmp_path,
        progress=False,
    )
    assert again["ran"] == 0


LM = finetune.FinetuneConfig(
    model="smollm2-135m",
    task="wiki",
    steps=4,
    batch_size=2,
    seq_len=32,
    eval_every=2,
    checkpoint_every=2,
    max_train=16,
    max_eval=4,
    rank=4,
    device="cpu",
    targets=("q_proj", "v_proj"),
)


def records(folder):
    st = Store(f"sqlite:///{folder / 'study.db'}", "sweep")
    st.load()
    return {(r["init"], r["lr"]): r for r in st.records()}


@pytest.mark.parametrize(
    "cfg, inits", [(LM, ("init_a", "pissa", "lora_one", "eva")), (TINY, ("init_b", "lora_ga"))], ids=["lm", "classify"]
)
def test_points_of_every_init_train_batched_and_equal_one_at_a_time(cfg, inits, tiny_folders, tmp_path):
    if cfg is LM:  # a tiny Llama with SmolLM2's tokenizer: 16 trainings of the 135M model took ~2 min on 2 cores
        cfg = dataclasses.replace(cfg, model=str(tiny_folders / "llama"))
    grid = dict(experiment="finetune", inits=inits, lrs=(1e-3, 1e9), seeds=1)
    worker.run(worker.SweepConfig(**grid, batch=8), cfg, tmp_path / "batched", progress=False)
    worker.run(worker.SweepConfig(**grid, batch=1), cfg, tmp_path / "single", progress=False)
    batched, single = records(tmp_path / "batched"), records(tmp_path / "single")
    assert all(r.get("batched_with") == 2 * len(inits) for r in batched.values())
    assert all(r.get("batched_with") == 1 for r in single.values())
    for key, one in single.items():
        many = batched[key]
        assert many["state"] == one["state"], key
        if one["state"] == "COMPLETE":
            assert many["value"] == pytest.approx(one["value"], rel=1e-4)
            assert many["test"] == pytest.approx(one["test"], rel=1e-4)
            assert [h["step"] for h in many["val_history"]] == [h["step"] for h in one["val_history"]] == [0, 2, 4]
        else:
            assert key[1] == 1e9 and many["diverged_step"] == one["diverged_step"] and many["reason"] == one["reason"]
    # the data-dependent starts were computed once per (init, seed) and shared by both learning rates
    assert len(list((tmp_path / "batched" / "inits").glob("*.safetensors"))) == len(inits)


def test_a_requeued_point_whose_run_finished_is_not_trained_again(tmp_path, monkeypatch):
    grid = worker.SweepConfig(experiment="finetune", inits=("init_a",), lrs=(1e-3, 2e-3), seeds=1, batch=1)
    worker.run(grid, LM, tmp_path, progress=False)
    card = tmp_path / "trials" / "init_a-lr0.001-seed0" / "run_card.json"
    before = card.read_text()
    from lorainit.experiments import finetune_run

    monkeypatch.setattr(finetune_run.train, "train", lambda *a, **k: pytest.fail("trained again"))
    again = experiment.get("finetune").run(LM, [{"seed": 0, "init": "init_a", "lr": 1e-3}], tmp_path)
    assert again[0][0] == records(tmp_path)[("init_a", 1e-3)]["value"] and card.read_text() == before


def test_a_batch_that_does_not_fit_is_split_until_it_does(tmp_path, monkeypatch):
    """A CUDA out-of-memory error (simulated: more than 2 runs 'do not fit') splits the batch in halves; every
    point still finishes once, with the values of an unsplit batch."""
    import torch

    from lorainit.experiments import finetune_run

    real = finetune_run.run
    sizes = []

    def small_card(cfg, points, out, **kw):
        sizes.append(len(points))
        if len(points) > 2:
            (out / "config.json").parent.mkdir(parents=True, exist_ok=True)
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(cfg, points, out, **kw)

    grid = dict(experiment="finetune", inits=("init_a", "init_b"), lrs=(1e-3, 3e-3), seeds=1)
    monkeypatch.setattr(finetune_run, "run", small_card)
    res = worker.run(worker.SweepConfig(**grid, batch=4), TINY, tmp_path / "split", progress=False)
    assert (res["done"], res["total"]) == (4, 4) and sizes == [4, 2, 2]
    monkeypatch.setattr(finetune_run, "run", real)
    worker.run(worker.SweepConfig(**grid, batch=4), TINY, tmp_path / "whole", progress=False)
    split, whole = records(tmp_path / "split"), records(tmp_path / "whole")
    assert {k: r["value"] for k, r in split.items()} == pytest.approx(
        {k: r["value"] for k, r in whole.items()}, rel=1e-5
    )
    assert [d.name for d in (tmp_path / "split" / "trials").iterdir() if d.name.startswith("batch-")] == [
        d.name
        for d in (tmp_path / "split" / "trials").iterdir()
        if d.name.startswith("batch-") and (d / "log.jsonl").exists()
    ]
    assert (
        len([d for d in (tmp_path / "split" / "trials").iterdir() if d.name.startswith("batch-")]) == 2
    )  # the failed one is gone


def test_the_report_names_one_answer_and_exports_its_adapter(tiny_folders, tmp_path):
    import peft

    from lorainit import models

    tiny = str(tiny_folders / "llama")  # (a tiny Llama with SmolLM2's tokenizer: the report does not depend on size)
    worker.run(
        worker.SweepConfig(experiment="finetune", inits=("init_a", "init_b"), lrs=(1e-3, 3e-3), seeds=2, batch=8),
        dataclasses.replace(LM, model=tiny),
        tmp_path,
        progress=False,
    )
    st = Store(f"sqlite:///{tmp_path / 'study.db'}", "sweep")
    st.load()
    summary = report.write(st, tmp_path)
    best, inits = summary["groups"][0]["best"], summary["groups"][0]["inits"]
    vals = {i: s["val_at_selected"][0] for i, s in inits.items()}
    assert best["init"] == min(vals, key=vals.get) and best["val"][0] == min(vals.values())  # perplexity: minimized
    r = best["runner_up"]
    assert r["init"] != best["init"] and r["margin"] == pytest.approx(abs(vals["init_a"] - vals["init_b"]))
    assert r["margin_se"] is not None and r["exceeds_se"] == (r["margin"] > r["margin_se"])
    md = (tmp_path / "report.md").read_text()
    assert md.index("## Answer") < md.index("## all") and f"**{best['init']}** at LR" in md
    winner = next(x for x in st.records() if x["number"] == best["trial"]["number"])
    assert (winner["init"], winner["lr"]) == (best["init"], best["lr"])
    dest = report.export_best(summary, tmp_path / "best")
    assert (dest / "adapter_model.safetensors").exists() and (dest / "run_card.json").exists()
    model, _, _, _ = models.load(tiny)
    peft.PeftModel.from_pretrained(model, str(dest))  # a plain PEFT adapter folder
    with pytest.raises(ValueError, match="exists; give --export-best a new folder"):
        report.export_best(summary, tmp_path / "best")
    # the sweep folder moved (as a copy committed elsewhere): its runs are found in its own trials/
    moved = tmp_path.parent / (tmp_path.name + "-moved")
    shutil.copytree(tmp_path, moved, ignore=shutil.ignore_patterns("best"))
    shutil.rmtree(tmp_path / "trials")
    st = Store(f"sqlite:///{moved / 'study.db'}", "sweep")
    st.load()
    summary = report.write(st, moved)
    assert summary["groups"][0]["best"]["trial"]["run"].startswith(str(moved / "trials"))
    assert (report.export_best(summary, moved / "best") / "adapter_model.safetensors").exists()
    shutil.rmtree(moved / "trials")  # a copy without its run folders: the report says so
    report.write(st, moved)
    assert "(not kept in this folder: the run folders were left out of this copy)" in (moved / "report.md").read_text()


def test_full_points_train_alone_beside_one_batch_of_lora_points_and_report_as_a_method(tiny_folders, tmp_path):
    """--inits init_a,full,init_b: the LoRA points of a claim train as one batch, each full fine-tune alone (claimed
    by itself, so another worker could take the LoRA batch meanwhile); the report has a row for full at its own LR."""
    cfg = dataclasses.replace(LM, model=str(tiny_folders / "llama"))
    sweep = worker.SweepConfig(
        experiment="finetune", inits=("init_a", "full", "init_b"), lrs=(1e-3, 1e-2), seeds=1, batch=8
    )
    res = worker.run(sweep, cfg, tmp_path, progress=False)
    assert (res["done"], res["total"], res["ran"]) == (6, 6, 6)
    recs = records(tmp_path)
    assert {k: r["batched_with"] for k, r in recs.items()} == {
        (i, lr): 1 if i == "full" else 4 for i in sweep.inits for lr in sweep.lrs
    }
    assert all(r["state"] == "COMPLETE" for r in recs.values())
    assert (tmp_path / "trials" / "full-lr0.001-seed0" / "model" / "model.safetensors").exists()
    st = Store(f"sqlite:///{tmp_path / 'study.db'}", "sweep")
    s = summary.summarize(st.load(), st.records())
    assert s["groups"][0]["inits"]["full"]["selected_lr"] in (1e-3, 1e-2)


def test_full_is_refused_where_it_means_nothing():
    with pytest.raises(KeyError, match="unknown init scheme 'full'"):
        worker.grid_for(worker.SweepConfig(experiment="toy", inits=("init_a", "full")), experiment.get("toy").config())
