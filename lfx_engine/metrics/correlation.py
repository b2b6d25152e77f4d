"""Pooled correlations between explanations (METHOD.md §4 pretext tables, §7.6)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats

from ..errors import ParameterError

__all__ = [
    "latex_table",
    "masked_pixel_correlation",
    "mean_std",
    "mean_std_table",
    "spread_label",
    "spread_name",
    "pooled_correlation_matrix",
]

_CHUNK = 1 << 20


def _flat(a: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a).reshape(-1)


def _pearson_rows(rows: Sequence[np.ndarray]) -> np.ndarray:
    """k×k Pearson matrix of k equal-length vectors, accumulated in float64 chunks.

    Two passes (means, then centred cross-products), so only one chunk of each
    vector is upcast at a time.
    """
    k, m = len(rows), rows[0].size
    means = np.zeros(k)
    for a in range(0, m, _CHUNK):
        means += np.stack([r[a:a + _CHUNK].astype(np.float64) for r in rows]).sum(axis=1)
    means /= m
    cross = np.zeros((k, k))
    for a in range(0, m, _CHUNK):
        block = np.stack([r[a:a + _CHUNK].astype(np.float64) for r in rows]) - means[:, None]
        cross += block @ block.T
    sd = np.sqrt(np.diag(cross))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = cross / np.outer(sd, sd)
    return np.clip(corr, -1.0, 1.0)


def pooled_correlation_matrix(
    arrays: Sequence[np.ndarray | torch.Tensor],
    method: str = "pearson",
    max_elements: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """One pooled correlation per pair: the k×k matrix across k flattened, equal-size arrays.

    ``method`` is ``"pearson"`` or ``"spearman"`` (Pearson of average ranks).
    ``max_elements`` bounds memory: when the arrays are larger, the same
    deterministic random subset of positions (``seed``) is used for all of them.
    Pearson is streamed in float64 chunks; Spearman needs float64 ranks of every
    used element (k × size × 8 bytes), so give ``max_elements`` for big inputs.
    """
    if method not in ("pearson", "spearman"):
        raise ParameterError(f"method must be 'pearson' or 'spearman', got {method!r}")
    rows = [_flat(a) for a in arrays]
    if len(rows) < 2:
        raise ParameterError("need at least two arrays to correlate")
    size = rows[0].size
    if any(r.size != size for r in rows):
        raise ParameterError(f"arrays differ in size: {[r.size for r in rows]}")
    if max_elements is not None and size > int(max_elements):
        idx = np.sort(np.random.default_rng(seed).choice(size, int(max_elements), replace=False))
        rows = [r[idx] for r in rows]
    if method == "spearman":
        rows = [stats.rankdata(r, method="average") for r in rows]
    return _pearson_rows(rows)


#: Fewer runs than this give a range (lowest–highest), not a standard deviation: "± std" of 2 runs says little.
MIN_RUNS_FOR_STD = 3


def spread_name(n_runs: int) -> str:
    """How a value over ``n_runs`` runs is given: ``"mean ± std"``, or ``"mean [range]"`` below
    :data:`MIN_RUNS_FOR_STD` runs."""
    return "mean ± std" if n_runs >= MIN_RUNS_FOR_STD else "mean [range]"


def spread_label(mean: float, std: float = float("nan"), low: float = float("nan"), high: float = float("nan"),
                 decimals: int = 2) -> str:
    """``"mean ± std"`` when the std is known, else ``"mean [low–high]"`` when the values differ, else the mean."""
    fmt = f"{{:.{decimals}f}}"
    if np.isfinite(std):
        return f"{fmt.format(mean)} ± {fmt.format(std)}"
    if np.isfinite(low) and np.isfinite(high) and low < high:
        return f"{fmt.format(mean)} [{fmt.format(low)}–{fmt.format(high)}]"
    return fmt.format(mean)


def mean_std(matrices: Sequence[np.ndarray], ddof: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Element-wise mean and standard deviation over runs (``ddof=1``: sample std; NaN below
    :data:`MIN_RUNS_FOR_STD` runs)."""
    stack = np.stack([np.asarray(m, dtype=np.float64) for m in matrices])
    if ddof >= stack.shape[0] or stack.shape[0] < MIN_RUNS_FOR_STD:
        std = np.full(stack.shape[1:], np.nan)
    else:
        std = stack.std(axis=0, ddof=ddof)
    return stack.mean(axis=0), std


def mean_std_table(
    matrices: Sequence[np.ndarray],
    labels: Sequence[str],
    ddof: int = 1,
    decimals: int = 2,
) -> pd.DataFrame:
    """Table of ``"mean ± std"`` strings over runs, rows and columns named by ``labels``; with fewer than
    :data:`MIN_RUNS_FOR_STD` runs, ``"mean [lowest–highest]"`` instead.

    The default ``ddof=1`` is the sample std; the earlier code used numpy's default
    ``ddof=0``. The choice, the run count and the numeric arrays are kept in
    ``table.attrs`` (``ddof``, ``n_runs``, ``mean``, ``std``, ``low``, ``high``).
    """
    mean, std = mean_std(matrices, ddof)
    stack = np.stack([np.asarray(m, dtype=np.float64) for m in matrices])
    low, high = stack.min(axis=0), stack.max(axis=0)
    k = len(labels)
    if mean.shape != (k, k):
        raise ParameterError(f"{k} labels for matrices of shape {mean.shape}")
    cells = [[spread_label(mean[i, j], std[i, j], low[i, j], high[i, j], decimals) for j in range(k)]
             for i in range(k)]
    table = pd.DataFrame(cells, index=list(labels), columns=list(labels))
    table.attrs.update({"ddof": int(ddof), "n_runs": len(matrices), "mean": mean.tolist(), "std": std.tolist(),
                        "low": low.tolist(), "high": high.tolist()})
    return table


def latex_table(table: pd.DataFrame, caption: str | None = None, label: str | None = None) -> str:
    """Render a (string) DataFrame such as :func:`mean_std_table`'s as a LaTeX tabular."""

    def esc(text: object) -> str:
        s = str(text)
        for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"),
                     ("#", r"\#"), ("$", r"\$")):
            s = s.replace(a, b)
        return s.replace("±", r"$\pm$").replace("–", "--")

    cols = "l" + "c" * table.shape[1]
    lines = [r"\begin{table}[t]", r"\centering"]
    if caption:
        lines.append(rf"\caption{{{esc(caption)}}}")
    if label:
        lines.append(rf"\label{{{label}}}")
    lines += [rf"\begin{{tabular}}{{{cols}}}", r"\hline",
              " & ".join([""] + [esc(c) for c in table.columns]) + r" \\", r"\hline"]
    for idx, row in table.iterrows():
        lines.append(" & ".join([esc(idx)] + [esc(v) for v in row.tolist()]) + r" \\")
    lines += [r"\hline", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines)


def masked_pixel_correlation(
    map_a: np.ndarray | torch.Tensor,
    map_b: np.ndarray | torch.Tensor,
    inputs: np.ndarray | torch.Tensor,
) -> np.ndarray:
    """Per-image Pearson between two attribution maps over live pixels (§7.6 steps 3–4).

    Both maps get ``|·|`` and are divided by their own array's global std; then,
    for each image, the correlation is taken over the positions where the input is
    non-zero (dead pixels are trivially shared zeros). Maps of the inputs' shape
    use element-wise liveness; aggregated maps ``(N,1,H,W)``/``(N,H,W)`` count a
    pixel live when any channel is non-zero. Returns ``(N,)``, NaN where fewer than
    two live pixels or a constant map.
    """
    a = np.abs(_as_np(map_a)).astype(np.float64)
    b = np.abs(_as_np(map_b)).astype(np.float64)
    x = _as_np(inputs)
    if a.shape != b.shape or a.shape[0] != x.shape[0]:
        raise ParameterError(f"maps {a.shape}, {b.shape} and inputs {x.shape} do not match")
    a /= a.std() or 1.0
    b /= b.std() or 1.0
    n = a.shape[0]
    if a.shape == x.shape:
        live = x != 0
    else:
        live = (x != 0).reshape(n, x.shape[1], -1).any(axis=1) if x.ndim == 4 else (x != 0)
    a, b, live = a.reshape(n, -1), b.reshape(n, -1), live.reshape(n, -1)
    if live.shape != a.shape:
        raise ParameterError(f"cannot align maps {a.shape} with input liveness {live.shape}")
    cnt = live.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ma = (a * live).sum(axis=1) / cnt
        mb = (b * live).sum(axis=1) / cnt
        da, db = (a - ma[:, None]) * live, (b - mb[:, None]) * live
        r = (da * db).sum(axis=1) / np.sqrt((da ** 2).sum(axis=1) * (db ** 2).sum(axis=1))
    r[cnt < 2] = np.nan
    return r


def _as_np(a: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def map_agreement(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, top: float = 0.1) -> dict[str, float]:
    """How alike two importance maps of one input are: Pearson and Spearman over features, and the share of
    ``a``'s top-``top`` features that are also among ``b``'s (1 = the same most important features).

    For a side-by-side comparison of two models or two methods on the same sample.
    """
    if not 0 < top <= 1:
        raise ParameterError(f"top must lie in (0, 1], got {top}")
    x, y = _flat(a), _flat(b)
    if x.size != y.size:
        raise ParameterError(f"the maps differ in size: {x.size} and {y.size} features")
    pearson = float(pooled_correlation_matrix([x, y], "pearson")[0, 1])
    spearman = float(pooled_correlation_matrix([x, y], "spearman")[0, 1])
    k = max(1, int(round(top * x.size)))
    top_x, top_y = np.argsort(-x, kind="stable")[:k], np.argsort(-y, kind="stable")[:k]
    overlap = len(np.intersect1d(top_x, top_y)) / k
    return {"pearson": pearson, "spearman": spearman, "top_overlap": float(overlap), "top_k": float(k)}
