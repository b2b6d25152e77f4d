"""Channel aggregation of feature attributions (METHOD.md §1.2)."""
from __future__ import annotations

import torch

from ..errors import ParameterError

__all__ = ["AGGREGATIONS", "aggregate_channels", "channel_axis"]

AGGREGATIONS = ("sum_abs", "abs", "mean")


def channel_axis(x: torch.Tensor) -> int:
    """Axis holding channels/features: 1 for images ``(N,C,H,W)``, -1 for sequences ``(N,T,F)``."""
    if x.dim() == 4:
        return 1
    if x.dim() == 3:
        return 2
    raise ParameterError(
        f"expected images (N,C,H,W) or sequences (N,T,F), got shape {tuple(x.shape)}"
    )


def aggregate_channels(attr: torch.Tensor, how: str = "sum_abs") -> torch.Tensor:
    """Aggregate an attribution ``attr`` (input-shaped) over channels.

    * ``"sum_abs"`` (masking): ``Σ_c |attr|``, images → ``(N,1,H,W)``, sequences
      ``(N,T,F)`` → ``(N,T)`` (one score per time step).
    * ``"abs"`` (pretext correlations): ``|attr|`` per channel-pixel, shape unchanged.
    * ``"mean"`` (display, per-unit VAE maps): signed mean over channels, images →
      ``(N,1,H,W)``, sequences → ``(N,T)``.
    """
    if how == "abs":
        return attr.abs()
    if how not in AGGREGATIONS:
        raise ParameterError(f"unknown aggregation {how!r}; choose one of {AGGREGATIONS}")
    axis = channel_axis(attr)
    keep = attr.dim() == 4
    if how == "sum_abs":
        return attr.abs().sum(dim=axis, keepdim=keep)
    return attr.mean(dim=axis, keepdim=keep)
