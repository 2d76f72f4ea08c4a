import pytest
import torch

from lorainit.inits import Factors


def data_for(needs, weight: torch.Tensor, rank: int, seed: int = 0) -> dict:
    """Synthetic inputs for a data-dependent scheme: whatever its registry entry says it needs."""
    g = torch.Generator().manual_seed(seed)
    out_f, in_f = weight.shape
    made = {
        "target": lambda: torch.randn(out_f, in_f, generator=g).to(weight.dtype),
        "preheated": lambda: Factors(
            A=torch.randn(rank + 2, in_f, generator=g), B=torch.randn(out_f, rank + 2, generator=g)
        ),
        "grad": lambda: torch.randn(out_f, in_f, generator=g).to(weight.dtype),
        "activations": lambda: torch.randn(64, in_f, generator=g).to(weight.dtype),
    }
    return {n: made[n]() for n in needs}


@pytest.fixture
def make_data():
    return data_for
