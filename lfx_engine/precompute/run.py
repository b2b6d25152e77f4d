"""Run a :class:`~.tiles.Job` on an executor and put the tiles back together (sinks for example scores)."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
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
    if job.what == "examples":  # top-k tiles send back k columns per row, not their whole block
        job = replace(job, top_k=k if sink == "topk" else None)
    tiles = plan(job)
    n_test, n_train, n_checkpoints = sizes(job)
    result = Result(job)
    start = time.perf_counter()
    parts: dict[str, list[np.ndarray]] = {}
    reducer = _ExampleReducer(n_test, n_train, n_checkpoints=1 if job.top_k else n_checkpoints, sink=sink, k=k,
                              out=out) if job.what == "examples" else None
    for done, (tile, arrays, seconds) in enumerate(executor.map(job, tiles), start=1):
        result.tile_seconds.append(seconds)
        if reducer is not None:
            reducer.add(tile, {key: np.array(value) for key, value in arrays.items()})  # writable (Ray's are not)
        else:
            for key, value in arrays.items():
                parts.setdefault(key, []).append(value)
        if progress:
            progress(done, len(tiles))
    if reducer is not None:
        result.arrays, result.shards = reducer.finish()
    else:
        result.arrays = {key: np.concatenate(values) for key, values in parts.items()}
    result.wall_seconds = time.perf_counter() - start
    if out is not None:
        _write(result, Path(out))
    return result


class _ExampleReducer:
    """Adds the checkpoint tiles of each (test block, train block) and passes finished blocks to the sink.

    Memory stays at one ``test block × train block`` sum per block in progress, plus what the sink keeps: the
    whole matrix (dense), each test block's full rows until its last train block (shards), or a running top and
    bottom ``k`` per test row, merged block by block (topk), which is what lets the training side grow without
    bound. Top-k tiles arrive already reduced (every checkpoint summed, ``k`` columns per row) and are merged.
    """

    def __init__(self, n_test: int, n_train: int, n_checkpoints: int, sink: str, k: int, out: Path | None) -> None:
        self.n_train, self.n_checkpoints, self.sink, self.k = n_train, n_checkpoints, sink, k
        self.sums: dict[tuple[int, int], tuple[torch.Tensor, int]] = {}
        self.rows: dict[int, torch.Tensor] = {}
        self.done_columns: dict[int, int] = {}
        self.dense = DenseSink(n_test, n_train) if sink == "dense" else None
        self.top = TopKSink(n_test, k, bottom=True) if sink == "topk" else None
        # (top values, their columns, bottom values, their columns) per test block
        self.running: dict[int, tuple[torch.Tensor, ...]] = {}
        self.shards = ShardSink(Path(out) / "shards") if sink == "shards" and out is not None else None

    def add(self, tile: Any, arrays: dict[str, np.ndarray]) -> None:
        if "top_scores" in arrays:  # a top-k tile: its block's best and worst k, every checkpoint summed
            found = tuple(torch.from_numpy(arrays[key]) for key in
                          ("top_scores", "top_indices", "bottom_scores", "bottom_indices"))
            self._fold(tile.test_start, found)
            self._columns_done(tile)
            return
        scores = arrays["scores"]
        key = (tile.test_start, tile.train_start)
        total, count = self.sums.get(key, (torch.zeros(scores.shape), 0))
        total += torch.from_numpy(scores)
        if count + 1 < self.n_checkpoints:
            self.sums[key] = (total, count + 1)
            return
        self.sums.pop(key, None)
        self._block_done(tile, total)

    def _block_done(self, tile: Any, block: torch.Tensor) -> None:
        t0, r0 = tile.test_start, tile.train_start
        if self.dense is not None:
            self.dense.scores[t0:tile.test_stop, r0:tile.train_stop] = block.numpy()
            return
        if self.shards is not None:
            rows = self.rows.setdefault(t0, torch.zeros(tile.test_stop - t0, self.n_train))
            rows[:, r0:tile.train_stop] = block
        else:
            k = min(self.k, block.shape[1])
            hi, lo = block.topk(k, dim=1), block.topk(k, dim=1, largest=False)
            self._fold(t0, (hi.values, hi.indices + r0, lo.values, lo.indices + r0))
        self._columns_done(tile)

    def _columns_done(self, tile: Any) -> None:
        t0 = tile.test_start
        self.done_columns[t0] = self.done_columns.get(t0, 0) + (tile.train_stop - tile.train_start)
        if self.done_columns[t0] == self.n_train:  # the test block's last train block
            if self.shards is not None:
                self.shards.write(t0, self.rows.pop(t0))
            else:
                assert self.top is not None
                self.top.add(t0, *self.running.pop(t0))

    def _fold(self, t0: int, found: tuple[torch.Tensor, ...]) -> None:
        """Fold one block's (top values, their columns, bottom values, their columns) into test block ``t0``'s."""
        if t0 in self.running:
            old = self.running[t0]
            values = torch.cat([old[0], found[0]], dim=1)
            index = torch.cat([old[1], found[1]], dim=1)
            best = values.topk(min(self.k, values.shape[1]), dim=1)
            low_values = torch.cat([old[2], found[2]], dim=1)
            low_index = torch.cat([old[3], found[3]], dim=1)
            worst = low_values.topk(min(self.k, low_values.shape[1]), dim=1, largest=False)
            found = (best.values, index.gather(1, best.indices), worst.values, low_index.gather(1, worst.indices))
        self.running[t0] = found

    def finish(self) -> tuple[dict[str, np.ndarray], list[Path]]:
        if self.dense is not None:
            return {"scores": self.dense.result()}, []
        if self.shards is not None:
            return {}, self.shards.result()
        assert self.top is not None
        return dict(self.top.result()), []


def _write(result: Result, out: Path) -> None:
    from lfx_engine.atomic import atomic_write

    out.mkdir(parents=True, exist_ok=True)
    if result.arrays:
        arrays = result.arrays
        # numpy's stubs match **kwds against savez's allow_pickle: bool too; every value here is an array
        atomic_write(out / f"{result.job.what}.npz",
                     lambda handle: np.savez(handle, **arrays))  # type: ignore[arg-type]
    text = json.dumps(result.summary(), indent=2, default=str).encode()
    atomic_write(out / "summary.json", lambda handle: handle.write(text))
