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
