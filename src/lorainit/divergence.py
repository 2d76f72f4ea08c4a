r"""When a training run has diverged: the one rule every loop applies (``train.train``, ``runloss.RunLosses``,
``batched.fit``, HRP's preheat in ``stats.preheat``).

A run has diverged at step t when its loss there is non-finite, or more than ``factor`` times its first loss:

    diverged_t  <=>  not isfinite(L_t)  or  L_t > factor * L_0

Real fine-tunes use ``FINETUNE_FACTOR`` (1e3: a language model's loss starts near its final value, so a thousandfold
rise is far past any recovery); the toy and matrix-factorization studies ``STUDY_FACTOR`` (1e4: their losses can
first rise by orders of magnitude at large learning rates and still come down, which is what the max-stable-LR
analysis must see).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

NON_FINITE, EXPLODED = "non-finite loss", "loss exploded"
REASONS = (None, NON_FINITE, EXPLODED)  # the codes 0, 1, 2 of ``codes``
FINETUNE_FACTOR = 1e3
STUDY_FACTOR = 1e4


def reason(loss: float, first: float, factor: float) -> str | None:
    """Why a run with this loss (and this first loss) has diverged, or None if it has not."""
    if not math.isfinite(loss):
        return NON_FINITE
    return EXPLODED if loss > factor * first else None


def codes(loss: Tensor, first: Tensor, factor: float) -> Tensor:
    """``reason`` for K runs at once on the device, as codes (K,): 0 none, 1 non-finite, 2 exploded (``REASONS``)."""
    bad = ~torch.isfinite(loss)
    return torch.where(bad, 1, torch.where(loss > factor * first, 2, 0))
