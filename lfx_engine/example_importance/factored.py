"""Per-example gradients with the linear layers kept as factors, for exact gradient dot products.

For an ``nn.Linear`` applied once to a batch of vectors, example ``i``'s weight
gradient is the outer product ``δ_i a_iᵀ`` of the gradient at the layer's
output and its input (and ``δ_i`` for the bias). Two such gradients have the
dot product ``(δ_i·δ_j)(a_i·a_j + 1)`` (without the ``+ 1`` when only the weight
is explained, as TracInCPFast's final-layer weights), so the layer needs
``in + out + 1`` numbers per example instead of ``in × out``. TracIn only needs dot products:
keeping the linear layers in this form and only the other parameters (conv,
norm, recurrent) as explicit rows shrinks each row about sevenfold for the
MNIST encoder, so many more rows fit in a memory budget, with the same scores.

The factors come from one batched forward and backward pass: in eval mode the
examples of a batch do not interact, so row ``i`` of the gradient of the summed
loss at a layer's output is example ``i``'s own ``δ_i``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

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


class FactorLayer(NamedTuple):
    """A linear layer kept as factors, and whether its bias is among the explained parameters."""

    module: nn.Linear
    with_bias: bool


def pairwise(left: torch.Tensor | FactoredRows, right: torch.Tensor | FactoredRows) -> torch.Tensor:
    """Dot products of every row of ``left`` with every row of ``right``."""
    # both sides come from the same feature map: both factored or both plain tensors
    if isinstance(left, FactoredRows):
        assert isinstance(right, FactoredRows)
        return left.gram(right)
    assert isinstance(right, torch.Tensor)
    return left @ right.T


def factored_names(layers: dict[str, FactorLayer]) -> set[str]:
    """Names of the parameters that ``layers`` hold (kept as factors, not as explicit columns)."""
    return {f"{name}.weight" for name in layers} | {f"{name}.bias" for name, layer in layers.items()
                                                   if layer.with_bias}


def row_width(n_dense: int, layers: list[FactorLayer]) -> int:
    """Numbers stored per example: the dense columns and each layer's ``in (+ 1 for the bias) + out``."""
    return n_dense + sum(m.in_features + int(with_bias) + m.out_features for m, with_bias in layers)


def factorable_linears(model: nn.Module, names: set[str], probe: torch.Tensor) -> dict[str, FactorLayer]:
    """The ``nn.Linear`` modules whose weight is in ``names`` (their bias with it, or left out) and that run
    once on ``(B, in)`` inputs."""
    candidates = {}
    for mname, module in model.named_modules():
        if type(module) is not nn.Linear or f"{mname}.weight" not in names:
            continue
        candidates[mname] = FactorLayer(module, module.bias is not None and f"{mname}.bias" in names)
    calls: dict[str, list[tuple[int, int]]] = {name: [] for name in candidates}
    handles = [m.register_forward_hook(lambda m, inp, out, n=name: calls[n].append((inp[0].dim(), out.dim())))
               for name, (m, _) in candidates.items()]
    try:
        with torch.no_grad():
            model(probe)
    finally:
        for handle in handles:
            handle.remove()
    return {name: layer for name, layer in candidates.items() if calls[name] == [(2, 2)]}


def factored_grads(model: nn.Module, x: torch.Tensor, loss_fn: LossFn, param_filter: ParamFilter,
                   layers: dict[str, FactorLayer], batch_size: int, device: torch.device) -> FactoredRows:
    """Per-example loss gradients of ``x`` with ``layers`` as factors; the model must be in eval mode."""
    factored = factored_names(layers)
    if len(x) == 1:  # a query: one pass gives both parts
        single = _one_example(model, x.to(device), loss_fn, param_filter, factored, layers)
        if single is not None:
            return single
    if _has_other(model, param_filter, factored):
        dense = _grads_on_device(model, x, loss_fn, lambda n: param_filter(n) and n not in factored, batch_size,
                                 device)
    else:
        dense = torch.zeros(len(x), 0, device=device)
    pieces: list[list[tuple[torch.Tensor, torch.Tensor]]] = []
    for start in range(0, len(x), batch_size):
        pieces.append(_batch_factors(model, x[start : start + batch_size].to(device), loss_fn, layers)[0])
    factors = [(torch.cat([p[k][0] for p in pieces]), torch.cat([p[k][1] for p in pieces]))
               for k in range(len(layers))]
    return FactoredRows(dense.float(), factors)


def _has_other(model: nn.Module, param_filter: ParamFilter, factored: set[str]) -> bool:
    return any(param_filter(n) and n not in factored for n, _ in model.named_parameters())


def _one_example(model: nn.Module, xb: torch.Tensor, loss_fn: LossFn, param_filter: ParamFilter,
                 factored: set[str], layers: dict[str, FactorLayer]) -> FactoredRows | None:
    """One example's dense gradient and layer factors from a single forward and backward pass (a batch takes two:
    per-example dense gradients, then the factors); None when a dense parameter does not require a gradient."""
    dense = [p for n, p in model.named_parameters() if param_filter(n) and n not in factored]
    if not all(p.requires_grad for p in dense):
        return None
    factors, grads = _batch_factors(model, xb, loss_fn, layers, dense)
    parts = [(g if g is not None else torch.zeros_like(p)).reshape(-1).float() for p, g in zip(dense, grads)]
    row = torch.cat(parts)[None] if parts else torch.zeros(1, 0, device=xb.device)
    return FactoredRows(row, factors)


def _batch_factors(model: nn.Module, xb: torch.Tensor, loss_fn: LossFn, layers: dict[str, FactorLayer],
                   also: Sequence[torch.Tensor] = (),
                   ) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], list[torch.Tensor | None]]:
    """``(inputs [with a column of ones for an explained bias], output gradients)`` of each layer for one batch,
    and the summed loss's gradients with respect to the tensors ``also`` (parameters) from the same pass."""
    inputs: dict[str, torch.Tensor] = {}
    outputs: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def capture(module: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            inputs[name], outputs[name] = inp[0].detach(), out
        return capture

    handles = [m.register_forward_hook(hook(name)) for name, (m, _) in layers.items()]
    try:
        with torch.enable_grad():
            xg = xb.detach().requires_grad_(xb.is_floating_point())
            loss = loss_fn(model(xg), xg.detach()).sum()
            found = torch.autograd.grad(loss, [outputs[name] for name in layers] + list(also), allow_unused=True)
            deltas, extra = found[:len(layers)], list(found[len(layers):])
    finally:
        for handle in handles:
            handle.remove()
    result = []
    for (name, (_, with_bias)), delta in zip(layers.items(), deltas):
        a = inputs[name].float()
        if with_bias:
            a = torch.cat([a, torch.ones(len(a), 1, device=a.device)], dim=1)
        d = torch.zeros_like(outputs[name]) if delta is None else delta
        result.append((a, d.detach().float()))
    return result, [g.detach() if g is not None else None for g in extra]
