"""Per-latent-unit attribution for VAEs (METHOD.md §2).

For each unit ``j`` of the posterior mean ``μ = encoder(x)``, ``A_j`` is the plain
attribution of ``μ_j`` (``target=j``, no auxiliary function), averaged over
channels (signed) and weighted by the unit's own activation:
``S_j(x) = |z_j(x) · mean_c A_j(x)|``. By linearity (§1.1), for linear methods
``Σ_j z_j A_j`` is the label-free attribution.
"""
from __future__ import annotations

from typing import Any

import torch
from captum.attr import Attribution
from torch import nn

from ..errors import ParameterError
from ._utils import (
    ProgressFn,
    baseline_rows,
    check_inputs,
    chunks,
    eval_module,
    format_baselines,
    resolve_device,
    rnn_backward_ok,
    seeded,
)
from .aggregation import aggregate_channels, channel_axis
from .label_free import attribute_chunk, random_attribution, resolve_method
from .methods import RANDOM, MethodSpec

__all__ = ["unit_attribution"]


def unit_attribution(
    encoder: nn.Module,
    inputs: torch.Tensor,
    method: str | MethodSpec | type[Attribution] = "gradient_shap",
    baselines: torch.Tensor | float | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    progress: ProgressFn | None = None,
    seed: int | None = 0,
    signed: bool = False,
    **method_kwargs: Any,
) -> torch.Tensor:
    """Per-unit saliency ``(N, d, H, W)`` (images) or ``(N, d, T)`` (sequences), on CPU.

    Returns ``|z_j · A_j|``, or ``z_j · A_j`` with ``signed=True``. ``A_j`` is the
    signed channel mean of the attribution of ``μ_j`` (``target=j``) taken before
    the latent weighting. All ``d`` units of an example run in one captum call
    (inputs repeated, ``target`` = unit index), so ``batch_size`` counts
    (example, unit) rows: ``max(1, batch_size // d)`` examples per call.
    Model handling, baselines and seeding as in :func:`label_free_attribution`.
    """
    check_inputs(inputs, batch_size)
    channel_axis(inputs)  # validates the rank
    spec = resolve_method(method)
    n = inputs.shape[0]
    dev = resolve_device(device)
    module = eval_module(encoder, dev)
    x_bar_all = format_baselines(baselines, inputs)
    kwargs = spec.kwargs_for(tuple(inputs.shape[1:]), method_kwargs)

    with torch.no_grad():
        probe = module(inputs[:1].detach().to(dev).clone())
    if not isinstance(probe, torch.Tensor) or probe.dim() != 2:
        raise ParameterError("unit attribution needs an encoder returning μ of shape (N, d)")
    d = probe.shape[1]
    per_call = max(1, int(batch_size) // d)
    gen_seed = seed

    results: list[torch.Tensor] = []
    with torch.inference_mode(False), torch.enable_grad(), seeded(seed, dev), rnn_backward_ok(module, dev):
        for start, stop in chunks(n, per_call):
            x = inputs[start:stop].detach().to(dev).clone()
            m = x.shape[0]
            with torch.no_grad():
                z = module(x).detach()
            x_rep = x.repeat_interleave(d, dim=0)
            x_bar = baseline_rows(x_bar_all, start, stop).to(dev)
            if x_bar.shape[0] > 1:
                x_bar = x_bar.repeat_interleave(d, dim=0)
            if spec.name == RANDOM and spec.factory is None:
                attr = random_attribution(x_rep, None if gen_seed is None else gen_seed + start)
            else:
                target = torch.arange(d, device=dev).repeat(m)
                attr = attribute_chunk(module, spec, x_rep, x_bar.clone(), (), target, kwargs)
            a = aggregate_channels(attr, "mean")  # (m*d,1,H,W) or (m*d,T)
            spatial = tuple(a.shape[2:]) if a.dim() == 4 else tuple(a.shape[1:])
            a = a.reshape(m, d, *spatial)
            z_b = z.reshape(m, d, *([1] * (a.dim() - 2)))
            s = z_b * a.to(z_b.device)
            results.append((s if signed else s.abs()).cpu())
            if progress is not None:
                progress(stop, n)
    return torch.cat(results, dim=0)
