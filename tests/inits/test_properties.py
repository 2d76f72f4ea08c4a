"""Property-based checks of every registered scheme over random shapes, ranks and dtypes (hypothesis)."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lorainit import inits

from .conftest import data_for

DTYPES = [torch.float32, torch.float64, torch.bfloat16]


@pytest.mark.parametrize("name", inits.names())
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    out_f=st.integers(1, 40),
    in_f=st.integers(1, 40),
    rank=st.integers(-2, 45),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**31 - 1),
)
def test_any_shape_rank_dtype(name, out_f, in_f, rank, dtype, seed):
    """Valid ranks give finite factors of the right shapes and dtype; invalid ranks a ValueError naming the rank."""
    e = inits.entry(name)
    W = torch.randn(out_f, in_f, generator=torch.Generator().manual_seed(seed)).to(dtype)
    valid = 1 <= rank <= min(out_f, in_f) and not (name == "lora_ga" and 2 * rank > min(out_f, in_f))
    data = data_for(e.needs, W, max(rank, 1), seed)
    if name == "eva":
        data["activations"] = torch.randn(max(2 * in_f, rank + 2), in_f).to(dtype)
    if not valid:
        with pytest.raises(ValueError, match="rank"):
            e.fn(W, rank, generator=torch.Generator().manual_seed(seed), **data)
        return
    try:
        f = e.fn(W, rank, generator=torch.Generator().manual_seed(seed), **data)
    except ValueError as err:  # the only other refusal: a zero gradient for LoRA-One, impossible with randn data
        pytest.fail(f"{name} refused valid input: {err}")
    assert f.A.shape == (rank, in_f) and f.B.shape == (out_f, rank)
    assert f.A.dtype == dtype and f.B.dtype == dtype
    assert torch.isfinite(f.A.float()).all() and torch.isfinite(f.B.float()).all()
    if f.residual is not None:
        assert f.residual.shape == W.shape and torch.isfinite(f.residual.float()).all()
