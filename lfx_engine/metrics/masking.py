"""Masking of each example's most important features and the representation shift
(METHOD.md §4, §7.1)."""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import nn

from ..errors import ParameterError
from ..feature_importance._utils import chunks, eval_module, resolve_device
from ..feature_importance.aggregation import aggregate_channels

__all__ = [
    "DEFAULT_PERCENTS",
    "feature_count",
    "importance_scores",
    "interval_verdict",
    "mask_inputs",
    "mean_ci",
    "representation_shift",
    "shift_curve",
    "topk_mask",
]

DEFAULT_PERCENTS = (0, 5, 10, 20, 50, 80, 100)


def feature_count(x: torch.Tensor) -> int:
    """P: pixels ``H·W`` for images ``(N,C,H,W)``, time steps ``T`` for sequences ``(N,T,F)``."""
    if x.dim() == 4:
        return int(x.shape[2] * x.shape[3])
    if x.dim() == 3:
        return int(x.shape[1])
    raise ParameterError(f"expected (N,C,H,W) or (N,T,F) inputs, got {tuple(x.shape)}")


def importance_scores(scores: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Scores with one value per maskable feature: ``(N,1,H,W)`` images, ``(N,T)`` sequences.

    A tensor of the inputs' shape is treated as an attribution and aggregated with
    ``Σ_c |attr|`` (METHOD §1.2; for one channel that is ``|attr|``). Scores of
    another shape (``(N,H,W)``, ``(N,T)``, ``(N,1,H,W)`` for multi-channel images)
    are taken as already aggregated, larger = more important.
    """
    scores = torch.as_tensor(scores)
    n = x.shape[0]
    if scores.shape[0] != n:
        raise ParameterError(f"scores have {scores.shape[0]} rows for {n} inputs")
    if x.dim() == 4:
        h, w = x.shape[2:]
        if scores.shape == x.shape:
            scores = aggregate_channels(scores, "sum_abs")
        if scores.numel() != n * h * w:
            raise ParameterError(f"scores of shape {tuple(scores.shape)} do not match images {tuple(x.shape)}")
        return scores.reshape(n, 1, h, w)
    if x.dim() == 3:
        t = x.shape[1]
        if scores.shape == x.shape:
            scores = aggregate_channels(scores, "sum_abs")
        if scores.numel() != n * t:
            raise ParameterError(f"scores of shape {tuple(scores.shape)} do not match sequences {tuple(x.shape)}")
        return scores.reshape(n, t)
    raise ParameterError(f"expected (N,C,H,W) or (N,T,F) inputs, got {tuple(x.shape)}")


def topk_mask(
    scores: torch.Tensor, m: int | None = None, *, fraction: float | None = None
) -> torch.Tensor:
    """Keep-mask (1 = keep, 0 = masked) hiding each example's own top-``m`` features.

    ``scores`` is ``(N, ...)``; features are its flattened trailing axes. Give either
    ``m`` or ``fraction`` (``m = int(fraction · P)``). Exactly ``m`` features per row
    are masked (top-k + ``scatter_``, ties broken by ``topk``). Same shape and dtype
    float32 as ``scores``.
    """
    flat = scores.reshape(scores.shape[0], -1)
    p = flat.shape[1]
    if (m is None) == (fraction is None):
        raise ParameterError("give exactly one of m and fraction")
    if m is None:
        assert fraction is not None  # exactly one of m and fraction was given
        m = int(float(fraction) * p + 1e-9)
    m = int(m)
    if not 0 <= m <= p:
        raise ParameterError(f"cannot mask {m} of {p} features")
    keep = torch.ones(flat.shape, dtype=torch.float32, device=flat.device)
    if m > 0:
        idx = torch.topk(flat.float(), m, dim=1).indices
        keep.scatter_(1, idx, 0.0)
    return keep.reshape(scores.shape)


def mask_inputs(
    x: torch.Tensor,
    scores: torch.Tensor,
    m: int,
    baseline: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Replace each example's top-``m`` features by the baseline.

    Images: one score per pixel (an input-shaped attribution is aggregated with
    ``Σ_c |·|``); the mask broadcasts over channels, ``mask·x + (1−mask)·x̄``
    (``mask·x`` for a zero baseline). Sequences ``(N,T,F)``: one score per time
    step, all features of a masked step take the baseline.
    """
    s = importance_scores(scores, x).to(x.device)
    keep = topk_mask(s, m).to(x.dtype)
    if x.dim() == 3:
        keep = keep.unsqueeze(-1)
    if baseline is None or (not isinstance(baseline, torch.Tensor) and float(baseline) == 0.0):
        return keep * x
    x_bar = torch.as_tensor(baseline, dtype=x.dtype, device=x.device)
    return keep * x + (1.0 - keep) * x_bar


def representation_shift(
    encoder: nn.Module,
    x: torch.Tensor,
    x_masked: torch.Tensor,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Per-example ``‖f(x) − f(x̃)‖²`` (N,), float32 on CPU; encoder in eval mode."""
    if x.shape != x_masked.shape:
        raise ParameterError("x and x_masked must have the same shape")
    dev = resolve_device(device)
    module = eval_module(encoder, dev)
    out = []
    with torch.inference_mode():
        for a, b in chunks(x.shape[0], int(batch_size)):
            za = module(x[a:b].to(dev)).reshape(b - a, -1)
            zb = module(x_masked[a:b].to(dev)).reshape(b - a, -1)
            out.append(((za - zb) ** 2).sum(dim=1).float().cpu())
    return torch.cat(out)


def mean_ci(values: np.ndarray | torch.Tensor, level: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t confidence interval of per-example values."""
    v = np.asarray(torch.as_tensor(values).double().cpu().numpy()).ravel()
    n = v.size
    mean = float(v.mean()) if n else float("nan")
    if n < 2:
        return mean, float("nan"), float("nan")
    sem = float(v.std(ddof=1)) / np.sqrt(n)
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sem
    return mean, mean - half, mean + half


def interval_verdict(low: float, high: float) -> str:
    """``above`` / ``below`` when a confidence interval of a difference excludes 0, else ``not resolved``."""
    return "above" if low > 0 else "below" if high < 0 else "not resolved"


def shift_curve(
    encoder: nn.Module,
    x: torch.Tensor,
    attributions_by_method: Mapping[str, torch.Tensor],
    baseline: torch.Tensor | float | None = None,
    percents: Sequence[float] = DEFAULT_PERCENTS,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    include_random: bool = False,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    return_per_example: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """Representation shift vs share of masked features, one curve per method.

    For each method and percent p, ``M = int(p·P/100)`` (P pixels or time steps)
    of each example's own most important features are set to the baseline and the
    shift ``‖f(x) − f(x̃)‖²`` is measured per example. Returns a tidy DataFrame
    ``(method, percent, M, mean, ci_low, ci_high, n)`` with a 95% t-interval; with
    ``return_per_example=True`` also the long table ``(method, percent, M, example,
    shift)``. ``include_random`` adds the seeded "random" control. ``baseline``:
    None/0, a shared ``(1,*shape)`` tensor or a per-example ``(N,*shape)`` one
    (e.g. blurred copies).
    """
    methods = dict(attributions_by_method)
    if include_random and "random" not in methods:
        from .masking_controls import control_scores

        methods["random"] = control_scores("random", x, seed=seed)
    p_total = feature_count(x)
    dev = resolve_device(device)
    module = eval_module(encoder, dev)
    base = baseline
    per_example_base = False
    if isinstance(base, torch.Tensor):
        base = base.to(dev)
        per_example_base = base.dim() == x.dim() and base.shape[0] == x.shape[0] > 1
    with torch.inference_mode():
        z0 = torch.cat([module(x[a:b].to(dev)).reshape(b - a, -1)
                        for a, b in chunks(x.shape[0], int(batch_size))])
    summary, per_example = [], []
    total, done = len(methods) * len(percents), 0
    for name, attr in methods.items():
        scores = importance_scores(torch.as_tensor(attr), x)
        for pct in percents:
            m = int(float(pct) * p_total / 100 + 1e-9)
            shifts = []
            with torch.inference_mode():
                for a, b in chunks(x.shape[0], int(batch_size)):
                    if m == 0:
                        shifts.append(torch.zeros(b - a))
                        continue
                    xm = mask_inputs(x[a:b].to(dev), scores[a:b].to(dev), m,
                                     base[a:b] if per_example_base and isinstance(base, torch.Tensor) else base)
                    z = module(xm).reshape(b - a, -1)
                    shifts.append(((z0[a:b] - z) ** 2).sum(dim=1).float().cpu())
            values = torch.cat(shifts).numpy()
            mean, lo, hi = mean_ci(values)
            summary.append({"method": name, "percent": pct, "M": m, "mean": mean,
                            "ci_low": lo, "ci_high": hi, "n": int(values.size)})
            if return_per_example:
                per_example.append(pd.DataFrame({"method": name, "percent": pct, "M": m,
                                                 "example": np.arange(values.size), "shift": values}))
            done += 1
            if progress is not None:
                progress(done, total)
    table = pd.DataFrame(summary, columns=["method", "percent", "M", "mean", "ci_low", "ci_high", "n"])
    if return_per_example:
        return table, pd.concat(per_example, ignore_index=True)
    return table
