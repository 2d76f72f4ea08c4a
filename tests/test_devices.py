"""Devices by name and torchrun's process group (the group itself: tests/experiments/test_finetune_run.py's
two gloo processes)."""

import os

import pytest
import torch

from lorainit import devices, io


def test_a_device_by_name_and_a_clear_error_for_cuda_without_a_gpu(monkeypatch):
    assert devices.resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="no CUDA GPU is visible; use --device cpu"):
        devices.resolve_device("cuda:1")


def test_outside_torchrun_join_is_one_process_on_the_given_device(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert devices.world_size() == 1
    assert devices.join(torch.device("cpu")) == (0, 1, torch.device("cpu"))
    assert not torch.distributed.is_initialized()


def test_torchruns_one_thread_per_process_becomes_cores_per_process_and_other_settings_stay(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setattr(io, "cores", lambda: 8)
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        devices.share_threads(2)
        assert torch.get_num_threads() == 4
        torch.set_num_threads(3)
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        devices.share_threads(2)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_free_bytes_on_the_host_is_available_memory_at_most_its_total():
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert 0 < devices.free_bytes(torch.device("cpu")) <= total
