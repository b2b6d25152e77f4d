"""Dataset-wide precompute, sharded into tiles and run locally or on a Ray cluster (``lfx precompute``).

* :mod:`.tiles` — :class:`Job`, :class:`Tile`, :func:`plan` and :func:`run_tile` (what one tile computes)
* :mod:`.executors` — :class:`LocalExecutor`, :class:`RayExecutor` (Ray tasks, one GPU each when there are GPUs)
* :mod:`.run` — :func:`precompute`: every tile on an executor, assembled through a sink
"""
from .executors import EXECUTORS, LocalExecutor, RayExecutor, make_executor
from .run import SINKS, Result, precompute
from .tiles import WHAT, Job, Tile, plan, run_tile

__all__ = ["EXECUTORS", "SINKS", "WHAT", "Job", "LocalExecutor", "RayExecutor", "Result", "Tile", "make_executor",
           "plan", "precompute", "run_tile"]
