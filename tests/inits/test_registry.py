"""The registry: validation at registration, lookup errors, and the contract every scheme keeps."""
import pytest
import torch

from lorainit import inits


def test_unknown_name_suggests_the_closest():
    with pytest.raises(KeyError, match="did you mean 'init_a'"):
        inits.get("init_aa")


def test_registration_rejects_a_wrong_signature():
    with pytest.raises(TypeError, match="must take"):
        inits.register("bad1", preserves_output=True)(lambda w, r: None)

    def positional_generator(weight, rank, generator=None):
        return None

    with pytest.raises(TypeError, match="keyword-only"):
        inits.register("bad2", preserves_output=True)(positional_generator)
    assert "bad1" not in inits.INITS and "bad2" not in inits.INITS


def test_duplicate_name_is_refused():
    def scheme(weight, rank, *, generator=None):
        return None

    with pytest.raises(ValueError, match="already registered"):
        inits.register("init_a", preserves_output=True)(scheme)


@pytest.mark.parametrize("name", inits.names())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_contract(name, dtype):
    """Shapes (r, in) and (out, r), dtype and device kept, deterministic under a seed, weight untouched."""
    W = torch.randn(24, 40).to(dtype)
    before = W.clone()
    fn = inits.get(name)
    f1 = fn(W, 3, generator=torch.Generator().manual_seed(7))
    f2 = fn(W, 3, generator=torch.Generator().manual_seed(7))
    f3 = fn(W, 3, generator=torch.Generator().manual_seed(8))
    assert f1.A.shape == (3, 40) and f1.B.shape == (24, 3)
    assert f1.A.dtype == dtype and f1.B.dtype == dtype
    assert f1.A.device == W.device and f1.B.device == W.device
    assert torch.equal(f1.A, f2.A) and torch.equal(f1.B, f2.B)
    assert not (torch.equal(f1.A, f3.A) and torch.equal(f1.B, f3.B))
    assert torch.equal(W, before)
    if inits.entry(name).preserves_output:
        assert f1.residual is None
        assert torch.count_nonzero(f1.delta()) == 0


@pytest.mark.parametrize("name", inits.names())
@pytest.mark.parametrize("rank", [0, -1, 25, 2.0, True])
def test_bad_ranks_are_refused(name, rank):
    with pytest.raises(ValueError, match="rank"):
        inits.get(name)(torch.zeros(24, 40), rank)


@pytest.mark.parametrize("name", inits.names())
def test_non_matrix_weight_is_refused(name):
    with pytest.raises(ValueError, match="2-d weight"):
        inits.get(name)(torch.zeros(4, 5, 6), 2)
