"""Gradient products under a memory budget: per-example gradients computed in blocks, never all at once.

A full set of per-example gradients is ``N × P`` floats: 174 MB for 1,000 MNIST
examples, 2.5 GB for 1,000 CIFAR-10 examples. TracIn and influence functions
only need products of such matrices, so the rows can be produced block by block
(in memory, no per-example files) and multiplied as they come. When both sides
fit in the budget every row is computed once; otherwise one side is held in
blocks as large as the budget allows and the other side is recomputed once per
held block, trading time for memory.

``max_memory_mb`` bounds the gradient rows held at once (plus one vmap batch);
the score matrix itself and the model's activations come on top.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ParameterError
from ._common import Progress, report
from .factored import FactoredRows, pairwise

#: Default budget for per-example gradient and Jacobian buffers, in MB.
DEFAULT_MEMORY_MB = 2048.0


def budget_bytes(max_memory_mb: float | None) -> int:
    """The budget in bytes (``None`` = :data:`DEFAULT_MEMORY_MB`); refuses non-positive budgets."""
    mb = DEFAULT_MEMORY_MB if max_memory_mb is None else max_memory_mb
    if not mb > 0:
        raise ParameterError(f"max_memory_mb must be positive, got {max_memory_mb!r}")
    return int(mb * 2**20)


@dataclass(frozen=True)
class BlockPlan:
    """How many gradient rows to compute per vmap batch and to hold at once."""

    batch: int
    hold: int

    @classmethod
    def for_budget(cls, n_bytes: int, row_bytes: int, batch_size: int) -> "BlockPlan":
        """Hold as many rows as the budget leaves after two transient vmap batches (at least one)."""
        rows = max(1, n_bytes // max(1, row_bytes))
        batch = max(1, min(batch_size, rows // 8))
        return cls(batch=batch, hold=max(1, rows - 2 * batch))


class GradientRows:
    """Per-example gradient rows of one data set, computed on demand for any row range.

    ``compute(x_block, batch)`` returns the block's rows (a ``(n, width)``
    float32 tensor or :class:`.factored.FactoredRows` of that many numbers per
    row) on the model's device, in batches of ``batch`` examples.
    """

    def __init__(self, x: torch.Tensor, width: int, compute) -> None:
        self.x, self.width, self._compute = x, width, compute
        self.computed = 0

    def __len__(self) -> int:
        return len(self.x)

    def rows(self, start: int, stop: int, batch: int) -> torch.Tensor | FactoredRows:
        self.computed += stop - start
        return self._compute(self.x[start:stop], batch)


def streamed_product(
    left: GradientRows,
    right: GradientRows,
    n_bytes: int,
    batch_size: int,
    out: torch.Tensor,
    factor: float = 1.0,
    progress: Progress = None,
) -> torch.Tensor:
    """``out += factor · G_left G_rightᵀ`` with at most about ``n_bytes`` of gradient rows in memory.

    The smaller side is held (in blocks when it does not fit) and the other side
    streamed past each held block. Returns ``out``.
    """
    row_bytes = 4 * max(1, left.width)
    plan = BlockPlan.for_budget(n_bytes, row_bytes, batch_size)
    swap = len(right) < len(left)
    held, streamed = (right, left) if swap else (left, right)
    fits = (len(held) + len(streamed)) * row_bytes <= n_bytes
    if fits:  # every row once, the streamed side in one block
        plan = BlockPlan(batch=batch_size, hold=len(held))
    stream_block = len(streamed) if fits else plan.batch
    total = len(held) + -(-len(held) // plan.hold) * len(streamed)
    done = 0
    for h0 in range(0, len(held), plan.hold):
        h1 = min(len(held), h0 + plan.hold)
        g_held = held.rows(h0, h1, plan.batch)
        done += h1 - h0
        report(progress, done, total)
        for s0 in range(0, len(streamed), stream_block):
            s1 = min(len(streamed), s0 + stream_block)
            product = pairwise(g_held, streamed.rows(s0, s1, plan.batch))
            if swap:
                out[s0:s1, h0:h1] += factor * product.T
            else:
                out[h0:h1, s0:s1] += factor * product
            done += s1 - s0
            report(progress, done, total)
        del g_held
    return out
