"""TracIn: sum over saved checkpoints of per-example gradient dot products.

``S[test, train] = Σ_c lr_c · ∇θe L_c(x_test) · ∇θe L_c(x_train)``: per
checkpoint, the per-example gradients are multiplied as in-memory matrices (no
per-pair file loads), with linear layers kept as gradient factors
(:mod:`.factored`) and in blocks when both sides do not fit in ``max_memory_mb``
(:mod:`.streaming`). The model's final weights, mode and device are restored
afterwards.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, ParameterError
from ._common import Progress, eval_on, report, resolve_device
from .gradients import LossFn, ParamFilter, _grads_on_device, is_encoder_param, mse_per_example, selected_parameters
from .factored import FactoredRows, factorable_linears, factored_grads, factored_names, row_width
from .streaming import GradientRows, budget_bytes, streamed_product

Checkpoint = Mapping[str, torch.Tensor] | str | Path


def load_checkpoint(checkpoint: Checkpoint) -> Mapping[str, torch.Tensor]:
    """A state dict from a mapping or a ``.safetensors`` file (floating tensors as float32).

    LFX checkpoints (written by the trainer) are read and verified by
    :func:`lfx_engine.training.io.load_state_dict`; other safetensors files are
    read as plain tensors. Pickle-based files are refused: unpickling can run code.
    """
    if isinstance(checkpoint, Mapping):
        return checkpoint
    path = Path(checkpoint)
    if not path.is_file():
        raise CheckpointError(f"TracIn checkpoint {path} does not exist; retrain the model or fix the path")
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"TracIn checkpoint {path} is not a readable safetensors file ({exc}); only safetensors are accepted"
        ) from None
    if metadata.get("lfx_format"):
        from lfx_engine.training.io import load_state_dict

        return load_state_dict(path)[0]
    state = load_file(str(path))
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def tracin_scores(
    model: nn.Module,
    checkpoints: Sequence[Checkpoint],
    x_train: torch.Tensor,
    x_test: torch.Tensor,
    loss_fn: LossFn = mse_per_example,
    param_filter: ParamFilter = is_encoder_param,
    lr_factor: float | Sequence[float] = 1.0,
    batch_size: int = 64,
    projection_dim: int | None = None,
    projection_seed: int = 0,
    device: torch.device | str | None = None,
    progress: Progress = None,
    max_memory_mb: float | None = None,
) -> torch.Tensor:
    """TracIn scores ``(n_test, n_train)`` as float32 on the CPU.

    ``lr_factor`` is one factor for all checkpoints or one per checkpoint.
    ``projection_dim`` replaces exact gradients by a seeded random projection
    (for browsing large training sets). ``max_memory_mb`` bounds the gradient
    rows held at once (default :data:`.streaming.DEFAULT_MEMORY_MB`); below
    ``(n_train + n_test) × P × 4`` bytes the scores are the same but one side is
    recomputed per held block.
    """
    if not checkpoints:
        raise ParameterError("TracIn needs at least one checkpoint; train with checkpointing enabled")
    factors = [float(lr_factor)] * len(checkpoints) if isinstance(lr_factor, (int, float)) else list(lr_factor)
    if len(factors) != len(checkpoints):
        raise ParameterError(f"{len(factors)} learning-rate factors for {len(checkpoints)} checkpoints")
    n_bytes = budget_bytes(max_memory_mb)
    dev = resolve_device(device, model)
    scores = torch.zeros(len(x_test), len(x_train), dtype=torch.float32, device=dev)
    with eval_on(model, dev, restore_weights=True):
        names = selected_parameters(model, param_filter)
        # Linear layers as factors (same dot products, far fewer numbers per row) unless projecting.
        layers = {} if projection_dim else factorable_linears(model, set(names), x_train[:2].to(dev))
        factored = factored_names(layers)
        n_dense = sum(p.numel() for n, p in names.items() if n not in factored)
        width = projection_dim or row_width(n_dense, list(layers.values()))

        def compute(xb: torch.Tensor, batch: int) -> torch.Tensor | FactoredRows:
            if layers:
                return factored_grads(model, xb, loss_fn, param_filter, layers, batch, dev)
            return _grads_on_device(model, xb, loss_fn, param_filter, batch, dev, projection_dim, projection_seed)

        def source(x: torch.Tensor) -> GradientRows:
            return GradientRows(x, width, compute)

        for c, (checkpoint, factor) in enumerate(zip(checkpoints, factors)):
            try:
                model.load_state_dict(load_checkpoint(checkpoint))
            except RuntimeError as exc:
                raise CheckpointError(f"TracIn checkpoint {c} does not match the model: {exc}") from exc
            streamed_product(source(x_test), source(x_train), n_bytes, batch_size, scores, factor,
                             _per_checkpoint(progress, c, len(checkpoints)))
    return scores.cpu()


def _per_checkpoint(progress: Progress, index: int, count: int) -> Progress:
    """A progress callback for checkpoint ``index`` of ``count``, reported in thousandths of the whole run."""
    if progress is None:
        return None
    return lambda done, total: report(progress, round(1000 * (index + done / max(1, total)) / count), 1000)
