"""Per-example gradients of the pretext loss with respect to the encoder parameters.

The label-free loss of an example is ``L(x) = loss_fn(model(x), x)`` (per-example
mean MSE for images, mean L1 for ECG), evaluated in eval mode and
differentiated only with respect to the selected parameters (by default those
whose names start with ``encoder.``). Gradients are computed in batches with
``torch.func`` (``functional_call`` + ``vmap(grad)``); modules that ``vmap``
cannot batch fall back to a per-example autograd loop.
"""
from __future__ import annotations

import math
import warnings
from typing import Callable, Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from ..errors import ParameterError
from ._common import Progress, check_positive, eval_on, has_rnn, report, resolve_device

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ParamFilter = Callable[[str], bool]


def mse_per_example(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error of each example, shape ``(N,)`` (MNIST/CIFAR pretext loss)."""
    return (output - target).square().reshape(len(output), -1).mean(dim=1)


def l1_per_example(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error of each example, shape ``(N,)`` (ECG pretext loss)."""
    return (output - target).abs().reshape(len(output), -1).mean(dim=1)


def is_encoder_param(name: str) -> bool:
    """Default parameter filter: the encoder's parameters (``encoder.*``)."""
    return name.startswith("encoder.")


def selected_parameters(model: nn.Module, param_filter: ParamFilter = is_encoder_param) -> dict[str, torch.Tensor]:
    """The model's parameters kept by ``param_filter``, in ``named_parameters`` order."""
    params: dict[str, torch.Tensor] = {name: p for name, p in model.named_parameters() if param_filter(name)}
    if not params:
        raise ParameterError(
            "no parameter matches the parameter filter; the model needs an `encoder` "
            "submodule whose parameters are named 'encoder.*' (or pass param_filter)"
        )
    return params


def frozen_parameters(model: nn.Module, selected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached copies of the parameters not in ``selected`` (constants for torch.func calls)."""
    return {name: p.detach() for name, p in model.named_parameters() if name not in selected}


def flatten(tensors: dict[str, torch.Tensor] | Sequence[torch.Tensor], batched: bool = False) -> torch.Tensor:
    """Concatenate tensors into one vector (or one row per example when ``batched``)."""
    values = list(tensors.values()) if isinstance(tensors, dict) else list(tensors)
    if batched:
        return torch.cat([t.reshape(len(t), -1) for t in values], dim=1)
    return torch.cat([t.reshape(-1) for t in values])


class RandomProjection:
    """Seeded Gaussian projection ``R ∈ R^{P×k}`` with N(0, 1/k) entries (Johnson–Lindenstrauss).

    The same (seed, P, k) always gives the same matrix, so train and test
    gradients projected separately remain comparable.
    """

    def __init__(self, n_params: int, dim: int, seed: int = 0, device: torch.device | str = "cpu") -> None:
        check_positive(dim=dim)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        self.matrix = (torch.randn(n_params, dim, generator=generator) / math.sqrt(dim)).to(device)

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        return rows @ self.matrix.to(rows.device)


def per_example_grads(
    model: nn.Module,
    x: torch.Tensor,
    loss_fn: LossFn = mse_per_example,
    param_filter: ParamFilter = is_encoder_param,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    projection_dim: int | None = None,
    projection_seed: int = 0,
    progress: Progress = None,
    method: str = "auto",
) -> torch.Tensor:
    """Per-example loss gradients as a float32 CPU matrix ``(N, P)`` (or ``(N, projection_dim)``).

    ``method`` is ``"vmap"`` (torch.func), ``"loop"`` (one autograd call per
    example) or ``"auto"``: the loop for recurrent models (vmap has no batching
    rule for the CPU LSTM kernel and runs ~50× slower there), otherwise vmap,
    falling back to the loop if vmap fails.
    The model runs in eval mode; its mode and device are restored afterwards.
    """
    dev = resolve_device(device, model)
    with eval_on(model, dev):
        return _grads_on_device(
            model, x, loss_fn, param_filter, batch_size, dev, projection_dim, projection_seed, progress, method
        ).cpu()


def summed_loss(model: nn.Module, loss_fn: LossFn, weights: dict[str, torch.Tensor],
                xb: torch.Tensor) -> torch.Tensor:
    """The pretext loss of the batch ``xb``, summed, with ``model`` run on ``weights`` (``functional_call``): the
    function every per-example gradient here differentiates."""
    return loss_fn(functional_call(model, weights, (xb,), strict=False), xb).sum()


def stack_states(states: Sequence[Mapping[str, torch.Tensor]], device: torch.device) -> dict[str, torch.Tensor]:
    """Several state dicts of one model (e.g. TracIn checkpoints) as one dict of tensors stacked along dim 0."""
    return {key: torch.stack([state[key] for state in states]).to(device) for key in states[0]}


def grads_at_weights(model: nn.Module, stacked: dict[str, torch.Tensor], x: torch.Tensor, loss_fn: LossFn,
                     names: Sequence[str]) -> torch.Tensor | None:
    """One example's loss gradient at each of ``C`` weight sets, ``(C, P)`` in ``names`` order, from one
    vmapped forward and backward pass (``stacked``: :func:`stack_states`; the model in eval mode).

    A query against a fitted TracIn index takes the gradient at every checkpoint: vmapped over the
    checkpoints they cost one pass instead of ``C`` module walks. None where ``vmap`` cannot batch the model
    (recurrent layers; the caller then loads each weight set in turn).
    """
    if has_rnn(model):
        return None
    selected = {name: stacked[name] for name in names}
    rest = {name: value for name, value in stacked.items() if name not in selected}

    def example_loss(params: dict[str, torch.Tensor], others: dict[str, torch.Tensor],
                     xi: torch.Tensor) -> torch.Tensor:
        return summed_loss(model, loss_fn, {**others, **params}, xi.unsqueeze(0))

    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.filterwarnings("ignore", message=".*batching rule.*")
            out = vmap(grad(example_loss), in_dims=(0, 0, None))(selected, rest, x)
    except (RuntimeError, NotImplementedError, ValueError):
        return None
    return torch.cat([out[name].reshape(len(out[name]), -1) for name in names], dim=1)


def _grads_on_device(
    model: nn.Module,
    x: torch.Tensor,
    loss_fn: LossFn,
    param_filter: ParamFilter,
    batch_size: int,
    device: torch.device,
    projection_dim: int | None = None,
    projection_seed: int = 0,
    progress: Progress = None,
    method: str = "auto",
) -> torch.Tensor:
    """Per-example gradients on ``device``; the model must already be in eval mode there."""
    check_positive(batch_size=batch_size, projection_dim=projection_dim)
    if method not in ("auto", "vmap", "loop"):
        raise ParameterError(f"method must be 'auto', 'vmap' or 'loop', got {method!r}")
    params = {name: p.detach() for name, p in selected_parameters(model, param_filter).items()}
    frozen = frozen_parameters(model, params)
    n_params = sum(p.numel() for p in params.values())
    project = RandomProjection(n_params, projection_dim, projection_seed, device) if projection_dim else None
    width = projection_dim or n_params
    out = torch.empty(len(x), width, dtype=torch.float32, device=device)

    def example_loss(p: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
        return summed_loss(model, loss_fn, {**frozen, **p}, xi.unsqueeze(0))

    batched = vmap(grad(example_loss), in_dims=(None, 0))
    use_vmap = method == "vmap" or (method == "auto" and not has_rnn(model))
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(device)
        rows = None
        # one example (a query): a plain autograd call is 2-3x faster than vmap's setup (measured 1.9 vs 4.5 ms)
        if use_vmap and (method == "vmap" or len(xb) > 1):
            try:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*batching rule.*")
                    with torch.no_grad():
                        rows = flatten(batched(params, xb), batched=True)
            except (RuntimeError, NotImplementedError, ValueError) as exc:
                if method == "vmap":
                    raise
                warnings.warn(f"vmap failed ({exc.__class__.__name__}); falling back to a loop", stacklevel=2)
                use_vmap = False
        if rows is None:
            rows = _loop_grads(model, params, frozen, xb, loss_fn)
        out[start : start + len(xb)] = project(rows.float()) if project else rows.float()
        report(progress, min(start + batch_size, len(x)), len(x))
    return out


def _loop_grads(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    frozen: dict[str, torch.Tensor],
    xb: torch.Tensor,
    loss_fn: LossFn,
) -> torch.Tensor:
    """Per-example gradients by one autograd call per example (the vmap fallback)."""
    leaves = {name: p.detach().requires_grad_(True) for name, p in params.items()}
    rows = []
    with torch.enable_grad():
        for i in range(len(xb)):
            xi = xb[i : i + 1]
            loss = summed_loss(model, loss_fn, {**frozen, **leaves}, xi)
            grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True, materialize_grads=True)
            rows.append(flatten(grads))
    return torch.stack(rows)
