"""lorainit.dual_kernels: the grouped tile walk covers every output tile once, and TALLEST is the tallest tile of the
descriptor kernel's configs (the rows per batch ``dual`` requires). The kernels' products are checked in
tests/test_dual.py; the walk runs under Triton's interpreter in a child pytest (``test_under_the_interpreter``)."""

import pytest
import torch
from helpers import INTERPRETED, run_interpreted
from helpers import interpreted as child

triton = pytest.importorskip("triton")
tl = triton.language
from lorainit.dual_kernels import _tile  # noqa: E402  (after the skip: a CPU-only install has no Triton)


@triton.jit
def _walk(out, num_m, num_n, GROUP_M: tl.constexpr):  # each program stores its tile (row block, column block)
    pid = tl.program_id(0)
    m, n = _tile(pid, num_m, num_n, GROUP_M)
    tl.store(out + 2 * pid, m)
    tl.store(out + 2 * pid + 1, n)


@pytest.mark.skipif(INTERPRETED, reason="the parent of the interpreted tests")
def test_under_the_interpreter():
    run_interpreted(__file__, passed=4)


def test_tallest_is_the_descriptor_kernels_tallest_tile():
    from lorainit import dual_kernels

    heights = {c.kwargs["BLOCK_M"] for c in dual_kernels._tma_configs()}
    assert dual_kernels.TALLEST == max(heights)
    assert all(h % 16 == 0 for h in heights)


@child
@pytest.mark.parametrize("num_m,num_n,group", [(5, 3, 2), (8, 7, 8), (1, 4, 8)])  # a partial last band, whole ones
def test_tile_walk_visits_every_tile_once_in_bands(num_m, num_n, group):
    """Program pid's tile (row block, column block): all num_m x num_n tiles, each once; consecutive programs of a
    band of GROUP_M row blocks share a column block (Q's columns read by GROUP_M tiles in turn)."""
    out = torch.full((num_m * num_n, 2), -1, dtype=torch.int32)
    _walk[(num_m * num_n,)](out, num_m, num_n, GROUP_M=group)
    tiles = [tuple(t) for t in out.tolist()]
    assert sorted(tiles) == [(m, n) for m in range(num_m) for n in range(num_n)]
    band = min(group, num_m)
    assert [n for _, n in tiles[:band]] == [0] * band and [m for m, _ in tiles[:band]] == list(range(band))
