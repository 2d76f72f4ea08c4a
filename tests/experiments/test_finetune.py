"""Real fine-tunes on tiny slices: each package-shipped model and task, exact resume, refusals.

Uses the real assets (downloaded from the package index on first use and cached)."""
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lorainit import data
from lorainit.experiments import finetune, finetune_run

TINY = finetune.FinetuneConfig(steps=4, batch_size=2, seq_len=32, eval_every=2, checkpoint_every=2, max_train=8,
                               max_eval=4, lr=1e-3, rank=4)


@pytest.mark.parametrize("model, task, metric", [
    ("smollm2-135m", "wiki", "test_perplexity"),
    ("smollm2-135m", "mathqa", "test_accuracy"),
    ("minilm-l6", "nli", "test_accuracy"),
    ("minilm-l6", "sentiment", "test_accuracy"),
])
def test_each_model_and_task_runs(model, task, metric, tmp_path):
    card = finetune_run.run(dataclasses.replace(TINY, model=model, task=task), tmp_path / "run", progress=False)
    assert metric in card["metrics"]["base_test"] and metric in card["metrics"]["final"]
    assert [r["step"] for r in card["metrics"]["val_history"]] == [0, 2, 4]
    assert card["task"]["split_hash"] == data.load(task).split_hash
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").exists()
    assert (tmp_path / "run" / "features.png").exists() and not (tmp_path / "run" / "checkpoint").exists()
    losses = [json.loads(l) for l in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in losses if "loss" in r] == [0, 1, 2, 3]
    feats = [r["features"] for r in losses if "features" in r]
    assert len(feats) == 3 and all(len(v) == 2 for v in feats[-1].values())


def test_resume_equals_uninterrupted(tmp_path, monkeypatch):
    cfg = dataclasses.replace(TINY, steps=6)
    finetune_run.run(cfg, tmp_path / "a", progress=False)

    real = finetune_run.train.train

    def crashing(*args, log, **kw):  # dies after step 4's update is logged: checkpoint at step 4 exists
        def log_then_crash(rec):
            log(rec)
            if rec.get("step") == 4 and "loss" in rec:
                raise KeyboardInterrupt("simulated crash")
        return real(*args, log=log_then_crash, **kw)

    monkeypatch.setattr(finetune_run.train, "train", crashing)
    with pytest.raises(KeyboardInterrupt):
        finetune_run.run(cfg, tmp_path / "b", progress=False)
    assert (tmp_path / "b" / "checkpoint").exists() and not (tmp_path / "b" / "run_card.json").exists()
    monkeypatch.setattr(finetune_run.train, "train", real)
    card = finetune_run.run(cfg, tmp_path / "b", progress=False)
    assert card["timing"]["resumed_from"] == 4
    a = load_file(tmp_path / "a" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "b" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    la = [json.loads(l) for l in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    lb = [json.loads(l) for l in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r.get("loss") for r in la] == [r.get("loss") for r in lb]


def test_finished_run_is_not_trained_again(tmp_path, monkeypatch):
    first = finetune_run.run(TINY, tmp_path / "r", progress=False)
    monkeypatch.setattr(finetune_run.train, "train", lambda *a, **k: pytest.fail("trained again"))
    assert finetune_run.run(TINY, tmp_path / "r", progress=False) == first


def test_wrong_model_kind_for_the_task(tmp_path):
    with pytest.raises(ValueError, match="needs an encoder"):
        finetune_run.run(dataclasses.replace(TINY, task="nli"), tmp_path / "r", progress=False)


@pytest.mark.parametrize("content, message", [
    ("", "holds no records"),
    ('{"text": "a"}\nnot json\n', ":2: not valid JSON"),
    ('{"txt": "a"}\n', ":1: missing field 'text'"),
    ('{"text": "a", "label": 1}\n{"text": "b"}\n', "record 2 has no 'label'"),
    ('{"text": "a"}\n{"text": "' + "x" * (1 << 20) + '"}\n', ":2: line longer than 1048576 bytes"),
    ("\n\n", "holds no records"),
])
def test_bad_data_files(tmp_path, content, message):
    f = tmp_path / "d.jsonl"
    f.write_text(content)
    with pytest.raises(ValueError, match=message):
        data.load(str(f))


def test_jsonl_task_trains(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text("".join(json.dumps({"text": f"review {i} is {'good' if i % 2 else 'bad'}", "label": i % 2}) + "\n" for i in range(40)))
    card = finetune_run.run(dataclasses.replace(TINY, model="minilm-l6", task=str(f)), tmp_path / "r", progress=False)
    assert card["task"]["sizes"] == {"test": 4, "val": 4, "train": 32}


def test_two_process_ddp_matches_one_process_on_the_same_global_batch(tmp_path):
    """torchrun, 2 CPU processes, gloo: each trains half of every global batch; the averaged loss and the
    final adapter equal a one-process run's (SmolLM2 has no dropout, LM blocks have equal token counts)."""
    import os
    import subprocess
    import sys

    args = ["finetune", "--model", "smollm2-135m", "--task", "wiki", "--steps", "3", "--batch-size", "4", "--seq-len", "32",
            "--max-train", "16", "--max-eval", "4", "--eval-every", "3", "--checkpoint-every", "3", "--lr", "1e-3",
            "--rank", "4", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"), "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "lorainit", *args, "--out", str(tmp_path / "one")], env=env,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "lorainit", *args, "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    la = [json.loads(l)["loss"] for l in (tmp_path / "one" / "log.jsonl").read_text().splitlines() if '"loss"' in l]
    lb = [json.loads(l)["loss"] for l in (tmp_path / "two" / "log.jsonl").read_text().splitlines() if '"loss"' in l]
    assert len(la) == len(lb) == 3
    assert lb == pytest.approx(la, rel=1e-5)
    a = load_file(tmp_path / "one" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "two" / "adapter" / "adapter_model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-4)
    assert json.loads((tmp_path / "two" / "run_card.json").read_text())["timing"]["processes"] == 2


def test_sigkill_mid_run_then_resume_equals_uninterrupted(tmp_path):
    """A real process killed with SIGKILL after a checkpoint (no clean-up runs) resumes to the same adapter."""
    import os
    import signal
    import subprocess
    import sys
    import time

    args = ["finetune", "--steps", "8", "--batch-size", "2", "--seq-len", "32", "--max-train", "8", "--max-eval", "2",
            "--eval-every", "4", "--checkpoint-every", "2", "--lr", "1e-3", "--rank", "4", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    cmd = [sys.executable, "-m", "lorainit", *args]
    assert subprocess.run([*cmd, "--out", str(tmp_path / "a")], env=env, capture_output=True, timeout=600).returncode == 0
    proc = subprocess.Popen([*cmd, "--out", str(tmp_path / "b")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = tmp_path / "b" / "log.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and '"step": 5, "loss"' in log.read_text():
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (tmp_path / "b" / "checkpoint" / "state.safetensors").exists()
    again = subprocess.run([*cmd, "--out", str(tmp_path / "b")], env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    card = json.loads((tmp_path / "b" / "run_card.json").read_text())
    assert card["timing"]["resumed_from"] in (4, 6)
    a = load_file(tmp_path / "a" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "b" / "adapter" / "adapter_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
