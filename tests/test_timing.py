"""Measured cost estimates (lfx_engine.timing): a first guess until a run is measured, then the median rate."""
from __future__ import annotations

import pytest

from lfx_engine import timing


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LFX_CACHE_DIR", str(tmp_path))
    return tmp_path


def test_first_guess_then_measured_median() -> None:
    first = timing.estimate("disvae", "cpu", 1000, 0.01)
    assert first == timing.Estimate(10.0, False) and "first guess" in first.text()
    for seconds in (2.0, 4.0, 30.0):  # 1000 units each: rates 0.002, 0.004, 0.03
        timing.record("disvae", "cpu", 1000, seconds)
    again = timing.estimate("disvae", "cpu", 500, 0.01)
    assert again.measured and again.runs == 3 and again.seconds == pytest.approx(0.004 * 500)
    assert "2 s" in again.text() and "3 earlier run" in again.text()
    # other kinds and devices keep their own rates
    assert not timing.estimate("disvae", "cuda", 1, 0.5).measured
    assert not timing.estimate("pretext", "cpu", 1, 0.5).measured


def test_only_the_newest_rates_count() -> None:
    for i in range(timing.KEEP + 5):
        timing.record("pretext", "cpu", 1, 100.0 if i < 5 else 1.0)
    assert timing.estimate("pretext", "cpu", 10, 0.0).seconds == pytest.approx(10.0)


def test_a_corrupt_or_foreign_rates_file_is_a_first_guess(cache) -> None:
    (cache / timing.FILE).write_text("{not json")
    assert timing.estimate("disvae", "cpu", 10, 0.1) == timing.Estimate(1.0, False)
    (cache / timing.FILE).write_text('{"disvae@cpu": ["x", -1, 0.5]}')
    assert timing.estimate("disvae", "cpu", 10, 0.1).seconds == pytest.approx(5.0)
    timing.record("disvae", "cpu", 0, 3.0)  # no work: nothing recorded, nothing raised
    timing.record("disvae", "cpu", 10, 10.0)
    assert timing.estimate("disvae", "cpu", 10, 0.1).runs == 2


def test_minutes_for_long_jobs() -> None:
    assert timing.Estimate(600.0, True, 1).text().startswith("about 10.0 min")
