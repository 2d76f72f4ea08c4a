"""K runs batched on one base == K separate PEFT runs (CPU, fp32), and a diverging run leaves the others alone."""
import copy
import math

import pytest
import torch
import transformers

from lorainit import apply, multi, train

TARGETS = ["q_proj", "v_proj", "down_proj"]


def tiny_llama():
    cfg = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32)
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(cfg).eval()


def data_of(seed):
    def batch_at(step, micro):
        g = torch.Generator().manual_seed(seed * 1000 + step)
        ids = torch.randint(0, 64, (2, 12), generator=g)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    return batch_at


def lm_loss(model, batch):
    return model(**batch).loss


RUNS = [multi.Run("init_a", 3e-3, seed=0), multi.Run("init_b", 1e-3, seed=1),
        multi.Run("gaussian", 1e-2, seed=2, loraplus_ratio=4.0), multi.Run("init_a", 3e-2, seed=3)]


def separate(run, tmp_path, steps):
    a = apply.apply(tiny_llama(), run.init, rank=4, alpha=8, targets=TARGETS, seed=run.seed)
    a.model.train()
    losses = []
    cfg = train.LoopConfig(steps=steps, lr=run.lr, loraplus_ratio=run.loraplus_ratio, warmup_ratio=0.2, eval_every=10**9,
                           checkpoint_every=10**9, seed=run.seed)
    train.train(a.model, data_of(run.seed), lm_loss, cfg, tmp_path / f"sep{run.seed}", progress=False,
                log=lambda r: losses.append(r["loss"]) if "loss" in r else None)
    return losses, a


def batched(runs, tmp_path, steps, checkpoint_every=10**9, loss=None):
    model = tiny_llama()
    layers = multi.attach(model, runs, rank=4, alpha=8, targets=TARGETS)
    model.train()
    loss = multi.RunLosses(len(runs)) if loss is None else loss
    cfg = train.LoopConfig(steps=steps, lr=1.0, warmup_ratio=0.2, eval_every=10**9, checkpoint_every=checkpoint_every)
    datas = [data_of(r.seed) for r in runs]
    (tmp_path / "multi").mkdir(parents=True, exist_ok=True)
    train.train(model, lambda s, m: multi.stack_batches([d(s, m) for d in datas]), loss, cfg, tmp_path / "multi",
                progress=False, groups=multi.param_groups(layers, runs))
    return loss, layers


def test_batched_runs_equal_separate_peft_runs(tmp_path):
    steps = 6
    loss, layers = batched(RUNS, tmp_path, steps)
    for k, run in enumerate(RUNS):
        ref, a = separate(run, tmp_path, steps)
        got = [h[k] for h in loss.history]
        assert got == pytest.approx(ref, rel=2e-5), (run, got, ref)
        peft_q = dict(a.model.named_modules())["base_model.model.model.layers.1.self_attn.q_proj"]
        torch.testing.assert_close(layers["model.layers.1.self_attn.q_proj"].lora_B[k].detach(),
                                   peft_q.lora_B["default"].weight.detach(), rtol=1e-4, atol=1e-6)


def test_a_diverging_run_is_dropped_and_the_others_are_unchanged(tmp_path):
    runs = [RUNS[0], multi.Run("init_b", math.inf, seed=1), RUNS[2]]
    loss, _ = batched(runs, tmp_path, 6)
    assert loss.diverged_step[1] is not None and loss.reason[1] in ("loss exploded", "non-finite loss")
    assert loss.diverged_step[0] is None and loss.diverged_step[2] is None
    ref, _ = batched([RUNS[0], RUNS[2]], tmp_path / "ref", 6)
    assert [h[0] for h in loss.history] == pytest.approx([h[0] for h in ref.history], rel=1e-5)
    assert [h[2] for h in loss.history] == pytest.approx([h[1] for h in ref.history], rel=1e-5)
    assert all(math.isfinite(h[0]) for h in loss.history)


def test_resume_keeps_each_runs_divergence_record(tmp_path):
    """The divergence record is checkpointed with the loop: interrupted and resumed equals uninterrupted."""
    runs = [RUNS[0], multi.Run("init_b", math.inf, seed=1)]
    whole, _ = batched(runs, tmp_path / "whole", 8, checkpoint_every=2)
    assert whole.diverged_step[1] is not None and whole.diverged_step[1] < 6  # dead before the step-6 checkpoint

    class Interrupted(multi.RunLosses):
        def __call__(self, model, batch):
            if len(self.history) == 7:
                raise KeyboardInterrupt
            return super().__call__(model, batch)

    with pytest.raises(KeyboardInterrupt):
        batched(runs, tmp_path / "cut", 8, checkpoint_every=2, loss=Interrupted(2))
    resumed, _ = batched(runs, tmp_path / "cut", 8, checkpoint_every=2)
    assert (resumed.diverged_step, resumed.reason) == (whole.diverged_step, whole.reason)
    assert resumed.history == whole.history
    with pytest.raises(ValueError, match="holds 2 runs' losses, this loop 3"):
        multi.RunLosses(3).load_checkpoint_state(whole.checkpoint_state())


def test_refusals():
    with pytest.raises(ValueError, match="changes the base weight"):
        multi.attach(tiny_llama(), [multi.Run("pissa", 1e-3)], rank=4, alpha=8, targets=TARGETS)
    with pytest.raises(ValueError, match="needs grad"):
        multi.attach(tiny_llama(), [multi.Run("lora_one", 1e-3)], rank=4, alpha=8, targets=TARGETS)
    with pytest.raises(ValueError, match="no linear layer named nope"):
        multi.attach(tiny_llama(), [multi.Run("init_a", 1e-3)], rank=4, alpha=8, targets=["nope"])
    with pytest.raises(ValueError, match="rank 40 exceeds"):
        multi.attach(tiny_llama(), [multi.Run("init_a", 1e-3)], rank=40, alpha=8, targets=TARGETS)
