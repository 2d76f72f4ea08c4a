"""K >= 1 real fine-tunes on tiny slices of the package-shipped models and tasks: every kind of init and task in one
batch, batched == each run alone, saved adapters reload in plain PEFT with the same metric, exact resume, torchrun.

Uses the real assets (downloaded from the package index on first use and cached)."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lorainit import apply, data
from lorainit.experiments import finetune, finetune_eval, finetune_run, finetune_setup

pytestmark = pytest.mark.slow  # real models on CPU, torchrun and SIGKILL subprocesses

TINY = finetune.FinetuneConfig(
    steps=4,
    batch_size=2,
    seq_len=32,
    eval_every=2,
    checkpoint_every=2,
    max_train=8,
    max_eval=4,
    lr=1e-3,
    rank=4,
    device="cpu",
    targets=("q_proj", "v_proj"),
)
ENCODER = dataclasses.replace(TINY, model="minilm-l6", task="nli", targets=("query", "value"))
SRC = str(Path(__file__).resolve().parents[2] / "src")


def cli(args, out, *, head=("-m", "lorainit"), **env) -> subprocess.CompletedProcess:
    """``python HEAD ARGS --out OUT`` in a fresh process (HEAD: ``-m lorainit``, a ``-c`` program that runs lorainit
    itself, or ``-m torch.distributed.run ...``), src/ on its path; ``env``: more environment variables."""
    return subprocess.run(
        [sys.executable, *head, *args, "--out", str(out)],
        env={**os.environ, "PYTHONPATH": SRC, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def points(*inits, lr=1e-3, seed=0):
    return [{"init": i, "lr": lr * (1 + k), "seed": (seed + k) % 2} for k, i in enumerate(inits)]


@pytest.mark.parametrize(
    "cfg, metric",
    [
        (TINY, "perplexity"),
        (dataclasses.replace(TINY, task="mathqa", max_eval=2), "accuracy"),
        (ENCODER, "accuracy"),
        (dataclasses.replace(ENCODER, task="sentiment"), "accuracy"),
    ],
)
def test_each_model_and_task_trains_a_data_dependent_and_a_residual_init_batched(cfg, metric, tmp_path):
    pts = points("lora_one", "pissa")
    cards = finetune_run.run(cfg, pts, tmp_path / "b", run_dirs=[tmp_path / "r0", tmp_path / "r1"], progress=False)
    for k, card in enumerate(cards):
        assert card["config"]["init"] == pts[k]["init"] and card["diverged"] is None
        assert f"test_{metric}" in card["metrics"]["base_test"] and f"val_{metric}" in card["metrics"]["final"]
        assert [r["step"] for r in card["metrics"]["val_history"]] == [0, 2, 4] and len(
            card["metrics"]["train_loss"]
        ) == 4
        assert card["task"]["split_hash"] == data.load(cfg.task).split_hash and card["timing"]["runs_in_batch"] == 2
        assert (
            len(card["model"]["sha256"]) == 64
            and card["task"]["data_sha256"] == data.load(cfg.task).source_sha256 != ""
        )
        run_dir = tmp_path / f"r{k}"
        assert (run_dir / "adapter" / "adapter_model.safetensors").exists() and (run_dir / "features.png").exists()
    assert cards[1]["adapter"]["converted_for_original_base"] and cards[1]["adapter"]["rank"] == 8  # pissa: rank 2r
    log = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [len(r["run_loss"]) for r in log if "run_loss" in r] == [2] * 4
    assert not (tmp_path / "b" / "checkpoint").exists() and not (tmp_path / "b" / "inits").exists()


@pytest.mark.parametrize("cfg", [TINY, ENCODER], ids=["lm", "classify"])
def test_batched_equals_each_run_alone_and_adapters_reload_in_plain_peft(cfg, tiny_folders, tmp_path):
    import peft

    from lorainit import models

    if cfg is TINY:  # a tiny Llama with SmolLM2's tokenizer (SmolLM2-135M itself: test_each_model_and_task...)
        cfg = dataclasses.replace(cfg, model=str(tiny_folders / "llama"))
    pts = points("init_a", "lora_ga", "eva", "hrp")
    together = finetune_run.run(cfg, pts, tmp_path / "all", init_cache=tmp_path / "inits", progress=False)
    for k, p in enumerate(pts):  # the starts are read from the batch's cache (their own equality is test_multi's)
        [one] = finetune_run.run(cfg, [p], tmp_path / f"one{k}", init_cache=tmp_path / "inits", progress=False)
        assert one["init"]["starts"]["computed"] == []
        assert together[k]["metrics"]["train_loss"] == pytest.approx(one["metrics"]["train_loss"], rel=1e-4)
        for key, v in one["metrics"]["final"].items():
            assert together[k]["metrics"]["final"][key] == pytest.approx(v, rel=1e-4), (p, key)
        # the saved adapter on a fresh base, through plain PEFT and through apply.load: the same validation metric
        loaded = finetune_setup.load(cfg, torch.device("cpu"))
        fresh, _, _, _ = models.load(cfg.model, num_labels=len(loaded.task.labels) or None)
        models.without_dropout(fresh)
        for model in (
            peft.PeftModel.from_pretrained(fresh, str(tmp_path / "all" / f"run{k}" / "adapter")),
            apply.load(
                models.load(cfg.model, num_labels=len(loaded.task.labels) or None)[0],
                tmp_path / "all" / f"run{k}" / "adapter",
            ),
        ):
            models.without_dropout(model)
            got = finetune_eval.evaluate(model, 1, loaded.task, loaded.tok, "val", cfg, torch.device("cpu"))
            metric = f"val_{loaded.task.metric}"
            assert got[metric][0] == pytest.approx(together[k]["metrics"]["final"][metric], rel=1e-4), (p, metric)


def test_resume_equals_uninterrupted(tiny_folders, tmp_path, monkeypatch):
    cfg = dataclasses.replace(TINY, steps=6, model=str(tiny_folders / "llama"))  # (resume does not depend on size)
    pts = points("init_b", "lora_one")
    finetune_run.run(cfg, pts, tmp_path / "a", progress=False)
    real = finetune_run.train.train

    def crashing(*args, log=lambda r: None, **kw):  # dies after step 4's update is logged: checkpoint at step 4 exists
        def log_then_crash(rec):
            log(rec)
            if rec.get("step") == 4 and "loss" in rec:
                raise KeyboardInterrupt("simulated crash")

        return real(*args, log=log_then_crash, **kw)

    monkeypatch.setattr(finetune_run.train, "train", crashing)
    with pytest.raises(KeyboardInterrupt):
        finetune_run.run(cfg, pts, tmp_path / "b", progress=False)
    assert (tmp_path / "b" / "checkpoint").exists() and not (tmp_path / "b" / "run0" / "run_card.json").exists()
    assert any((tmp_path / "b" / "inits").iterdir())  # the starts are cached: the resumed run reads them
    monkeypatch.setattr(finetune_run.train, "train", real)
    cards = finetune_run.run(cfg, pts, tmp_path / "b", progress=False)
    assert cards[0]["timing"]["resumed_from"] == 4 and cards[0]["init"]["starts"]["computed"] == []
    for k in range(2):
        a = load_file(tmp_path / "a" / f"run{k}" / "adapter" / "adapter_model.safetensors")
        b = load_file(tmp_path / "b" / f"run{k}" / "adapter" / "adapter_model.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)
    la = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    lb = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r.get("run_loss") for r in la] == [r.get("run_loss") for r in lb]


def test_finished_run_is_not_trained_again_and_another_config_is_refused(tmp_path, monkeypatch):
    first = finetune_run.run(TINY, points("init_a"), tmp_path / "r", progress=False)
    monkeypatch.setattr(finetune_run.train, "train", lambda *a, **k: pytest.fail("trained again"))
    assert finetune_run.run(TINY, points("init_a"), tmp_path / "r", progress=False) == first
    with pytest.raises(ValueError, match="different config"):
        finetune_run.run(TINY, points("init_b"), tmp_path / "r", progress=False)


@pytest.mark.parametrize(
    "cfg, message",
    [
        (dataclasses.replace(TINY, task="nli"), "task nli needs an encoder"),
        (
            dataclasses.replace(ENCODER, task="wiki"),
            "task wiki needs a causal LM \\(e.g. smollm2-135m\\); minilm-l6 is an encoder",
        ),
    ],
)
def test_wrong_model_kind_for_the_task(cfg, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        finetune_run.run(cfg, points("init_a"), tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()


def test_jsonl_task_trains(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text(
        "".join(
            json.dumps({"text": f"review {i} is {'good' if i % 2 else 'bad'}", "label": i % 2}) + "\n"
            for i in range(40)
        )
    )
    [card] = finetune_run.run(
        dataclasses.replace(ENCODER, task=str(f)), points("init_a"), tmp_path / "r", progress=False
    )
    assert card["task"]["sizes"] == {"test": 4, "val": 4, "train": 32}


CLI = [
    "--steps",
    "3",
    "--batch-size",
    "4",
    "--seq-len",
    "32",
    "--max-train",
    "16",
    "--max-eval",
    "4",
    "--eval-every",
    "3",
    "--checkpoint-every",
    "3",
    "--lr",
    "1e-3",
    "--rank",
    "4",
    "--no-progress",
]


LM_ARGS = ["--task", "wiki", "--targets", "q_proj,v_proj"]  # (on the tiny Llama: the test adds its --model)


_ONE_PROCESS: dict[tuple, Path] = {}


def _one_process(args: list, tmp_path_factory) -> Path:
    """The one-process run of ``args``, once per session: the lm cases with and without --batch-per-process compare
    against the same command."""
    if tuple(args) not in _ONE_PROCESS:
        out = tmp_path_factory.mktemp("one")
        one = cli(args, out, OMP_NUM_THREADS="1")
        assert one.returncode == 0, one.stderr[-2000:]
        _ONE_PROCESS[tuple(args)] = out
    return _ONE_PROCESS[tuple(args)]


@pytest.mark.parametrize(
    "model_args, per_process",
    [(LM_ARGS, False), (["--model", "minilm-l6", "--task", "nli", "--init", "lora_ga"], False), (LM_ARGS, True)],
    ids=["lm", "encoder", "lm-batch-per-process"],
)
def test_two_process_ddp_matches_one_process_on_the_same_global_batch(
    model_args, per_process, tiny_folders, tmp_path, tmp_path_factory
):
    """torchrun, 2 CPU processes, gloo: each trains half of every global batch (or, with --batch-per-process, a
    batch of --batch-size of its own); the averaged loss and the final adapter (and a fresh classifier head, drawn
    from the seed on both processes) equal a one-process run's on the same global batch. The gradients are averaged
    in buckets during the backward (runopt.BucketedAllReduce)."""
    if "--model" not in model_args:
        model_args = ["--model", str(tiny_folders / "llama"), *model_args]
    args = ["finetune", *model_args, *CLI]
    one_dir = _one_process(args, tmp_path_factory)
    two_args = (
        [*args, "--batch-size", "2", "--batch-per-process"] if per_process else args
    )  # 2 x 2 = the 4 of one process
    torchrun = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "lorainit")
    two = cli(two_args, tmp_path / "two", head=torchrun, OMP_NUM_THREADS="1")
    assert two.returncode == 0, two.stderr[-2000:]
    assert "destroy_process_group" not in two.stderr and "Guessing device" not in two.stderr
    la = [json.loads(line)["loss"] for line in (one_dir / "log.jsonl").read_text().splitlines() if '"loss"' in line]
    lb = [
        json.loads(line)["loss"]
        for line in (tmp_path / "two" / "log.jsonl").read_text().splitlines()
        if '"loss"' in line
    ]
    assert len(la) == len(lb) == 3
    assert lb == pytest.approx(la, rel=1e-5)
    a = load_file(one_dir / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "two" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    # atol 1e-5 is 1% of one step's AdamW update at --lr 1e-3: Adam's division by sqrt(v) turns the fp32 summation
    # order (gloo's sum of two halves vs one process's) into update differences of up to ~2e-6 where an element's
    # gradient is near zero (seen on an AMD EPYC host); a bucket left out of the average moves its tensors by ~lr
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)
    assert json.loads((tmp_path / "two" / "run_card.json").read_text())["execution"]["processes"] == 2


SIGKILL_ARGS = [
    "finetune",
    "--steps",
    "8",
    "--batch-size",
    "2",
    "--seq-len",
    "32",
    "--max-train",
    "8",
    "--max-eval",
    "2",
    "--eval-every",
    "4",
    "--checkpoint-every",
    "2",
    "--lr",
    "1e-3",
    "--rank",
    "4",
    "--targets",
    "q_proj,v_proj",
    "--init",
    "lora_one",
    "--no-progress",
]


KILL_AFTER_CHECKPOINT_4 = """
import os, runpy, signal, sys
import lorainit.train as t
real = t.save_checkpoint
def save_then_die(path, model, opt, step, extra, writer=None):
    real(path, model, opt, step, extra)  # (written here, not in the background: the process dies once it has landed)
    if step == 4:
        os.kill(os.getpid(), signal.SIGKILL)
t.save_checkpoint = save_then_die
sys.argv = ["lorainit", *sys.argv[1:]]
runpy.run_module("lorainit", run_name="__main__")
"""


@pytest.fixture(scope="module")
def uninterrupted(tiny_folders, tmp_path_factory):
    """SIGKILL_ARGS on a tiny Llama (SmolLM2's tokenizer, wiki), run through once: (its args, its adapter)."""
    args = [*SIGKILL_ARGS, "--model", str(tiny_folders / "llama"), "--task", "wiki"]
    out = tmp_path_factory.mktemp("uninterrupted")
    whole = cli(args, out)
    assert whole.returncode == 0, whole.stderr[-2000:]
    return args, load_file(out / "adapter" / "adapter_model.safetensors")


def test_sigkill_mid_run_then_resume_equals_uninterrupted(uninterrupted, tmp_path):
    """A real process killed with SIGKILL right after its step-4 checkpoint (no clean-up runs) resumes to the same
    adapter, bitwise."""
    args, want = uninterrupted
    killed = cli(args, tmp_path / "b", head=("-c", KILL_AFTER_CHECKPOINT_4))
    assert killed.returncode == -signal.SIGKILL
    assert (tmp_path / "b" / "checkpoint" / "state.safetensors").exists() and not (tmp_path / "b" / "adapter").exists()
    again = cli(args, tmp_path / "b")
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((tmp_path / "b" / "run_card.json").read_text())["timing"]["resumed_from"] == 4
    got = load_file(tmp_path / "b" / "adapter" / "adapter_model.safetensors")
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


KILL_DURING_WRITE_4 = """
import os, runpy, signal, sys, tempfile
from pathlib import Path
import lorainit.checkpoint as t
real = t._write
def write_and_die(path, tensors, meta):  # in the background writer's thread
    if meta["step"] == 4:  # half a checkpoint: its temporary folder and a truncated file, not yet renamed
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=".checkpoint."))
        (tmp / "state.safetensors").write_bytes(b"half")
        os.kill(os.getpid(), signal.SIGKILL)
    real(path, tensors, meta)
t._write = write_and_die
sys.argv = ["lorainit", *sys.argv[1:]]
runpy.run_module("lorainit", run_name="__main__")
"""


def test_sigkill_during_a_background_checkpoint_write_resumes_from_the_one_before(uninterrupted, tmp_path):
    """Checkpoints are written by a thread while training goes on (checkpoint.Writer): a process killed in the middle of
    writing the step-4 checkpoint keeps the step-2 one whole, and resumes from it to the uninterrupted adapter."""
    args, want = uninterrupted
    killed = cli(args, tmp_path / "b", head=("-c", KILL_DURING_WRITE_4))
    assert killed.returncode == -signal.SIGKILL
    assert json.loads((tmp_path / "b" / "checkpoint" / "state.json").read_text())["step"] == 2
    assert list((tmp_path / "b").glob(".checkpoint.*"))  # the half-written one
    again = cli(args, tmp_path / "b")
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((tmp_path / "b" / "run_card.json").read_text())["timing"]["resumed_from"] == 2
    assert not list((tmp_path / "b").glob(".checkpoint.*"))
    got = load_file(tmp_path / "b" / "adapter" / "adapter_model.safetensors")
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def test_leftovers_of_a_killed_run_are_recovered_or_cleaned(tiny_folders, tmp_path, monkeypatch):
    """A save killed between its renames (only .checkpoint.old), half-written temporaries, and a run killed after its
    last card: the run resumes from the old checkpoint, and nothing half-written stays."""
    cfg = dataclasses.replace(TINY, steps=6, model=str(tiny_folders / "llama"))
    whole = finetune_run.run(cfg, points("init_a"), tmp_path / "a", progress=False)
    real = finetune_run.train.train

    def stop_after_step_4(*args, log=lambda r: None, **kw):
        def log_then_crash(rec):
            log(rec)
            if rec.get("step") == 4 and "loss" in rec:
                raise KeyboardInterrupt

        return real(*args, log=log_then_crash, **kw)

    monkeypatch.setattr(finetune_run.train, "train", stop_after_step_4)
    with pytest.raises(KeyboardInterrupt):
        finetune_run.run(cfg, points("init_a"), tmp_path / "b", progress=False)
    monkeypatch.setattr(finetune_run.train, "train", real)
    b = tmp_path / "b"
    os.replace(b / "checkpoint", b / ".checkpoint.old")  # killed between the save's two renames
    (b / ".checkpoint.x1y2").mkdir()
    (b / ".adapter.z9").mkdir()
    (b / ".run_card.json.abc.tmp").write_text("{")
    [card] = finetune_run.run(cfg, points("init_a"), b, progress=False)
    assert card["timing"]["resumed_from"] == 4 and card["metrics"]["final"] == whole[0]["metrics"]["final"]
    assert sorted(p.name for p in b.iterdir() if p.name.startswith(".")) == []
    (b / "checkpoint").mkdir()  # as if killed after the card, before the checkpoint went
    finetune_run.run(cfg, points("init_a"), b, progress=False)
    assert not (b / "checkpoint").exists()


FULL_ARGS = [
    "finetune",
    "--init",
    "full",
    "--steps",
    "6",
    "--batch-size",
    "2",
    "--seq-len",
    "32",
    "--max-train",
    "8",
    "--max-eval",
    "4",
    "--eval-every",
    "3",
    "--checkpoint-every",
    "2",
    "--lr",
    "1e-3",
    "--device",
    "cpu",
    "--no-progress",
]


@pytest.mark.parametrize("kind, task", [("llama", "wiki"), ("bert", "nli")])
def test_full_finetune_trains_resumes_bitwise_after_sigkill_and_its_folder_reloads_to_the_same_outputs(
    kind, task, tiny_folders, tmp_path
):
    """--init full on a tiny Llama and a tiny BERT: a process SIGKILLed right after its step-4 checkpoint resumes to the
    very weights of an uninterrupted run; the saved folder reloads with from_pretrained and scores what the run
    reported; the embedding tables are as loaded, every other weight moved."""
    import transformers
    from safetensors.torch import load_file

    args = [*FULL_ARGS, "--model", str(tiny_folders / kind), "--task", task]
    with ThreadPoolExecutor(1) as pool:  # the uninterrupted run beside the killed one (one thread each, two cores)
        whole = pool.submit(cli, args, tmp_path / "a")
        killed = cli(args, tmp_path / "b", head=("-c", KILL_AFTER_CHECKPOINT_4))
        whole = whole.result()
    assert whole.returncode == 0, whole.stderr[-2000:]
    assert killed.returncode == -signal.SIGKILL and (tmp_path / "b" / "checkpoint" / "state.safetensors").exists()
    assert not (tmp_path / "b" / "model").exists()
    again = cli(args, tmp_path / "b")
    assert again.returncode == 0, again.stderr[-2000:]
    card = json.loads((tmp_path / "b" / "run_card.json").read_text())
    assert card["timing"]["resumed_from"] == 4 and card["config"]["init"] == "full" and card["adapter"] is None
    assert (
        card["model_folder"]["path"] == "model"
        and card["init"]["memory"]["trained"] == card["model"]["trainable_per_run"]
    )
    a, b = (load_file(tmp_path / x / "model" / "model.safetensors") for x in "ab")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    base = {
        f"bert.{k}" if kind == "bert" else k: v for k, v in load_file(tiny_folders / kind / "model.safetensors").items()
    }
    emb = [k for k in a if k.endswith(("embeddings.weight", "embed_tokens.weight"))]  # the tables (not their LayerNorm)
    rest = [k for k in a if k not in emb and k in base]
    assert emb and all(torch.equal(a[k], base[k]) for k in emb)
    assert rest and all(not torch.equal(a[k], base[k]) for k in rest)
    cfg = finetune.FinetuneConfig(
        model=str(tmp_path / "b" / "model"), task=task, seq_len=32, batch_size=2, max_eval=4, device="cpu"
    )
    auto = transformers.AutoModelForCausalLM if kind == "llama" else transformers.AutoModelForSequenceClassification
    model = auto.from_pretrained(tmp_path / "b" / "model").eval()
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "b" / "model")
    tok.pad_token = tok.pad_token or tok.eos_token
    metric = data.load(task).metric
    got = finetune_eval.evaluate(model, 1, data.load(task), tok, "test", cfg, torch.device("cpu"))[f"test_{metric}"][0]
    assert got == pytest.approx(card["metrics"]["final"][f"test_{metric}"], rel=1e-6)


def test_full_trains_alone_refuses_a_device_too_small_leaves_the_base_untouched_and_can_train_embeddings(
    tiny_folders, tmp_path, monkeypatch
):
    from lorainit import full

    cfg = dataclasses.replace(TINY, model=str(tiny_folders / "llama"), targets=("q_proj", "v_proj"))
    with pytest.raises(ValueError, match="train each 'full' point in a batch of its own"):
        finetune_run.run(cfg, points("full", "init_a"), tmp_path / "mixed", progress=False)
    with monkeypatch.context() as m:
        m.setattr(full, "available_bytes", lambda device: 1000)
        with pytest.raises(ValueError, match="GiB free; fine-tune a LoRA adapter instead"):
            finetune_run.run(cfg, points("full"), tmp_path / "small", progress=False)
    assert not (tmp_path / "small").exists()
    lora_first = finetune_run.run(cfg, points("init_a"), tmp_path / "l1", progress=False)
    finetune_run.run(dataclasses.replace(cfg, train_embeddings=True), points("full"), tmp_path / "f", progress=False)
    lora_after = finetune_run.run(cfg, points("init_a"), tmp_path / "l2", progress=False)  # on the same loaded base
    assert lora_after[0]["metrics"]["final"] == lora_first[0]["metrics"]["final"]
    trained = load_file(tmp_path / "f" / "model" / "model.safetensors")
    base = load_file(tiny_folders / "llama" / "model.safetensors")
    assert not torch.equal(trained["model.embed_tokens.weight"], base["model.embed_tokens.weight"].float())
    assert json.loads((tmp_path / "f" / "config.json").read_text())["train_embeddings"] is True
    card = json.loads((tmp_path / "l1" / "run_card.json").read_text())
    del card["config"]["train_embeddings"]  # as cards recorded before the field existed
    (tmp_path / "l1" / "run_card.json").write_text(json.dumps(card))
    assert finetune_run.finished(tmp_path / "l1", cfg, points("init_a")[0]) == card
