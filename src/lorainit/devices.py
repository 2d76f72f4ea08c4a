"""Where a run computes: a device by name ('auto', 'cpu', 'cuda', 'cuda:i'), and the process group torchrun
describes (``join``: one process per GPU on NCCL, each pinned to its GPU with ``device_id``; gloo on CPU), each
process given its share of the host's cores."""

from __future__ import annotations

import os

import torch

from . import io


def resolve_device(name: str) -> torch.device:
    """'auto' is the GPU where one is visible, else the CPU; asking for CUDA without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA GPU is visible; use --device cpu")
    return torch.device(name)


def free_bytes(device: torch.device) -> int:
    """Memory free for new tensors on ``device``: the GPU's free memory, or the host's available memory (Linux's
    MemAvailable; free pages where /proc/meminfo is missing)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
        return kb * 1024
    except (OSError, StopIteration, ValueError):
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def world_size() -> int:
    """The number of processes torchrun started (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def share_threads(world: int) -> None:
    """A process left at torchrun's OMP_NUM_THREADS=1 gets cores / processes on this host (its CPU work slowed the
    2-process runs: bench/results/ddp_threads_h200x2.json); any other setting is kept."""
    if os.environ.get("OMP_NUM_THREADS") == "1":
        torch.set_num_threads(max(1, io.cores() // int(os.environ.get("LOCAL_WORLD_SIZE", world))))


def join(device: torch.device) -> tuple[int, int, torch.device]:
    """Join the process group torchrun describes (NCCL on GPUs, gloo on CPU): (rank, world, this process's device).
    Outside torchrun: (0, 1, device)."""
    world = world_size()
    if world == 1:
        return 0, 1, device
    share_threads(world)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(
            "nccl" if device.type == "cuda" else "gloo", device_id=device if device.type == "cuda" else None
        )
    return torch.distributed.get_rank(), world, device
