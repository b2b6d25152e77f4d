"""Run a :class:`~.tiles.Job` on an executor and put the tiles back together (sinks for example scores)."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from lfx_engine.errors import ParameterError
from lfx_engine.example_importance.index import DenseSink, ShardSink, TopKSink

from .executors import Executor
from .tiles import Job, plan, sizes

SINKS = ("dense", "topk", "shards")


@dataclass
class Result:
    """What a precompute produced: ``arrays`` (or shard files for the ``shards`` sink) and per-tile timings."""

    job: Job
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    shards: list[Path] = field(default_factory=list)
    tile_seconds: list[float] = field(default_factory=list)
    wall_seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        seconds = np.array(self.tile_seconds) if self.tile_seconds else np.zeros(1)
        return {"job": self.job.describe(), "tiles": len(self.tile_seconds), "wall_seconds": round(self.wall_seconds, 3),
                "tile_seconds_mean": round(float(seconds.mean()), 4),
                "tile_seconds_total": round(float(seconds.sum()), 3),
                "arrays": {k: list(v.shape) for k, v in self.arrays.items()}, "shards": [str(p) for p in self.shards]}


def precompute(job: Job, executor: Executor, sink: str = "dense", k: int = 10, out: Path | None = None,
               progress: Callable[[int, int], None] | None = None) -> Result:
    """Run every tile of ``job`` on ``executor`` and assemble the result (written under ``out`` when given)."""
    if sink not in SINKS:
        raise ParameterError(f"--sink must be one of {', '.join(SINKS)}, got {sink!r}")
    if sink == "shards" and out is None:
        raise ParameterError("the shards sink writes files: give an output folder")
    tiles = plan(job)
    n_test, n_train, _ = sizes(job)
    result = Result(job)
    start = time.perf_counter()
    parts: dict[str, list[np.ndarray]] = {}
    sink_obj: Any = None
    if job.what == "examples":
        sink_obj = {"dense": lambda: DenseSink(n_test, n_train), "topk": lambda: TopKSink(n_test, k, bottom=True),
                    "shards": lambda: ShardSink(Path(out) / "shards")}[sink]()  # type: ignore[arg-type]
    block: torch.Tensor | None = None
    block_start = -1
    for done, (tile, arrays, seconds) in enumerate(executor.map(job, tiles), start=1):
        result.tile_seconds.append(seconds)
        if job.what != "examples":
            for key, value in arrays.items():
                parts.setdefault(key, []).append(value)
        else:
            if tile.test_start != block_start:  # tiles come test block by test block
                if block is not None:
                    sink_obj.write(block_start, block)
                block = torch.zeros(tile.test_stop - tile.test_start, n_train)
                block_start = tile.test_start
            block[:, tile.train_start:tile.train_stop] += torch.from_numpy(np.array(arrays["scores"]))  # a writable copy
        if progress:
            progress(done, len(tiles))
    if block is not None:
        sink_obj.write(block_start, block)
    if job.what == "examples":
        found = sink_obj.result()
        if sink == "shards":
            result.shards = list(found)
        else:
            result.arrays = {"scores": found} if sink == "dense" else dict(found)
    else:
        result.arrays = {key: np.concatenate(values) for key, values in parts.items()}
    result.wall_seconds = time.perf_counter() - start
    if out is not None:
        _write(result, Path(out))
    return result


def _write(result: Result, out: Path) -> None:
    from lfx_engine.atomic import atomic_write

    out.mkdir(parents=True, exist_ok=True)
    if result.arrays:
        arrays = result.arrays
        atomic_write(out / f"{result.job.what}.npz", lambda handle: np.savez(handle, **arrays))
    text = json.dumps(result.summary(), indent=2, default=str).encode()
    atomic_write(out / "summary.json", lambda handle: handle.write(text))
