"""The chunked frozen-head cross-entropy equals transformers' loss, values and gradients (CPU)."""

import helpers
import pytest
import torch
import torch.nn.functional as F

from lorainit import apply, lmloss


def test_linear_cross_entropy_equals_cross_entropy_in_value_and_gradient_over_chunks():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(2, 7, 5, generator=g, dtype=torch.float64, requires_grad=True)  # (b, T, d)
    W = torch.randn(11, 5, generator=g, dtype=torch.float64) * 3  # (V, d), frozen
    y = torch.randint(0, 11, (2, 7), generator=g)
    y[0, :3] = -100  # no target at these rows
    ref = F.cross_entropy((h @ W.T).reshape(-1, 11), y.reshape(-1), ignore_index=-100)
    (g_ref,) = torch.autograd.grad(2.5 * ref, h)
    for chunk in (1, 3, 14, 100):
        loss = lmloss.linear_cross_entropy(h, W, y, chunk=chunk)
        (g_new,) = torch.autograd.grad(2.5 * loss, h)
        assert loss.item() == pytest.approx(ref.item(), rel=1e-12)
        torch.testing.assert_close(g_new, g_ref, rtol=1e-12, atol=1e-14)
        assert g_new[0, :3].abs().max() == 0  # ignored rows get no gradient


def test_without_a_gradient_the_loss_alone_equals_cross_entropy_and_the_kernels_agree():
    g = torch.Generator().manual_seed(1)
    h = torch.randn(9, 5, generator=g, dtype=torch.float64)  # (N, d): no gradient wanted (an evaluation)
    W = torch.randn(11, 5, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, 11, (9,), generator=g)
    y[2] = -100
    ref = F.cross_entropy(h @ W.T, y, ignore_index=-100)
    with torch.no_grad():
        for chunk in (1, 4, 100):
            assert lmloss.linear_cross_entropy(h, W, y, chunk=chunk).item() == pytest.approx(ref.item(), rel=1e-12)
    logits, w = h @ W.T, torch.rand(9, dtype=torch.float64)
    loss, _ = lmloss._softmax_grad(logits, y.clamp(min=0), w)
    torch.testing.assert_close(lmloss._nll(logits, y.clamp(min=0), w), loss, rtol=1e-14, atol=0)
    bf = lmloss._nll(logits.bfloat16(), y.clamp(min=0), w.float())  # a bf16 chunk's loss is computed in fp32
    assert bf.dtype == torch.float32


def test_linear_cross_entropy_refuses_a_trainable_head_and_mismatched_labels():
    W = torch.randn(4, 3, requires_grad=True)
    with pytest.raises(ValueError, match="freeze it"):
        lmloss.linear_cross_entropy(torch.randn(2, 3), W, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="3 hidden rows but 2 labels"):
        lmloss.linear_cross_entropy(torch.randn(3, 3), W.detach(), torch.tensor([0, 1]))


def tiny_llama(tie: bool):
    return helpers.tiny_llama(tie_word_embeddings=tie).double()


@pytest.mark.parametrize("tie", [True, False])
def test_causal_lm_loss_equals_the_models_own_loss_and_lora_gradients(tie):
    model = apply.apply(tiny_llama(tie), "gaussian", rank=4, targets=["q_proj", "down_proj"], seed=1).model
    ids = torch.randint(0, 64, (3, 10), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    batch = {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}
    assert lmloss._plain_head(model) is not None  # the fused path is the one under test
    lora = [p for n, p in model.named_parameters() if p.requires_grad]
    logits = model(**batch).logits  # (b, T, V) float64; transformers' own loss would round through fp32
    ref = F.cross_entropy(logits[:, :-1].reshape(-1, 64), batch["labels"][:, 1:].reshape(-1), ignore_index=-100)
    assert ref.item() == pytest.approx(model(**batch).loss.item(), rel=1e-6)  # the same loss as transformers'
    g_ref = torch.autograd.grad(ref, lora)
    new = lmloss.causal_lm_loss(model, batch)
    g_new = torch.autograd.grad(new, lora)
    assert new.item() == pytest.approx(ref.item(), rel=1e-12)
    for a, b in zip(g_new, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)


def test_causal_lm_loss_falls_back_to_the_models_loss_when_the_head_trains():
    model = tiny_llama(False)
    batch = {"input_ids": torch.tensor([[1, 2, 3, 4]]), "labels": torch.tensor([[1, 2, 3, 4]])}
    assert lmloss._plain_head(model) is None  # every parameter trains here, the head too
    assert lmloss.causal_lm_loss(model, batch).item() == pytest.approx(model(**batch).loss.item(), rel=1e-14)
