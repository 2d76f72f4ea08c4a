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


def test_a_stacked_form_must_mirror_the_scheme():
    def scheme(weight, rank, *, generator=None, scaling=1.0):
        return None

    def wrong(weights, rank, *, generators, alpha=1.0):
        return []

    def right(weights, rank, *, generators, scaling=1.0):
        return []

    with pytest.raises(TypeError, match="stacked form"):
        inits.register("bad3", preserves_output=True, stacked=wrong)(scheme)
    with pytest.raises(TypeError, match="stacked form"):
        inits.register("bad4", preserves_output=True, needs=("grad",), stacked=right)(
            lambda weight, rank, *, generator, grad: None
        )
    assert "bad3" not in inits.INITS and "bad4" not in inits.INITS
    assert inits.entry("pissa").stacked is not None


def test_duplicate_name_is_refused():
    def scheme(weight, rank, *, generator=None):
        return None

    with pytest.raises(ValueError, match="already registered"):
        inits.register("init_a", preserves_output=True)(scheme)


@pytest.mark.parametrize("name", inits.names())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_contract(name, dtype, make_data):
    """Shapes (r, in) and (out, r), dtype and device kept, deterministic under a seed, weight untouched,
    and the model's output unchanged at step 0 for schemes that claim it (B A = 0, or W_res + B A = W)."""
    e = inits.entry(name)
    W = torch.randn(24, 40, generator=torch.Generator().manual_seed(0)).to(dtype)
    before = W.clone()
    data = make_data(e.needs, W, 3)
    f1 = e.fn(W, 3, generator=torch.Generator().manual_seed(7), **data)
    f2 = e.fn(W, 3, generator=torch.Generator().manual_seed(7), **data)
    f3 = e.fn(W, 3, generator=torch.Generator().manual_seed(8), **data)
    assert f1.A.shape == (3, 40) and f1.B.shape == (24, 3)
    assert f1.A.dtype == dtype and f1.B.dtype == dtype
    assert f1.A.device == W.device and f1.B.device == W.device
    assert torch.equal(f1.A, f2.A) and torch.equal(f1.B, f2.B)
    assert (not (torch.equal(f1.A, f3.A) and torch.equal(f1.B, f3.B))) == e.stochastic
    assert torch.equal(W, before)
    assert (f1.residual is not None) == e.residual
    if f1.residual is not None:
        assert f1.residual.shape == W.shape and f1.residual.dtype == dtype
    if e.preserves_output:
        if f1.residual is None:
            assert torch.count_nonzero(f1.delta()) == 0
        else:
            tol = {torch.bfloat16: 5e-2, torch.float32: 1e-5, torch.float64: 1e-10}[dtype]
            torch.testing.assert_close((f1.residual.double() + f1.delta().double()), W.double(), atol=tol, rtol=tol)


def test_a_need_without_its_keyword_is_refused():
    def scheme(weight, rank, *, generator=None):
        return None

    with pytest.raises(TypeError, match="needs"):
        inits.register("bad3", preserves_output=True, needs=("grad",))(scheme)


@pytest.mark.parametrize("name", inits.names())
@pytest.mark.parametrize("rank", [0, -1, 25, 2.0, True])
def test_bad_ranks_are_refused(name, rank, make_data):
    W = torch.zeros(24, 40)
    with pytest.raises(ValueError, match="rank"):
        inits.get(name)(W, rank, **make_data(inits.entry(name).needs, W, 3))


@pytest.mark.parametrize("name", inits.names())
def test_non_matrix_weight_is_refused(name, make_data):
    with pytest.raises(ValueError, match="2-d weight"):
        inits.get(name)(torch.zeros(4, 5, 6), 2, **make_data(inits.entry(name).needs, torch.zeros(4, 5), 2))
