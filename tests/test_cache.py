"""The disk cache computes once, keys on every parameter and survives corrupt files."""
from __future__ import annotations

import numpy as np

from lfx_engine import cache


def test_computes_once_and_reloads(tmp_path, monkeypatch):
    monkeypatch.setenv("LFX_CACHE_DIR", str(tmp_path))
    calls = []

    def compute():
        calls.append(1)
        return {"a": np.arange(5.0)}

    first = cache.cached("unit", {"model": "x", "n": 5}, compute)
    second = cache.cached("unit", {"n": 5, "model": "x"}, compute)  # key order is irrelevant
    assert len(calls) == 1
    np.testing.assert_array_equal(first["a"], second["a"])


def test_different_parameters_get_different_entries(tmp_path, monkeypatch):
    monkeypatch.setenv("LFX_CACHE_DIR", str(tmp_path))
    one = cache.cached("unit", {"n": 1}, lambda: {"v": np.array([1])})
    two = cache.cached("unit", {"n": 2}, lambda: {"v": np.array([2])})
    assert one["v"][0] == 1 and two["v"][0] == 2


def test_corrupt_entry_is_recomputed(tmp_path, monkeypatch):
    monkeypatch.setenv("LFX_CACHE_DIR", str(tmp_path))
    path = cache.cache_path("unit", {"k": 1})
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not an npz")
    out = cache.cached("unit", {"k": 1}, lambda: {"v": np.array([7])})
    assert out["v"][0] == 7
    assert cache.load_arrays(path)["v"][0] == 7


def test_size_settings_in_megabytes_fall_back_on_nonsense(monkeypatch, caplog) -> None:
    """One reader for LFX_MEMORY_MB and LFX_CACHE_MAX_MB: MB to bytes, a floor of 1 MB, the default (with a
    warning) for text that is not a number."""
    from lfx_engine.cache import max_bytes
    from lfx_engine.explorer._core import memory_budget

    monkeypatch.setenv("LFX_MEMORY_MB", "512")
    monkeypatch.setenv("LFX_CACHE_MAX_MB", "0.001")
    assert memory_budget() == 512 * 2**20 and max_bytes() == 2**20
    monkeypatch.setenv("LFX_MEMORY_MB", "lots")
    with caplog.at_level("WARNING"):
        assert memory_budget() == 4096 * 2**20
    assert "LFX_MEMORY_MB='lots' is not a number" in caplog.text
