"""The model is loaded once per process; starts are computed once per (init, seed) and read back from the cache."""

import copy
import dataclasses

import pytest
import torch

from lorainit import multi
from lorainit.experiments import finetune, finetune_setup

pytestmark = pytest.mark.slow  # a real model on CPU

CFG = finetune.FinetuneConfig(
    batch_size=2, seq_len=32, max_train=8, rank=4, device="cpu", targets=("q_proj",), init_batches=1
)


def test_the_model_and_its_training_blocks_are_loaded_once_per_process():
    a = finetune_setup.load(CFG, torch.device("cpu"))
    b = finetune_setup.load(dataclasses.replace(CFG, lr=1.0, steps=7), torch.device("cpu"))
    assert a is b and finetune_setup.items(a, CFG) is finetune_setup.items(b, CFG)
    assert finetune_setup.load(dataclasses.replace(CFG, dropout=True), torch.device("cpu")) is not a


def test_starts_are_shared_by_a_batch_and_cached_under_every_field_they_depend_on(tmp_path, monkeypatch):
    loaded = finetune_setup.load(CFG, torch.device("cpu"))
    linears = multi.targets_of(loaded.model, ["q_proj"])
    runs = [multi.Run("lora_one", lr, seed=0) for lr in (1e-3, 1e-2)] + [
        multi.Run("lora_ga", 1e-3, seed=0),
        multi.Run("lora_one", 1e-3, seed=1),
    ]
    computed = []
    real = finetune_setup._compute
    monkeypatch.setattr(finetune_setup, "_compute", lambda *a: computed.append((a[3], a[4])) or real(*a))
    got, corrected, cost = finetune_setup.starts_for(
        loaded, CFG, runs, linears, 1.0, torch.device("cpu"), tmp_path, None
    )
    assert computed == [
        (["lora_one", "lora_ga"], 0),
        (["lora_one"], 1),
    ]  # one data pass per seed, shared by the schemes
    assert got[0] is got[1] and corrected == [False, False, True, False] and len(list(tmp_path.iterdir())) == 3
    again, _, cost2 = finetune_setup.starts_for(loaded, CFG, runs, linears, 1.0, torch.device("cpu"), tmp_path, None)
    assert (
        len(computed) == 2
        and cost2["computed"] == []
        and sorted(map(tuple, cost2["cached"])) == [("lora_ga", 0), ("lora_one", 0), ("lora_one", 1)]
    )
    for a, b in zip(got, again):
        assert all(torch.equal(a[n].A, b[n].A) and torch.equal(a[n].B, b[n].B) for n in a)
    for field, value in (("init_batches", 2), ("rank", 2), ("seq_len", 16), ("model", "other")):
        assert finetune_setup.start_key(
            dataclasses.replace(CFG, **{field: value}), "lora_one", 0, torch.device("cpu")
        ) != finetune_setup.start_key(CFG, "lora_one", 0, torch.device("cpu")), field
    for field, value in (("lr", 1.0), ("steps", 9), ("eval_every", 1), ("loraplus_ratio", 2.0)):
        assert finetune_setup.start_key(
            dataclasses.replace(CFG, **{field: value}), "lora_one", 0, torch.device("cpu")
        ) == finetune_setup.start_key(CFG, "lora_one", 0, torch.device("cpu")), field


def test_data_passes_run_uncompiled_on_a_workers_compiled_blocks(tiny_folders):
    """A worker's later batch finds the blocks compiled (CUDA graphs on a GPU) by an earlier one: its data pass
    (gradients, activations, HRP's preheat) still runs them uncompiled, as in the first batch, so a start does not
    depend on which batch computed it and no graph keeps tensors the pass reads later."""
    from lorainit import speed

    cfg = dataclasses.replace(CFG, model=str(tiny_folders / "llama"), targets=("q_proj", "v_proj"))
    runs = [multi.Run(init, 1e-3, seed=0) for init in ("lora_ga", "eva", "hrp")]
    cpu = torch.device("cpu")

    def starts_of(loaded):  # (no cache folder: computed afresh)
        linears = multi.targets_of(loaded.model, ["q_proj", "v_proj"])
        return finetune_setup.starts_for(loaded, cfg, runs, linears, 1.0, cpu, None, None)[0]

    loaded = finetune_setup.load(cfg, cpu)
    first = starts_of(loaded)

    def refuse(gm, example_inputs):
        raise AssertionError("a block was compiled during a data pass")

    model = copy.deepcopy(loaded.model)
    speed.compile_blocks(model, backend=refuse)
    again = starts_of(dataclasses.replace(loaded, model=model))
    for want, got in zip(first, again):
        for n, f in want.items():
            torch.testing.assert_close(got[n].A, f.A, rtol=0, atol=0)
            torch.testing.assert_close(got[n].B, f.B, rtol=0, atol=0)
