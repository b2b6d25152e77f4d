"""The earlier code's label-free attribution, emulated factor by factor (a diagnostic, METHOD §1.3, §9).

The reproduction study's encoder-vs-full extension called ``lfxai``'s
``attribute_auxiliary`` on models it never put in eval mode, in test batches
of 128. Two things differ from :func:`~lfx_engine.feature_importance.label_free_attribution`:

* **BatchNorm mode** (``batch_norm="train"``): ``f(x)`` and every forward
  pass over captum's enlarged batch use that batch's own statistics (IG's
  50·B interpolants in one pass, as no ``internal_batch_size`` was set).
* **Pairing** (``pairing="tiled"``): ``f(x)`` of the B inputs is tiled
  block-wise to the enlarged batch. That is right for IG (whole-batch α
  blocks) and for Saliency (no enlargement) but pairs GradientShap's row
  ``i·5 + k`` with ``f(x_{(i·5+k) mod B})`` (NoiseTunnel's
  ``repeat_interleave``).

Each factor can be switched on alone, so a study of which one explains a gap
to the study's numbers is a factorial design, not a guess. With
``batch_norm="eval", pairing="paired"`` this equals ``label_free_attribution``.
Never use it to explain a model: the defaults of the engine are the fix.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from captum.attr import Attribution
from torch import nn

from ..errors import ParameterError
from ._utils import ProgressFn, baseline_rows, check_inputs, chunks, format_baselines, resolve_device, seeded
from .label_free import LabelFreeModule, attribute_chunk, resolve_method
from .methods import MethodSpec

__all__ = ["BATCH_NORM_MODES", "PAIRINGS", "TiledAuxiliary", "earlier_code_attribution"]

BATCH_NORM_MODES = ("eval", "train")
PAIRINGS = ("paired", "tiled")


class TiledAuxiliary(nn.Module):
    """``⟨f(x) tiled block-wise, module(x̃)⟩``: the earlier code's auxiliary function (lfxai's, re-written).

    ``fx`` holds the B representations of the batch; an enlarged batch of n·B
    rows is scored against ``fx.repeat(n, 1)``.
    """

    def __init__(self, module: nn.Module, fx: torch.Tensor) -> None:
        super().__init__()
        self.module = module
        self.fx = fx.reshape(fx.shape[0], -1)

    def forward(self, x_tilde: torch.Tensor) -> torch.Tensor:
        out = self.module(x_tilde)
        rows, b = out.shape[0], self.fx.shape[0]
        if rows % b:
            raise RuntimeError(f"an enlarged batch of {rows} rows is not a multiple of the batch of {b}")
        return (out.reshape(rows, -1) * self.fx.repeat(rows // b, 1)).sum(dim=1)


def _module_in_mode(module: nn.Module, batch_norm: str, device: torch.device) -> nn.Module:
    """A deep copy on ``device`` in eval mode, or in train mode (BatchNorm on batch statistics)."""
    copied = copy.deepcopy(module).to(device)
    copied.train(batch_norm == "train")
    for p in copied.parameters():
        p.requires_grad_(False)
    return copied


def earlier_code_attribution(
    module: nn.Module,
    inputs: torch.Tensor,
    method: str | MethodSpec | type[Attribution] = "gradient_shap",
    *,
    batch_norm: str = "train",
    pairing: str = "tiled",
    baselines: torch.Tensor | float | None = None,
    batch_size: int = 128,
    device: torch.device | str | None = None,
    seed: int | None = 0,
    progress: ProgressFn | None = None,
) -> torch.Tensor:
    """Label-free attribution of ``module`` with the earlier code's BatchNorm mode and/or pairing.

    ``batch_size`` is the earlier code's test batch (128), which sets both the
    BatchNorm statistics and the tiling period. With ``batch_norm="train"`` IG
    runs all interpolants in one pass (its ``internal_batch_size`` is dropped),
    as the earlier code did. The caller's module is never changed.
    """
    if batch_norm not in BATCH_NORM_MODES:
        raise ParameterError(f"batch_norm must be one of {', '.join(BATCH_NORM_MODES)}, got {batch_norm!r}")
    if pairing not in PAIRINGS:
        raise ParameterError(f"pairing must be one of {', '.join(PAIRINGS)}, got {pairing!r}")
    check_inputs(inputs, batch_size)
    spec = resolve_method(method)
    if spec.factory is None:
        raise ParameterError(f"{spec.name} has no gradient to emulate")
    dev = resolve_device(device)
    net = _module_in_mode(module, batch_norm, dev)
    kwargs: dict[str, Any] = spec.kwargs_for(tuple(inputs.shape[1:]), {})
    if batch_norm == "train" and "internal_batch_size" in kwargs:
        kwargs["internal_batch_size"] = None
    x_bar_all = format_baselines(baselines, inputs)
    n = inputs.shape[0]
    results: list[torch.Tensor] = []
    with torch.inference_mode(False), torch.enable_grad(), seeded(seed, dev):
        for start, stop in chunks(n, int(batch_size)):
            x = inputs[start:stop].detach().to(dev).clone()
            x_bar = baseline_rows(x_bar_all, start, stop).to(dev).clone()
            with torch.no_grad():
                fx = net(x).detach()
            if pairing == "tiled":
                attr = attribute_chunk(TiledAuxiliary(net, fx), spec, x, x_bar, (), None, kwargs)
            else:
                attr = attribute_chunk(LabelFreeModule(net), spec, x, x_bar, (fx,), None, kwargs)
            results.append(attr.cpu())
            if progress is not None:
                progress(stop, n)
    return torch.cat(results, dim=0)
