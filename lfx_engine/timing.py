"""Measured work rates, so cost estimates come from this machine's own past runs, not a guessed constant.

A long job (the disentanglement metrics, pretext correlations, score matrices) reports how much work it
did (``units``: for example VAE × input × latent unit) and how long it took; :func:`estimate` then
predicts a new job of the same kind from the median of the last rates measured on the same device.
Without a measurement it returns the caller's fallback and says the figure is a first guess.
Rates are stored as one small JSON file in the cache folder (written atomically).
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from lfx_engine.atomic import atomic_write
from lfx_engine.config import cache_dir

#: Rates kept per (kind, device): the newest ones, so a changed machine load is followed.
KEEP = 8
FILE = "rates.json"


@dataclass(frozen=True)
class Estimate:
    """Expected seconds for a job, and whether they come from a measurement on this machine."""

    seconds: float
    measured: bool
    runs: int = 0

    def text(self) -> str:
        """"about 40 s (measured here, 3 runs)" or "roughly 40 s (first estimate: not measured here yet)"."""
        shown = f"{self.seconds:.0f} s" if self.seconds < 120 else f"{self.seconds / 60:.1f} min"
        if self.measured:
            return f"about {shown} (from {self.runs} earlier run(s) on this machine)"
        return f"roughly {shown} (a first guess: not measured on this machine yet)"


def _path() -> Path:
    return cache_dir() / FILE


def _load() -> dict[str, list[float]]:
    try:
        data = json.loads(_path().read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: [float(r) for r in v if isinstance(r, (int, float)) and r > 0]
            for k, v in data.items() if isinstance(v, list)}


def record(kind: str, device: str, units: float, seconds: float) -> None:
    """Remember that ``units`` of work of ``kind`` took ``seconds`` on ``device`` (seconds per unit)."""
    if units <= 0 or seconds <= 0:
        return
    data = _load()
    key = f"{kind}@{device}"
    data[key] = (data.get(key, []) + [seconds / units])[-KEEP:]
    text = json.dumps(data, indent=1).encode()
    try:
        atomic_write(_path(), lambda fh: fh.write(text))
    except OSError:  # a read-only cache folder only costs the estimate its measurement
        pass


def estimate(kind: str, device: str, units: float, fallback_per_unit: float) -> Estimate:
    """Seconds for ``units`` of ``kind`` on ``device``: the median measured rate, or the fallback."""
    rates = _load().get(f"{kind}@{device}", [])
    if rates:
        return Estimate(statistics.median(rates) * units, True, len(rates))
    return Estimate(fallback_per_unit * units, False)
