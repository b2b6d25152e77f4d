"""Per-example gradients with the linear layers kept as factors, for exact gradient dot products.

For an ``nn.Linear`` applied once to a batch of vectors, example ``i``'s weight
gradient is the outer product ``δ_i a_iᵀ`` of the gradient at the layer's
output and its input (and ``δ_i`` for the bias). Two such gradients have the
dot product ``(δ_i·δ_j)(a_i·a_j + 1)``, so the layer needs ``in + out + 1``
numbers per example instead of ``in × out``. TracIn only needs dot products:
keeping the linear layers in this form and only the other parameters (conv,
norm, recurrent) as explicit rows shrinks each row about sevenfold for the
MNIST encoder, so many more rows fit in a memory budget, with the same scores.

The factors come from one batched forward and backward pass: in eval mode the
examples of a batch do not interact, so row ``i`` of the gradient of the summed
loss at a layer's output is example ``i``'s own ``δ_i``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .gradients import LossFn, ParamFilter, _grads_on_device


@dataclass
class FactoredRows:
    """Per-example gradient rows: explicit ``dense`` columns plus one ``(inputs, output grads)`` pair per layer."""

    dense: torch.Tensor
    factors: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.dense)

    def gram(self, other: "FactoredRows") -> torch.Tensor:
        """``G_self G_otherᵀ`` ``(len(self), len(other))`` from the dense part and the layer factors."""
        out = self.dense @ other.dense.T
        for (a_left, d_left), (a_right, d_right) in zip(self.factors, other.factors):
            out += (d_left @ d_right.T) * (a_left @ a_right.T)
        return out


def pairwise(left: torch.Tensor | FactoredRows, right: torch.Tensor | FactoredRows) -> torch.Tensor:
    """Dot products of every row of ``left`` with every row of ``right``."""
    if isinstance(left, FactoredRows):
        return left.gram(right)
    return left @ right.T


def factored_names(layers: dict[str, nn.Linear]) -> set[str]:
    """Names of the parameters that ``layers`` hold (kept as factors, not as explicit columns)."""
    return {f"{name}.{p}" for name, m in layers.items() for p, _ in m.named_parameters(recurse=False)}


def row_width(n_dense: int, layers: list[nn.Linear]) -> int:
    """Numbers stored per example: the dense columns and each layer's ``in + 1 + out``."""
    return n_dense + sum(m.in_features + 1 + m.out_features for m in layers)


def factorable_linears(model: nn.Module, names: set[str], probe: torch.Tensor) -> dict[str, nn.Linear]:
    """The ``nn.Linear`` modules whose parameters are all in ``names`` and that run once on ``(B, in)`` inputs."""
    candidates = {}
    for mname, module in model.named_modules():
        if type(module) is not nn.Linear:
            continue
        own = {f"{mname}.{p}" for p, _ in module.named_parameters(recurse=False)}
        if own and own <= names:
            candidates[mname] = module
    calls: dict[str, list[tuple[int, int]]] = {name: [] for name in candidates}
    handles = [m.register_forward_hook(lambda m, inp, out, n=name: calls[n].append((inp[0].dim(), out.dim())))
               for name, m in candidates.items()]
    try:
        with torch.no_grad():
            model(probe)
    finally:
        for handle in handles:
            handle.remove()
    return {name: m for name, m in candidates.items() if calls[name] == [(2, 2)]}


def factored_grads(model: nn.Module, x: torch.Tensor, loss_fn: LossFn, param_filter: ParamFilter,
                   layers: dict[str, nn.Linear], batch_size: int, device: torch.device) -> FactoredRows:
    """Per-example loss gradients of ``x`` with ``layers`` as factors; the model must be in eval mode."""
    factored = factored_names(layers)
    if _has_other(model, param_filter, factored):
        dense = _grads_on_device(model, x, loss_fn, lambda n: param_filter(n) and n not in factored, batch_size,
                                 device)
    else:
        dense = torch.zeros(len(x), 0, device=device)
    pieces: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
    for start in range(0, len(x), batch_size):
        pieces.append(_batch_factors(model, x[start : start + batch_size].to(device), loss_fn, layers))
    factors = [(torch.cat([p[k][0] for p in pieces]), torch.cat([p[k][1] for p in pieces]))
               for k in range(len(layers))]
    return FactoredRows(dense.float(), factors)


def _has_other(model: nn.Module, param_filter: ParamFilter, factored: set[str]) -> bool:
    return any(param_filter(n) and n not in factored for n, _ in model.named_parameters())


def _batch_factors(model: nn.Module, xb: torch.Tensor, loss_fn: LossFn,
                   layers: dict[str, nn.Linear]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(inputs [with a column of ones for the bias], output gradients)`` of each layer for one batch."""
    inputs: dict[str, torch.Tensor] = {}
    outputs: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def capture(module: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            inputs[name], outputs[name] = inp[0].detach(), out
        return capture

    handles = [m.register_forward_hook(hook(name)) for name, m in layers.items()]
    try:
        with torch.enable_grad():
            xg = xb.detach().requires_grad_(xb.is_floating_point())
            loss = loss_fn(model(xg), xg.detach()).sum()
            deltas = torch.autograd.grad(loss, [outputs[name] for name in layers], allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
    result = []
    for (name, module), delta in zip(layers.items(), deltas):
        a = inputs[name].float()
        if module.bias is not None:
            a = torch.cat([a, torch.ones(len(a), 1, device=a.device)], dim=1)
        d = torch.zeros_like(outputs[name]) if delta is None else delta
        result.append((a, d.detach().float()))
    return result
