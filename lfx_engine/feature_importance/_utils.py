"""Helpers shared by the attribution entry points: eval-mode copies, seeding,
baseline formatting and batching."""
from __future__ import annotations

import contextlib
import copy
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from ..config import default_device
from ..errors import ParameterError

ProgressFn = Callable[[int, int], None]

#: Rows per forward pass that IG's ``internal_batch_size="auto"`` aims for.
IG_ROWS_PER_PASS = 2048


def resolve_device(device: torch.device | str | None) -> torch.device:
    """``device`` as a torch.device; None means :func:`lfx_engine.config.default_device`."""
    return default_device() if device is None else torch.device(device)


def module_device(module: nn.Module) -> torch.device | None:
    """Device of the module's first parameter or buffer (None if it has neither)."""
    for tensor in list(module.parameters()) + list(module.buffers()):
        return tensor.device
    return None


def _same_device(a: torch.device | None, b: torch.device) -> bool:
    if a is None:
        return True
    if a.type != b.type:
        return False
    if a.type == "cuda":
        ia = a.index if a.index is not None else torch.cuda.current_device()
        ib = b.index if b.index is not None else torch.cuda.current_device()
        return ia == ib
    return True


def eval_module(module: nn.Module, device: torch.device) -> nn.Module:
    """The module itself when it is in eval mode on ``device``; otherwise an eval copy.

    The caller's module is never switched to another mode or moved: a module with
    any submodule in training mode (BatchNorm/dropout would use batch statistics
    or noise), or one living on another device, is deep-copied, moved and put in
    eval mode. Parameters are never modified.
    """
    training = any(m.training for m in module.modules())
    if training or not _same_device(module_device(module), device):
        module = copy.deepcopy(module).to(device).eval()
        for p in module.parameters():
            p.requires_grad_(False)
    return module


@contextlib.contextmanager
def seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seed torch (CPU and ``device``) and numpy's global RNG; restore them afterwards.

    captum draws GradientShap's α and baseline indices from ``np.random`` and
    NoiseTunnel's noise from torch's global generator, so both are seeded.
    ``seed=None`` leaves the RNGs alone.
    """
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    np_state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=devices, device_type="cuda"):
            torch.manual_seed(seed)
            np.random.seed(seed % (2**32))
            yield
    finally:
        np.random.set_state(np_state)


@contextlib.contextmanager
def rnn_backward_ok(module: nn.Module, device: torch.device) -> Iterator[None]:
    """Disable cuDNN while explaining an RNN on CUDA.

    cuDNN's LSTM refuses a backward pass in eval mode ("cudnn RNN backward can
    only be called in training mode"); the native kernels do not. Note that
    ``torch.backends.cudnn.flags`` is process-wide while active.
    """
    if device.type == "cuda" and any(isinstance(m, nn.RNNBase) for m in module.modules()):
        with torch.backends.cudnn.flags(enabled=False):
            yield
    else:
        yield


def format_baselines(
    baselines: torch.Tensor | float | int | None, inputs: torch.Tensor
) -> torch.Tensor:
    """Baselines as a tensor of shape ``(1, *example)`` (shared) or ``(N, *example)``.

    Accepted: None (zeros), a scalar, an example-shaped tensor, a tensor
    broadcastable to ``(1, *example)``, or a per-example tensor ``(N, *example)``.
    """
    example = tuple(inputs.shape[1:])
    if baselines is None:
        return torch.zeros((1, *example), dtype=inputs.dtype)
    if not isinstance(baselines, torch.Tensor):
        return torch.full((1, *example), float(baselines), dtype=inputs.dtype)
    b = baselines.detach().to(dtype=inputs.dtype)
    if tuple(b.shape) == example:
        b = b.unsqueeze(0)
    n = inputs.shape[0]
    try:
        if b.dim() == inputs.dim() and b.shape[0] == n and n > 1:
            return torch.broadcast_to(b, tuple(inputs.shape))
        return torch.broadcast_to(b, (1, *example))
    except RuntimeError:
        pass
    raise ParameterError(
        f"baselines of shape {tuple(baselines.shape)} fit neither one example {example} "
        f"nor the batch {tuple(inputs.shape)}; pass (1,*shape), (N,*shape) or None for zeros"
    )


def baseline_rows(baselines: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """The baseline rows for examples ``start:stop`` (shared baselines stay one row)."""
    return baselines if baselines.shape[0] == 1 else baselines[start:stop]


def check_inputs(inputs: torch.Tensor, batch_size: int) -> None:
    """Reject non-tensors, scalars and non-positive batch sizes with a clear message."""
    if not isinstance(inputs, torch.Tensor):
        raise ParameterError("inputs must be a torch.Tensor of shape (N, ...)")
    if inputs.dim() < 2:
        raise ParameterError(f"inputs must have a batch axis, got shape {tuple(inputs.shape)}")
    if int(batch_size) < 1:
        raise ParameterError(f"batch_size must be positive, got {batch_size}")


def resolve_internal_batch_size(kwargs: dict, rows: int) -> None:
    """Replace IG's ``internal_batch_size="auto"`` by a row budget for ``rows`` inputs."""
    if kwargs.get("internal_batch_size") == "auto":
        n_steps = int(kwargs.get("n_steps", 50))
        kwargs["internal_batch_size"] = max(2 * rows, min(rows * n_steps, IG_ROWS_PER_PASS))


def chunks(n: int, batch_size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` pairs covering ``range(n)``, remainder included."""
    for start in range(0, n, batch_size):
        yield start, min(n, start + batch_size)


_DEEPLIFT_ATTRS = ("input", "output", "input_ref")


@contextlib.contextmanager
def no_leftover_hooks(module: nn.Module) -> Iterator[None]:
    """Guarantee that ``module`` leaves with the hooks and attributes it came with.

    captum's DeepLift registers forward/backward hooks on every non-linearity and
    stores ``input``/``output`` tensors on them; it removes the hooks itself in a
    ``finally``, but the tensors stay behind when a failure interrupts the
    backward pass. This removes anything added, even on exceptions.
    """
    mods = list(module.modules())
    hook_dicts = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
                  "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs",
                  "_forward_hooks_always_called")
    before_hooks = {
        (id(m), name): set(getattr(m, name).keys()) for m in mods for name in hook_dicts if hasattr(m, name)
    }
    before_attrs = {id(m): {a for a in _DEEPLIFT_ATTRS if a in m.__dict__} for m in mods}
    try:
        yield
    finally:
        for m in mods:
            for name in hook_dicts:
                if not hasattr(m, name):
                    continue
                d = getattr(m, name)
                for key in set(d.keys()) - before_hooks[(id(m), name)]:
                    d.pop(key, None)
            for a in _DEEPLIFT_ATTRS:
                if a in m.__dict__ and a not in before_attrs[id(m)]:
                    delattr(m, a)
