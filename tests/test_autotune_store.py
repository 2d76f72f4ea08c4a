"""lorainit.autotune_store: a tuned kernel's winner is stored once and taken by the next process (a fresh Triton
Autotuner of the same kernel) as the very config object, pre_hook included, without benchmarking; anything else
(another shape, other kernel source, a damaged or foreign file) is tuned again."""

import json

import pytest

triton = pytest.importorskip("triton")
tl = triton.language
from triton.runtime.autotuner import Autotuner  # noqa: E402

from lorainit import autotune_store  # noqa: E402

hooked = pytest.mark.skipif(
    not hasattr(Autotuner, "check_disk_cache"), reason="this Triton has no disk-cache hook (keep() leaves it be)"
)


def _hook(nargs):  # (a config pre_hook, as dual_kernels' descriptor tiles: Triton's own store skips such configs)
    nargs["seen"] = True


def _tuner():
    """A fresh Autotuner of one kernel, as each process builds at import."""

    @triton.autotune(
        configs=[triton.Config({"BLOCK": b}, num_warps=w, pre_hook=_hook) for b, w in ((16, 1), (32, 2), (64, 4))],
        key=["n"],
    )
    @triton.jit
    def _copy(x, y, n, BLOCK: tl.constexpr):
        i = tl.arange(0, BLOCK)
        tl.store(y + i, tl.load(x + i, mask=i < n), mask=i < n)

    return _copy


def _bench(tuner, key, winner):
    """A stand-in for Triton's benchmark: picks ``winner`` and records timings, counting its calls."""
    calls = []

    def bench():
        calls.append(key)
        tuner.cache[key] = tuner.configs[winner]
        tuner.configs_timings = {c: [float(i + 1)] for i, c in enumerate(tuner.configs)}

    return bench, calls


def test_the_next_process_takes_the_stored_winner_without_benchmarking(tmp_path):
    first, key = _tuner(), (1024, "torch.bfloat16")
    bench, calls = _bench(first, key, winner=2)
    assert autotune_store.lookup(first, key, first.configs, bench, "src", tmp_path) is False
    assert calls == [key] and first.cache[key] is first.configs[2]
    (stored,) = tmp_path.glob("*.json")
    record = json.loads(stored.read_text())
    assert record["config"] == 2 and record["kernel"] == "_copy" and record["timings_ms"] == [[1.0], [2.0], [3.0]]

    second = _tuner()  # another process: its own config objects
    never, calls2 = _bench(second, key, winner=0)
    assert autotune_store.lookup(second, key, second.configs, never, "src", tmp_path) is True
    assert calls2 == []
    assert second.cache[key] is second.configs[2] and second.cache[key].pre_hook is _hook


@pytest.mark.parametrize("change", ["key", "source"])
def test_another_shape_or_kernel_source_is_tuned_again(tmp_path, change):
    first, key = _tuner(), (1024, "torch.bfloat16")
    autotune_store.lookup(first, key, first.configs, _bench(first, key, 2)[0], "src", tmp_path)
    second = _tuner()
    key2 = (2048, "torch.bfloat16") if change == "key" else key
    bench, calls = _bench(second, key2, winner=1)
    assert (
        autotune_store.lookup(second, key2, second.configs, bench, "src" if change == "key" else "src2", tmp_path)
        is False
    )
    assert calls == [key2] and second.cache[key2] is second.configs[1]
    assert len(list(tmp_path.glob("*.json"))) == 2


@pytest.mark.parametrize("text", ["{", '{"config": 7}', '{"config": "1"}', "[]"])
def test_a_damaged_or_foreign_record_is_tuned_again_and_replaced(tmp_path, text):
    first, key = _tuner(), (1024, "torch.bfloat16")
    autotune_store.lookup(first, key, first.configs, _bench(first, key, 2)[0], "src", tmp_path)
    (stored,) = tmp_path.glob("*.json")
    stored.write_text(text)
    second = _tuner()
    bench, calls = _bench(second, key, winner=1)
    assert autotune_store.lookup(second, key, second.configs, bench, "src", tmp_path) is False
    assert calls == [key] and json.loads(stored.read_text())["config"] == 1


def test_a_store_that_cannot_be_written_keeps_this_processs_result_and_warns(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")  # (a folder path under a file: every write fails)
    tuner, key = _tuner(), (1024, "torch.bfloat16")
    bench, calls = _bench(tuner, key, winner=1)
    with pytest.warns(UserWarning, match="tunes this shape again"):
        assert autotune_store.lookup(tuner, key, tuner.configs, bench, "src", blocker / "autotune") is False
    assert calls == [key] and tuner.cache[key] is tuner.configs[1]


@hooked
def test_keep_routes_tritons_disk_cache_hook_to_the_store(tmp_path, monkeypatch):
    monkeypatch.setenv("LORAINIT_CACHE", str(tmp_path))
    tuner, key = _tuner(), (64, "torch.float32")
    assert autotune_store.keep(tuner, "src") is True
    assert tuner.cache_results is True  # Triton's run() consults check_disk_cache only then
    bench, calls = _bench(tuner, key, winner=1)
    assert tuner.check_disk_cache(key, tuner.configs, bench) is False and calls == [key]
    assert len(list((tmp_path / autotune_store.FOLDER).glob("*.json"))) == 1
    again = _tuner()
    autotune_store.keep(again, "src")
    assert again.check_disk_cache(key, again.configs, _bench(again, key, 0)[0]) is True
    assert again.cache[key] is again.configs[1]


def test_keep_leaves_a_triton_without_the_hook_as_it_is():
    class Old:  # an Autotuner of a Triton before the disk-cache hook
        cache = {}

    old = Old()
    assert autotune_store.keep(old, "src") is False
    assert not hasattr(old, "cache_results") and not hasattr(old, "check_disk_cache")


@hooked
def test_dual_kernels_keep_their_results():
    from lorainit import dual_kernels

    assert len(dual_kernels.TUNED) == 2
    assert dual_kernels._tma_kernel in dual_kernels.TUNED and dual_kernels._pointer_kernel in dual_kernels.TUNED
    for kernel in dual_kernels.TUNED:
        assert kernel.cache_results is True
        assert kernel.check_disk_cache.__code__ is not type(kernel).check_disk_cache.__code__
