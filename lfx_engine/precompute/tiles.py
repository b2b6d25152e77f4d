"""Dataset-wide work cut into tiles, and what one tile computes.

A :class:`Job` names the model, what to compute and its settings; :func:`plan` cuts it into :class:`Tile` s:

* ``attributions``: one tile per block of test inputs (every method's maps of those inputs);
* ``masking``: one tile per block of test inputs (their masking-shift curves, seeded per block);
* ``examples``: one tile per (test block, train block, checkpoint): the block of scores of one method at one
  checkpoint, projected as the full-split index projects (:mod:`lfx_engine.example_importance.index`). With
  ``top_k`` (the top-k sink) a tile covers every checkpoint instead and returns only its block's top and bottom
  ``top_k`` per test row, so what travels back from a worker does not grow with the training block.

:func:`run_tile` is a pure function of (job, tile): each worker process loads the model and reads its own slices
of the splits (through the catalogue, never a tensor shipped by the driver), so any executor that runs the same
tiles returns the same arrays.
"""
from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from lfx_engine.errors import ParameterError

WHAT = ("attributions", "examples", "masking")


@dataclass(frozen=True)
class Job:
    """One dataset-wide precompute: ``what`` for model ``model`` with ``methods`` and their settings."""

    model: str
    what: str
    methods: tuple[str, ...]
    n_test: int | None = None
    n_train: int | None = None
    test_block: int = 256
    train_block: int = 8192
    params: dict[str, Any] = field(default_factory=dict)
    #: example tiles return their top and bottom ``top_k`` per test row (checkpoints summed inside the tile)
    top_k: int | None = None

    def __post_init__(self) -> None:
        if self.what not in WHAT:
            raise ParameterError(f"--what must be one of {', '.join(WHAT)}, got {self.what!r}")
        for name in ("test_block", "train_block"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ParameterError(f"{name} must be a positive integer, got {value!r}")
        if not self.methods:
            raise ParameterError("name at least one method")
        if self.top_k is not None and (isinstance(self.top_k, bool) or not isinstance(self.top_k, int)
                                       or self.top_k < 1):
            raise ParameterError(f"k must be a positive integer, got {self.top_k!r}")

    def describe(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Tile:
    """Rows ``[test_start, test_stop)`` (and training columns, checkpoint ``checkpoint`` for examples)."""

    test_start: int
    test_stop: int
    train_start: int = 0
    train_stop: int = 0
    checkpoint: int = 0

    @property
    def seed(self) -> int:
        """The tile's own seed: the same wherever it runs."""
        return zlib.crc32(f"{self.test_start}:{self.train_start}:{self.checkpoint}".encode())


# --------------------------------------------------------------------------------------- per-process state
_EXPLORER: Any = None


def explorer() -> Any:
    """This process's explorer (one per worker: models and splits are loaded once, then sliced per tile)."""
    global _EXPLORER
    if _EXPLORER is None:
        from lfx_engine.explorer import Explorer

        _EXPLORER = Explorer()
    return _EXPLORER


def sizes(job: Job) -> tuple[int, int, int]:
    """(test rows, training rows, checkpoints) the job covers."""
    ex = explorer()
    n_test = len(ex.test_data(job.model)[1])
    n_train = len(ex.train_data(job.model)[1])
    n_test = min(n_test, job.n_test or n_test)
    n_train = min(n_train, job.n_train or n_train)
    n_ckpt = 1
    if job.what == "examples" and job.methods == ("tracin",):
        n_ckpt = len(ex.method_checkpoints(job.model, "tracin"))
    return n_test, n_train, n_ckpt


def plan(job: Job) -> list[Tile]:
    """Every tile of ``job``, in a fixed order."""
    if job.what == "examples" and len(job.methods) != 1:
        raise ParameterError("example importance is precomputed one method at a time (name one method)")
    n_test, n_train, n_ckpt = sizes(job)
    if job.what == "examples" and job.methods[0] == "simplex" and job.train_block < n_train:
        raise ParameterError(f"SimplEx fits one convex combination over the whole corpus, so its training side "
                             f"cannot be split into blocks: use --train-block {n_train} or more")
    tiles = []
    for t0 in range(0, n_test, job.test_block):
        t1 = min(n_test, t0 + job.test_block)
        if job.what != "examples":
            tiles.append(Tile(t0, t1))
            continue
        for r0 in range(0, n_train, job.train_block):
            for c in range(1 if job.top_k else n_ckpt):  # a top-k tile sums every checkpoint itself
                tiles.append(Tile(t0, t1, r0, min(n_train, r0 + job.train_block), c))
    return tiles


# --------------------------------------------------------------------------------------- what a tile computes
def run_tile(job: Job, tile: Tile) -> dict[str, np.ndarray]:
    """The arrays of one tile (see the module docstring); deterministic given (job, tile)."""
    torch.manual_seed(tile.seed)
    ex = explorer()
    x_test = ex.test_data(job.model)[0][tile.test_start:tile.test_stop]
    if job.what == "attributions":
        return {f"attr_{m}": ex.attribute(job.model, x_test, m, seed=tile.seed % 2**31) for m in job.methods}
    if job.what == "masking":
        return _masking(ex, job, x_test, tile)
    return _examples(ex, job, x_test, tile)


def _masking(ex: Any, job: Job, x: torch.Tensor, tile: Tile) -> dict[str, np.ndarray]:
    from lfx_engine.feature_importance import label_free_attribution
    from lfx_engine.metrics.masking import shift_curve

    encoder = ex.model(job.model).encoder
    x_bar = ex.baseline_for(job.model, x)
    scores = {m: label_free_attribution(encoder, x, m, baselines=x_bar, device=ex.device, seed=tile.seed % 2**31)
              for m in job.methods}
    _, per_example = shift_curve(encoder, x, scores, baseline=x_bar, include_random=True, seed=tile.seed % 2**31,
                                 device=ex.device, return_per_example=True)
    per_example["example"] = per_example["example"] + tile.test_start
    return {"method": per_example["method"].to_numpy(dtype=str), "percent": per_example["percent"].to_numpy(),
            "example": per_example["example"].to_numpy(), "shift": per_example["shift"].to_numpy()}


def _examples(ex: Any, job: Job, x_test: torch.Tensor, tile: Tile) -> dict[str, np.ndarray]:
    from lfx_engine.example_importance import index as ix

    method = job.methods[0]
    problem = ex.example_method_problem(job.model, method)
    if problem:
        raise ParameterError(problem)
    params = ex.index_params(job.model, method, job.params)
    checkpoints = ex.method_checkpoints(job.model, method)
    if method == "tracin" and not job.top_k:  # one checkpoint per tile: the reducer sums them
        checkpoints = [checkpoints[tile.checkpoint]]
    x_train = ex.train_data(job.model)[0][tile.train_start:tile.train_stop]
    entry = ex.entry(job.model)
    # IF: the Hessian is the full training split's, whichever block is scored (its solve is computed once)
    influence = method == "influence"
    fitted = ix.fit(method, ex.model(job.model), x_train, loss_fn=entry.loss_fn or ix.mse_per_example,
                    checkpoints=checkpoints, params=params, device=ex.device,
                    hessian_data=ex.train_data(job.model)[0] if influence else None,
                    solve=ex.influence_solve(job.model, job.params) if influence else None)
    if not job.top_k:
        return {"scores": fitted.score(x_test)}
    top = fitted.score(x_test, ix.TopKSink(len(x_test), min(job.top_k, len(x_train)), bottom=True))
    return {**top, "top_indices": top["top_indices"] + tile.train_start,
            "bottom_indices": top["bottom_indices"] + tile.train_start}
