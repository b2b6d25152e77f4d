"""Controls for the masking test (METHOD §7.1) and the area between shift curves.

A ranking "beats random" says little when random masking barely moves the
representation (on MNIST most pixels are black: masking them with black does
nothing). The controls a reviewer asks for:

* ``random``: i.i.d. N(0,1) scores (the paper's control);
* ``random_informative``: random order among the informative features (those
  that differ from the baseline), then the rest, so every mask changes the input
  as early as possible;
* ``model_free``: ``Σ_c |x − x̄|``, the largest input changes first (no model);
* a randomly re-initialised encoder explained by the same method (the model
  randomisation check of Adebayo et al., 2018), built with
  :func:`lfx_engine.feature_importance.randomised_copy`.

The summary is the area between two curves over the masked share (0..1), with
a paired interval over examples, not a ratio against a near-zero control.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..errors import ParameterError
from .masking import interval_verdict, mean_ci

__all__ = ["CONTROLS", "INPUT_CONTROLS", "RANDOM_INIT", "area_between", "control_areas", "control_scores",
           "curve_areas", "informative_features", "random_init_key"]

#: Controls computed from the inputs alone, in the order they are reported.
INPUT_CONTROLS = ("random", "random_informative", "model_free")
#: Every control: the input ones and ``random_init`` (each method on a re-initialised encoder).
CONTROLS = (*INPUT_CONTROLS, "random_init")
#: Suffix of the curve of a method explained on the re-initialised encoder.
RANDOM_INIT = "_random_init"


def random_init_key(method: str) -> str:
    """Curve name of ``method`` on the randomly re-initialised encoder."""
    return method + RANDOM_INIT
#: A feature counts as informative when it differs from the baseline by more than this (summed over channels).
INFORMATIVE_TOL = 1e-6


def _score_shape(x: torch.Tensor) -> tuple[int, ...]:
    if x.dim() == 4:
        return (x.shape[0], 1, *x.shape[2:])
    if x.dim() == 3:
        return (x.shape[0], x.shape[1])
    raise ParameterError(f"expected (N,C,H,W) or (N,T,F) inputs, got {tuple(x.shape)}")


def _input_change(x: torch.Tensor, baseline: torch.Tensor | float | None) -> torch.Tensor:
    """``Σ_c |x − x̄|`` per pixel ``(N,1,H,W)`` or per time step ``(N,T)``."""
    x_bar = torch.zeros(()) if baseline is None else torch.as_tensor(baseline, dtype=x.dtype)
    diff = (x - x_bar).abs()
    return diff.sum(dim=1, keepdim=True) if x.dim() == 4 else diff.sum(dim=2)


def informative_features(x: torch.Tensor, baseline: torch.Tensor | float | None = None) -> torch.Tensor:
    """Boolean mask of the features whose value differs from the baseline (``Σ_c |x − x̄| > tol``)."""
    return _input_change(x, baseline) > INFORMATIVE_TOL


def control_scores(kind: str, x: torch.Tensor, baseline: torch.Tensor | float | None = None,
                   seed: int = 0) -> torch.Tensor:
    """Scores of an input control, one per maskable feature (larger = masked first); seeded."""
    if kind not in INPUT_CONTROLS:
        raise ParameterError(f"unknown control {kind!r}; choose from {', '.join(INPUT_CONTROLS)}")
    gen = torch.Generator().manual_seed(int(seed))
    shape = _score_shape(x)
    if kind == "random":
        return torch.randn(shape, generator=gen)
    if kind == "random_informative":
        return torch.rand(shape, generator=gen) + informative_features(x, baseline).float()
    return _input_change(x, baseline).float()


def curve_areas(per_example: pd.DataFrame) -> pd.DataFrame:
    """Per-example area under the shift curve over the masked share 0..1 (trapezoid).

    ``per_example``: the long table of :func:`shift_curve` (method, percent, example, shift).
    Returns ``(method, example, area)``.
    """
    rows = []
    for method, g in per_example.groupby("method", sort=False):
        wide = g.pivot_table(index="example", columns="percent", values="shift", aggfunc="first").sort_index(axis=1)
        share = wide.columns.to_numpy(dtype=float) / 100.0
        if share.size < 2:
            raise ParameterError("an area needs at least two masking levels")
        y = wide.to_numpy(dtype=float)
        area = (0.5 * (y[:, 1:] + y[:, :-1]) * np.diff(share)).sum(axis=1)
        rows.append(pd.DataFrame({"method": method, "example": wide.index.to_numpy(), "area": area}))
    return pd.concat(rows, ignore_index=True)


def area_between(areas: pd.DataFrame, methods: Sequence[str], controls: Sequence[str],
                 level: float = 0.95) -> pd.DataFrame:
    """Area between each method's curve and each control's: mean paired difference with a t-interval.

    The verdict is ``above`` / ``below`` when the interval excludes 0, else
    ``not resolved``; ``relative`` is the difference over the control's area.
    """
    wide = areas.pivot_table(index="example", columns="method", values="area", aggfunc="first")
    rows = []
    for method in methods:
        for control in controls:
            if method == control or method not in wide or control not in wide:
                continue
            diff = (wide[method] - wide[control]).dropna().to_numpy()
            mean, lo, hi = mean_ci(diff, level)
            control_area = float(wide[control].mean())
            verdict = interval_verdict(lo, hi)
            rows.append({"method": method, "control": control, "area": float(wide[method].mean()),
                         "control_area": control_area, "difference": mean, "ci_low": lo, "ci_high": hi,
                         "relative": mean / control_area if control_area > 0 else np.nan,
                         "n": int(diff.size), "verdict": verdict})
    return pd.DataFrame(rows, columns=["method", "control", "area", "control_area", "difference", "ci_low",
                                       "ci_high", "relative", "n", "verdict"])


def control_areas(per_example: pd.DataFrame, methods: Sequence[str], controls: Sequence[str],
                  level: float = 0.95) -> pd.DataFrame:
    """Area between every method and every control; ``random_init`` pairs a method with its own randomised twin
    (curve :func:`random_init_key`). Columns as :func:`area_between`."""
    areas = curve_areas(per_example)
    tables = [area_between(areas, methods, [c for c in controls if c in INPUT_CONTROLS], level)]
    if "random_init" in controls:
        for method in methods:
            twin = area_between(areas, [method], [random_init_key(method)], level)
            twin["control"] = "random_init"
            tables.append(twin)
    return pd.concat([t for t in tables if len(t)] or tables[:1], ignore_index=True)
