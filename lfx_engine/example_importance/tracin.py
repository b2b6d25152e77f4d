"""TracIn: sum over saved checkpoints of per-example gradient dot products.

``S[test, train] = Σ_c lr_c · ∇θe L_c(x_test) · ∇θe L_c(x_train)``, one matrix
product per checkpoint on in-memory gradient matrices (no per-pair file loads).
The model's final weights, mode and device are restored afterwards.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, ParameterError
from ._common import Progress, eval_on, report, resolve_device
from .gradients import LossFn, ParamFilter, _grads_on_device, is_encoder_param, mse_per_example

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
) -> torch.Tensor:
    """TracIn scores ``(n_test, n_train)`` as float32 on the CPU.

    ``lr_factor`` is one factor for all checkpoints or one per checkpoint.
    ``projection_dim`` replaces exact gradients by a seeded random projection
    (for browsing large training sets).
    """
    if not checkpoints:
        raise ParameterError("TracIn needs at least one checkpoint; train with checkpointing enabled")
    factors = [float(lr_factor)] * len(checkpoints) if isinstance(lr_factor, (int, float)) else list(lr_factor)
    if len(factors) != len(checkpoints):
        raise ParameterError(f"{len(factors)} learning-rate factors for {len(checkpoints)} checkpoints")
    dev = resolve_device(device, model)
    total = len(checkpoints) * (len(x_train) + len(x_test))
    scores = torch.zeros(len(x_test), len(x_train), dtype=torch.float32, device=dev)
    with eval_on(model, dev, restore_weights=True):
        for c, (checkpoint, factor) in enumerate(zip(checkpoints, factors)):
            try:
                model.load_state_dict(load_checkpoint(checkpoint))
            except RuntimeError as exc:
                raise CheckpointError(f"TracIn checkpoint {c} does not match the model: {exc}") from exc
            done = c * (len(x_train) + len(x_test))
            g_train = _grads_on_device(
                model, x_train, loss_fn, param_filter, batch_size, dev, projection_dim, projection_seed,
                _shifted(progress, done, total),
            )
            g_test = _grads_on_device(
                model, x_test, loss_fn, param_filter, batch_size, dev, projection_dim, projection_seed,
                _shifted(progress, done + len(x_train), total),
            )
            scores += factor * (g_test @ g_train.T)
            del g_train, g_test
    return scores.cpu()


def _shifted(progress: Progress, offset: int, total: int) -> Progress:
    """A progress callback that reports ``offset + done`` out of ``total``."""
    if progress is None:
        return None
    return lambda done, _total: report(progress, offset + done, total)
