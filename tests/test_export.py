"""Adapters written from factors load in plain PEFT with the outputs of the function trained."""

import pytest
import torch

from lorainit import export, multi, starts

peft = pytest.importorskip("peft")


def test_rank_2r_is_the_difference_of_the_two_products():
    g = torch.Generator().manual_seed(0)
    A, B, A0, B0 = (torch.randn(s, generator=g) for s in ((3, 7), (5, 3), (3, 7), (5, 3)))
    A2, B2 = export.rank_2r(A, B, A0, B0)
    assert A2.shape == (6, 7) and B2.shape == (5, 6)
    torch.testing.assert_close(B2 @ A2, B @ A - B0 @ A0)
    assert export.alpha_2r(8.0, False) == 16.0 and export.alpha_2r(8.0, True) == pytest.approx(8.0 * 2**0.5)


@pytest.mark.parametrize("corrected, rslora", [(False, False), (True, False), (True, True)])
def test_a_written_adapter_reproduces_the_multi_runs_function(tiny_llama, corrected, rslora, tmp_path):
    model = tiny_llama()
    targets = ["q_proj", "v_proj", "down_proj"]
    linears = multi.targets_of(model, targets)
    g = torch.Generator().manual_seed(1)
    scaling = multi.scaling_of(4, 8.0, rslora)
    scheme = "pissa" if corrected else "init_b"  # a residual start: both factors nonzero, so the correction matters
    start = {
        starts.PEFT_PREFIX + n: starts.draw(scheme, m.weight, 4, seed=0, layer=n, layer_scaling=scaling)
        for n, m in linears.items()
    }
    layers = multi.attach(
        model, [multi.Run(scheme, 1e-3)], [start], scaling=scaling, targets=targets, corrected=[corrected]
    )
    with torch.no_grad():
        for m in layers.values():  # a trained adapter: anything other than its start
            m.lora_A[0].add_(0.1 * torch.randn(m.lora_A[0].shape, generator=g))
            m.lora_B[0].add_(0.1 * torch.randn(m.lora_B[0].shape, generator=g))
    ids = torch.randint(0, 64, (2, 9), generator=g)
    want = model(input_ids=ids).logits
    factors = {
        n: (m.lora_A[0], m.lora_B[0])
        if not corrected
        else export.rank_2r(m.lora_A[0], m.lora_B[0], m.corr_A[0], -m.corr_B[0])
        for n, m in layers.items()
    }
    info = export.write_adapter(
        tmp_path / "ad",
        factors,
        rank=8 if corrected else 4,
        alpha=export.alpha_2r(8.0, rslora) if corrected else 8.0,
        use_rslora=rslora,
        info={"scheme": scheme},
    )
    assert info["scheme"] == scheme and (tmp_path / "ad" / "lorainit.json").exists()
    reloaded = peft.PeftModel.from_pretrained(tiny_llama(), tmp_path / "ad")
    torch.testing.assert_close(reloaded(input_ids=ids).logits, want, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(tiny_llama()(input_ids=ids).logits, want, atol=1e-3)  # the adapter does change the output
