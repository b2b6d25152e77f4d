"""Helpers shared by the example-importance modules: devices, model state, progress."""
from __future__ import annotations

import contextlib
import copy
import itertools
from typing import Callable, Iterator

import torch
from torch import nn

from ..errors import ParameterError

Progress = Callable[[int, int], None] | None


def resolve_device(device: torch.device | str | None, model: nn.Module | None = None) -> torch.device:
    """The device to compute on: the argument, else the model's device, else the CPU."""
    if device is not None:
        return torch.device(device)
    if model is not None:
        for tensor in list(model.parameters()) + list(model.buffers()):
            return tensor.device
    return torch.device("cpu")


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter or buffer (CPU for an empty module)."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


def has_rnn(model: nn.Module) -> bool:
    """Whether the model holds a recurrent layer (cuDNN RNNs lack double backward)."""
    return any(isinstance(m, nn.RNNBase) for m in model.modules())


@contextlib.contextmanager
def eval_on(model: nn.Module, device: torch.device, restore_weights: bool = False) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode on ``device``; restore modes, device (and weights) on exit.

    With ``restore_weights`` a deep copy of the state dict is taken first and loaded
    back afterwards, so callers may load other checkpoints inside the block.
    """
    modes = {name: m.training for name, m in model.named_modules()}
    old_device = model_device(model)
    # ``Module.to`` walks every submodule even when nothing moves: a query's share was measurable (~1 ms)
    move = any(t.device != device for t in itertools.chain(model.parameters(), model.buffers()))
    saved = copy.deepcopy(model.state_dict()) if restore_weights else None
    try:
        if move:
            model.to(device)
        model.eval()
        flags = (
            torch.backends.cudnn.flags(enabled=False)
            if device.type == "cuda" and has_rnn(model)
            else contextlib.nullcontext()
        )
        with flags:
            yield model
    finally:
        if saved is not None:
            model.load_state_dict(saved)
        if move:
            model.to(old_device)
        for name, m in model.named_modules():
            m.training = modes.get(name, m.training)


def check_positive(**values: int | float | None) -> None:
    """Raise ParameterError for any given value that is not > 0 (None is allowed)."""
    for name, value in values.items():
        if value is not None and not value > 0:
            raise ParameterError(f"{name} must be positive, got {value!r}")


def check_2d(name: str, tensor: torch.Tensor) -> None:
    """Raise ParameterError unless ``tensor`` is a (N, d) matrix."""
    if tensor.dim() != 2:
        raise ParameterError(f"{name} must be a (N, d) matrix of latents, got shape {tuple(tensor.shape)}")


def report(progress: Progress, done: int, total: int) -> None:
    """Call the progress callback if there is one."""
    if progress is not None:
        progress(done, total)
