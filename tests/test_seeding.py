"""Named random streams (lorainit.seeding): the same names give the same numbers in any process; other names others."""

import subprocess
import sys

import torch

from lorainit import seeding


def test_derive_seed_is_stable_across_processes_and_63_bits():
    here = seeding.derive_seed("toy-student", 0, 1, 128)
    there = subprocess.run(
        [sys.executable, "-c", "from lorainit import seeding; print(seeding.derive_seed('toy-student', 0, 1, 128))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert str(here) == there and 0 <= here < 2**63
    assert here != seeding.derive_seed("toy-student", 0, 1, 256) != seeding.derive_seed("toy-student", 0, 2, 128)


def test_generator_draws_follow_the_names():
    a, b = seeding.generator("x", 1), seeding.generator("x", 1)
    assert torch.equal(torch.randn(5, generator=a), torch.randn(5, generator=b))
    assert not torch.equal(
        torch.randn(5, generator=seeding.generator("x", 1)), torch.randn(5, generator=seeding.generator("x", 2))
    )
