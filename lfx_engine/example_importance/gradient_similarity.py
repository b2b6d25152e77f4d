"""Plain gradient similarity at the final weights: the baselines TracIn and Influence Functions are read against.

``dot``: ``∇θe L(x_test) · ∇θe L(x_train)`` (TracIn with one checkpoint, the
final one, and no learning-rate factor; also Influence Functions with the
Hessian replaced by the identity). ``cosine``: the same product divided by both
gradient norms, which removes the large-gradient examples that dominate dot
products (Barshan et al., 2020 call such examples "global influencers").
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ParameterError
from ._common import Progress, eval_on, resolve_device
from .gradients import LossFn, ParamFilter, _grads_on_device, is_encoder_param, mse_per_example
from .tracin import tracin_scores

__all__ = ["GRADIENT_SIMILARITIES", "gradient_norms", "gradient_similarity_scores"]

GRADIENT_SIMILARITIES = ("dot", "cosine")


def gradient_norms(model: nn.Module, x: torch.Tensor, loss_fn: LossFn = mse_per_example,
                   param_filter: ParamFilter = is_encoder_param, batch_size: int = 64,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """``‖∇θe L(x_i)‖`` per example (N,), float32 on the CPU; one batch of gradients held at a time."""
    dev = resolve_device(device, model)
    norms = []
    with eval_on(model, dev):
        for start in range(0, len(x), batch_size):
            rows = _grads_on_device(model, x[start:start + batch_size], loss_fn, param_filter, batch_size, dev)
            norms.append(rows.norm(dim=1).cpu())
    return torch.cat(norms)


def gradient_similarity_scores(
    model: nn.Module,
    x_train: torch.Tensor,
    x_test: torch.Tensor,
    similarity: str = "dot",
    loss_fn: LossFn = mse_per_example,
    param_filter: ParamFilter = is_encoder_param,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    progress: Progress = None,
    max_memory_mb: float | None = None,
) -> torch.Tensor:
    """Gradient dot products or cosines ``(n_test, n_train)`` at the model's current weights (float32, CPU)."""
    if similarity not in GRADIENT_SIMILARITIES:
        raise ParameterError(f"similarity must be one of {', '.join(GRADIENT_SIMILARITIES)}, got {similarity!r}")
    final = {k: v.detach().clone() for k, v in model.state_dict().items()}
    scores = tracin_scores(model, [final], x_train, x_test, loss_fn=loss_fn, param_filter=param_filter,
                           batch_size=batch_size, device=device, progress=progress, max_memory_mb=max_memory_mb)
    if similarity == "dot":
        return scores
    kw: dict[str, Any] = {"loss_fn": loss_fn, "param_filter": param_filter, "batch_size": batch_size, "device": device}
    n_test = gradient_norms(model, x_test, **kw)
    n_train = gradient_norms(model, x_train, **kw)
    return scores / (n_test[:, None] * n_train[None, :]).clamp_min(1e-12)
