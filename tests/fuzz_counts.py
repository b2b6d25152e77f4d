"""Counts of the fuzz and table-driven hardening tests (cases tried, clear messages, crashes), for the note.

Each suite makes one :class:`FuzzCounts`, records every case with :meth:`FuzzCounts.count`, and writes
``tests/artifacts/fuzz_counts_<suite>.json`` when its module finishes.
"""
from __future__ import annotations

import json
from pathlib import Path

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


class FuzzCounts:
    """Per target: cases tried, cases ending with a clear message, crashes."""

    def __init__(self, suite: str) -> None:
        self.suite = suite
        self.rows: dict[str, dict[str, int]] = {}

    def count(self, kind: str, outcome: str) -> None:
        row = self.rows.setdefault(kind, {"cases": 0, "clear": 0, "crashes": 0})
        row["cases"] += 1
        row[outcome] += 1

    def write(self) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"fuzz_counts_{self.suite}.json"
        path.write_text(json.dumps(self.rows, indent=1) + "\n")
        return path
