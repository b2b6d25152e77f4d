"""Where tiles run: in this process (:class:`LocalExecutor`) or on a Ray cluster (:class:`RayExecutor`).

Both take a list of tiles and yield ``(tile, arrays, seconds)`` in the tiles' order. The Ray executor runs each
tile as a Ray task (one GPU per task when the cluster has GPUs), started with the driver's ``LFX_*`` settings so
every worker reads the same checkpoints, data and cache; nothing but the small job description is shipped to a
worker, which reads its own slices of the data.
"""
from __future__ import annotations

import os
import time
from typing import Any, Iterator, Protocol, Sequence

import numpy as np

from lfx_engine.errors import LFXError

from .tiles import Job, Tile, run_tile

EXECUTORS = ("local", "ray")


class Executor(Protocol):
    def map(self, job: Job, tiles: Sequence[Tile]) -> Iterator[tuple[Tile, dict[str, np.ndarray], float]]: ...


def timed_tile(job: Job, tile: Tile) -> tuple[dict[str, np.ndarray], float]:
    """A tile's arrays and the seconds it took where it ran."""
    start = time.perf_counter()
    arrays = run_tile(job, tile)
    return arrays, time.perf_counter() - start


class LocalExecutor:
    """Every tile in this process, one after the other."""

    def map(self, job: Job, tiles: Sequence[Tile]) -> Iterator[tuple[Tile, dict[str, np.ndarray], float]]:
        for tile in tiles:
            arrays, seconds = timed_tile(job, tile)
            yield tile, arrays, seconds


def _lfx_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith("LFX_") or k in ("OMP_NUM_THREADS", "PYTHONPATH")}


class RayExecutor:
    """Tiles as Ray tasks on a cluster: ``address=None`` starts a local one (``num_cpus`` workers).

    At most ``max_in_flight`` tiles are submitted ahead of the one being collected, so the driver holds a
    bounded number of results however many tiles the job has.
    """

    def __init__(self, address: str | None = None, num_cpus: int | None = None, max_in_flight: int = 16) -> None:
        try:
            import ray
        except ImportError:
            raise LFXError("the Ray executor needs Ray: pip install 'ray>=2.10' (or use --executor local)") from None
        self.ray = ray
        self.max_in_flight = max(1, max_in_flight)
        self._owns = False
        if not ray.is_initialized():
            runtime_env = {"env_vars": _lfx_environment()}
            kwargs: dict[str, Any] = {"runtime_env": runtime_env, "include_dashboard": False,
                                      "log_to_driver": False, "configure_logging": False}
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(num_cpus=num_cpus or os.cpu_count() or 1, **kwargs)
            self._owns = True
        gpus = float(ray.cluster_resources().get("GPU", 0))
        self.gpus_per_task = 1 if gpus >= 1 else 0
        self._remote = ray.remote(num_gpus=self.gpus_per_task)(timed_tile)

    def map(self, job: Job, tiles: Sequence[Tile]) -> Iterator[tuple[Tile, dict[str, np.ndarray], float]]:
        pending: list[tuple[Tile, Any]] = []
        queue = list(tiles)
        while queue or pending:
            while queue and len(pending) < self.max_in_flight:
                tile = queue.pop(0)
                pending.append((tile, self._remote.remote(job, tile)))
            tile, ref = pending.pop(0)
            arrays, seconds = self.ray.get(ref)
            yield tile, arrays, seconds

    def shutdown(self) -> None:
        """Stop the local cluster this executor started (a cluster it joined keeps running)."""
        if self._owns:
            self.ray.shutdown()
            self._owns = False


def make_executor(kind: str, address: str | None = None, num_cpus: int | None = None) -> LocalExecutor | RayExecutor:
    if kind == "local":
        return LocalExecutor()
    if kind == "ray":
        return RayExecutor(address=address, num_cpus=num_cpus)
    raise LFXError(f"--executor must be one of {', '.join(EXECUTORS)}, got {kind!r}")
