"""Similarity rates of example-importance scores (METHOD.md §4, §7.2)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..errors import ParameterError
from .masking import interval_verdict, mean_ci

__all__ = ["DEFAULT_FRACTIONS", "similarity_rates"]

DEFAULT_FRACTIONS = (0.05, 0.1, 0.2, 0.5, 0.7, 1.0)
COLUMNS = ["fraction", "n", "most", "least", "prior", "most_ci_low", "most_ci_high", "most_vs_prior",
           "least_ci_low", "least_ci_high", "least_vs_prior"]


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
    Columns: ``fraction, n, most, least, prior``, then the 95% Student-t
    intervals over test examples (``most_ci_low`` … ``least_ci_high``) and
    verdicts against the prior from the paired difference share − prior per
    test example (``most_vs_prior``, ``least_vs_prior``: ``above`` / ``below``
    when the interval excludes 0, else ``not resolved``; at fraction 1.0 the
    difference is 0 by construction). Test rows are processed ``row_chunk`` at
    a time to bound memory.
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
    m = yt.size
    most = np.zeros((m, len(ns)))
    least = np.zeros((m, len(ns)))
    prior = np.zeros(m)
    for a in range(0, yt.size, row_chunk):
        b = min(yt.size, a + row_chunk)
        order = np.argsort(-s[a:b], axis=1, kind="stable")
        cum = np.cumsum(yr[order] == yt[a:b, None], axis=1, dtype=np.int64)
        total = cum[:, -1]
        prior[a:b] = total / n_train
        for i, n in enumerate(ns):
            most[a:b, i] = cum[:, n - 1] / n
            below = cum[:, n_train - n - 1] if n < n_train else 0
            least[a:b, i] = (total - below) / n
    rows = []
    for i, (f, n) in enumerate(zip(fractions, ns)):
        row: dict[str, float | int | str] = {"fraction": float(f), "n": n, "most": float(most[:, i].mean()),
                                             "least": float(least[:, i].mean()), "prior": float(prior.mean())}
        for side, values in (("most", most[:, i]), ("least", least[:, i])):
            _, row[f"{side}_ci_low"], row[f"{side}_ci_high"] = mean_ci(values)
            row[f"{side}_vs_prior"] = _verdict(values - prior)
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def _verdict(differences: np.ndarray) -> str:
    """``above`` / ``below`` when the 95% interval of the mean difference excludes 0, else ``not resolved``."""
    if np.allclose(differences, 0.0):
        return "not resolved"
    _, lo, hi = mean_ci(differences)
    return interval_verdict(lo, hi)
