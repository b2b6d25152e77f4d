"""Similarity rates of example-importance scores (METHOD.md §4, §7.2)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..errors import ParameterError

__all__ = ["DEFAULT_FRACTIONS", "similarity_rates"]

DEFAULT_FRACTIONS = (0.05, 0.1, 0.2, 0.5, 0.7, 1.0)


def _numpy(a: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def similarity_rates(
    scores: np.ndarray | torch.Tensor,
    y_test: np.ndarray | torch.Tensor,
    y_train: np.ndarray | torch.Tensor,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    row_chunk: int = 1024,
) -> pd.DataFrame:
    """Share of same-label examples among each test example's most/least important training examples.

    ``scores`` is ``(n_test, n_train)``, larger = more important. For each fraction,
    ``n = int(frac · n_train)`` (guarded against float round-off); ``most`` is the
    mean over test examples of the same-label share in its top-``n``, ``least`` in
    its bottom-``n`` (ties: stable order). ``prior`` is that share over all
    training examples, which both rates equal at fraction 1.0.
    Columns: ``fraction, n, most, least, prior``. Test rows are processed
    ``row_chunk`` at a time to bound memory.
    """
    s = _numpy(scores)
    yt, yr = _numpy(y_test).ravel(), _numpy(y_train).ravel()
    if s.ndim != 2 or s.shape != (yt.size, yr.size):
        raise ParameterError(
            f"scores must be (n_test, n_train) = ({yt.size}, {yr.size}), got {s.shape}"
        )
    n_train = yr.size
    ns = []
    for frac in fractions:
        n = int(float(frac) * n_train + 1e-9)
        if not 1 <= n <= n_train:
            raise ParameterError(f"fraction {frac} selects {n} of {n_train} training examples")
        ns.append(n)
    most_sum = np.zeros(len(ns))
    least_sum = np.zeros(len(ns))
    prior_sum = 0.0
    for a in range(0, yt.size, row_chunk):
        b = min(yt.size, a + row_chunk)
        order = np.argsort(-s[a:b], axis=1, kind="stable")
        cum = np.cumsum(yr[order] == yt[a:b, None], axis=1, dtype=np.int64)
        total = cum[:, -1]
        prior_sum += float(np.sum(total / n_train))
        for i, n in enumerate(ns):
            most_sum[i] += float(np.sum(cum[:, n - 1] / n))
            below = cum[:, n_train - n - 1] if n < n_train else 0
            least_sum[i] += float(np.sum((total - below) / n))
    m = yt.size
    rows = [
        {"fraction": float(f), "n": n, "most": most_sum[i] / m, "least": least_sum[i] / m,
         "prior": prior_sum / m}
        for i, (f, n) in enumerate(zip(fractions, ns))
    ]
    return pd.DataFrame(rows, columns=["fraction", "n", "most", "least", "prior"])
