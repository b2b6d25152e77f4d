"""LiSSA influence with the encoder-Gauss–Newton Hessian, run in Jacobian coordinates.

For ``model = decoder ∘ encoder`` the Hessian of one example's loss in the
encoder weights θe splits into

    H_i = J_iᵀ K_i J_i + Σ_k c_ik ∇²θ z_ik

with ``J_i = ∂z_i/∂θe`` the latent Jacobian, ``K_i = ∇²z loss(decoder(z), x_i)``
and ``c_i = ∇z loss``. The Gauss–Newton variant keeps the first term: the
encoder is linearised around its trained weights while the decoder and the
loss keep their exact curvature in the latent. That is the usual
generalised-Gauss–Newton choice of the influence-function literature; it drops
the encoder's own second derivatives, so the scores differ from the exact
LiSSA (the bench reports by how much).

Its point is speed. Every ``H_t`` is a combination of the rows of ``J_all``
(the ``N·d`` latent Jacobian rows of the Hessian data), so the LiSSA iterate of
any right-hand side ``g`` stays of the form ``v = β g + J_allᵀ α``: β is one
scalar shared by all right-hand sides and α has ``N·d`` entries. Each
iteration is then a product with a block of the Gram matrix ``J_all J_allᵀ``
instead of one double-backward pass per vector, and the recursion (same
minibatches, damping and scaling as the exact estimator) costs seconds. With
few right-hand sides (one test sample) the vectors are instead updated in
parameter space with the minibatch's Jacobian rows, which skips the Gram matrix.

Linear layers applied once to a vector per example keep their Jacobian rows as
factors (:class:`LatentJacobian`): ``∂z_ik/∂W = δ_ik a_iᵀ``, with ``a_i`` the
layer's input and ``δ_ik`` the gradient of latent unit ``k`` at its output, as
:mod:`.factored` does for gradients. A product with ``J_B`` then costs ``in·out``
per example instead of ``d·in·out`` per example, and the layer's ``N·d × in·out``
block is never stored; the scores are the same.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

from ..errors import ParameterError
from ._common import Progress, report
from .factored import FactorLayer, _batch_factors, factorable_linears, factored_names
from .gradients import LossFn

def latent_jacobians(encoder: nn.Module, params: dict[str, torch.Tensor], data: torch.Tensor,
                     batch_size: int = 64) -> torch.Tensor:
    """``∂z_i/∂θe`` of every row of ``data`` as one matrix ``(N·d, P)`` (rows example-major).

    ``params`` are the encoder's own parameter names (without ``encoder.``).
    """
    names = list(params)
    values = tuple(p.detach() for p in params.values())
    buffers = {name: b for name, b in encoder.named_buffers()}

    def latent(weights: tuple[torch.Tensor, ...], x: torch.Tensor) -> torch.Tensor:
        return functional_call(encoder, {**buffers, **dict(zip(names, weights))}, (x.unsqueeze(0),))[0]

    per_example = vmap(jacrev(latent), in_dims=(None, 0))
    out: torch.Tensor | None = None
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            jac = per_example(values, data[start : start + batch_size])
            n, d = jac[0].shape[:2]
            if out is None:  # preallocated: concatenating blocks would hold the Jacobian twice
                out = torch.empty(len(data) * d, sum(p.numel() for p in values), device=data.device)
            out[start * d : (start + n) * d] = torch.cat([j.reshape(n, d, -1) for j in jac], dim=2).reshape(n * d, -1)
            del jac
    assert out is not None, "latent_jacobians needs at least one row of data"
    return out


@dataclass
class FactorBlock:
    """One linear layer's Jacobian rows as factors: ``∂z_ik/∂W = δ_ik a_iᵀ`` (and ``δ_ik`` for its bias).

    ``columns`` ``(c, out)`` are the layer's parameter indices (weight, then the bias as a last input ``c``),
    ``inputs`` ``(N, c)`` the ``a_i`` (with a column of ones for the bias) and ``deltas`` ``(N, d, out)``.
    """

    columns: torch.Tensor
    inputs: torch.Tensor
    deltas: torch.Tensor


class LatentJacobian:
    """``∂z_i/∂θe`` of the Hessian data, ``(N·d, P)`` rows example-major, with linear layers as factors.

    The ``dense`` columns ``(N·d, P_dense)`` (``dense_columns`` their parameter indices, None: all ``P``) hold
    every parameter that is not in a :class:`FactorBlock`. Vectors are multiplied in an internal parameter order
    (:meth:`to_internal`): the dense columns first, then each block's ``(c, out)`` indices, so that every part of
    a vector is a contiguous slice.
    """

    def __init__(self, dense: torch.Tensor, latent_dim: int, n_params: int,
                 dense_columns: torch.Tensor | None = None, blocks: Sequence[FactorBlock] = ()) -> None:
        self.dense, self.latent_dim, self.n_params = dense, latent_dim, n_params
        self.blocks = list(blocks)
        self.n_rows = len(dense)
        self.n_examples = self.n_rows // latent_dim
        self.n_dense = dense.shape[1]
        self.order: torch.Tensor | None = None
        if self.blocks:
            assert dense_columns is not None, "dense_columns is needed beside factor blocks"
            self.order = torch.cat([dense_columns] + [b.columns.reshape(-1) for b in self.blocks])
        self._slices = []
        start = self.n_dense
        for block in self.blocks:
            self._slices.append(slice(start, start + block.columns.numel()))
            start += block.columns.numel()
        self._buffer = dense.new_empty(0)

    @property
    def device(self) -> torch.device:
        return self.dense.device

    def to_internal(self, g: torch.Tensor) -> torch.Tensor:
        """Parameter-space rows ``g`` ``(n, P)`` with their columns in the internal order."""
        return g if self.order is None else g[:, self.order]

    def product_macs(self, n_examples: float) -> float:
        """Multiply-adds of one ``J_B v`` (or ``J_Bᵀ y``) per vector, for ``n_examples`` examples in ``B``."""
        d = self.latent_dim
        per_example = d * self.n_dense + sum(b.columns.numel() + d * b.columns.shape[1] for b in self.blocks)
        return n_examples * per_example

    def gram_macs(self) -> float:
        """Multiply-adds of :meth:`gram`."""
        n, m = self.n_rows, self.n_examples
        return n * n * self.n_dense + sum(n * n * b.columns.shape[1] + m * m * b.columns.shape[0]
                                          for b in self.blocks)

    def rows(self, rows: torch.Tensor, unique: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """``J_B v`` ``(|B|·d, n)`` for the examples ``unique`` (their Jacobian rows ``rows``); ``v`` ``(P, n)``
        in the internal order."""
        if len(self._buffer) < len(rows):
            # one buffer for every step's rows: a fresh (|B|·d, P) tensor per step cost more in page faults than
            # the step's two products (measured 174 against 21 ms per gather for 1,068 rows × 43,428 parameters)
            self._buffer = self.dense.new_empty(len(rows), self.n_dense)
        j_b = torch.index_select(self.dense, 0, rows, out=self._buffer[:len(rows)])
        out = j_b @ v[:self.n_dense]
        n = v.shape[1]
        for block, part in zip(self.blocks, self._slices):
            c, width = block.columns.shape
            # (V a_i) for every example and vector as one GEMM, then δ_ik · (V a_i) per example
            va = (block.inputs[unique] @ v[part].reshape(c, width * n)).reshape(len(unique), width, n)
            out += torch.bmm(block.deltas[unique], va).reshape(len(rows), n)
        return out

    def transpose_rows(self, rows: torch.Tensor, unique: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``J_Bᵀ y`` ``(P, n)`` in the internal order for ``y`` ``(|B|·d, n)``; call right after :meth:`rows`
        with the same ``rows``."""
        j_b = self._buffer[:len(rows)]
        # (yᵀ J_B)ᵀ rather than J_Bᵀ y: the product through the transposed view was ~3× slower on CPU
        dense = (y.T @ j_b).T
        if not self.blocks:
            return dense
        n = y.shape[1]
        out = y.new_empty(self.n_params, n)
        out[:self.n_dense] = dense
        per_example = y.reshape(len(unique), self.latent_dim, n)
        for block, part in zip(self.blocks, self._slices):
            c, width = block.columns.shape
            weighted = torch.bmm(block.deltas[unique].transpose(1, 2), per_example)  # Σ_k δ_ik y_ik: (|B|, out, n)
            torch.mm(block.inputs[unique].T, weighted.reshape(len(unique), width * n),
                     out=out[part].view(c, width * n))
        return out

    def gram(self) -> torch.Tensor:
        """``J Jᵀ`` ``(N·d, N·d)``."""
        out = self.dense @ self.dense.T
        d = self.latent_dim
        for block in self.blocks:
            deltas = block.deltas.reshape(self.n_rows, -1)
            inputs = block.inputs @ block.inputs.T
            out += (deltas @ deltas.T) * inputs.repeat_interleave(d, 0).repeat_interleave(d, 1)
        return out

    def times(self, g: torch.Tensor, chunk: int = 64) -> torch.Tensor:
        """``J gᵀ`` ``(N·d, n)`` for parameter-space rows ``g`` ``(n, P)`` in the internal order, ``chunk`` rows
        of ``g`` at a time."""
        if not self.blocks:
            return self.dense @ g.T
        pieces = []
        for start in range(0, len(g), chunk):
            block_t = g[start : start + chunk].T.contiguous()
            out = self.dense @ block_t[:self.n_dense]
            for block, part in zip(self.blocks, self._slices):
                c, width = block.columns.shape
                n = block_t.shape[1]
                va = (block.inputs @ block_t[part].reshape(c, width * n)).reshape(self.n_examples, width, n)
                out += torch.bmm(block.deltas, va).reshape(self.n_rows, n)
            pieces.append(out)
        return torch.cat(pieces, dim=1)

    def to_dense(self) -> torch.Tensor:
        """The full ``(N·d, P)`` matrix in the original parameter order (tests and small models)."""
        if self.order is None:
            return self.dense.clone()
        internal = torch.cat([self.dense] + [
            torch.einsum("iko,ic->ikco", b.deltas, b.inputs).reshape(self.n_rows, -1) for b in self.blocks
        ], dim=1)
        out = torch.empty_like(internal)
        out[:, self.order] = internal
        return out


def jacobian_layout(encoder: nn.Module, params: dict[str, torch.Tensor],
                    probe: torch.Tensor) -> dict[str, FactorLayer]:
    """The encoder's linear layers whose Jacobian rows :func:`latent_jacobian` keeps as factors."""
    return factorable_linears(encoder, set(params), probe)


def jacobian_numbers(params: dict[str, torch.Tensor], layers: dict[str, FactorLayer], n_rows: int,
                     latent_dim: int) -> int:
    """Numbers :func:`latent_jacobian` stores for ``n_rows`` examples."""
    factored = factored_names(layers)
    dense = sum(p.numel() for name, p in params.items() if name not in factored)
    per_example = sum(m.in_features + int(bias) + latent_dim * m.out_features for m, bias in layers.values())
    return n_rows * (latent_dim * dense + per_example)


def latent_jacobian(encoder: nn.Module, params: dict[str, torch.Tensor], data: torch.Tensor,
                    batch_size: int = 64, layers: dict[str, FactorLayer] | None = None) -> LatentJacobian:
    """The latent Jacobian of every row of ``data``, its linear layers (``layers``, default
    :func:`jacobian_layout`) as factors and the other parameters as dense columns.

    ``params`` are the encoder's own parameter names (without ``encoder.``); the encoder must be in eval mode
    (examples of a batch do not interact, so one batched backward pass per latent unit gives every ``δ_ik``).
    """
    layers = jacobian_layout(encoder, params, data[:2]) if layers is None else layers
    factored = factored_names(layers)
    offsets, n_params = {}, 0
    for name, p in params.items():
        offsets[name] = torch.arange(n_params, n_params + p.numel(), device=data.device)
        n_params += p.numel()
    with torch.no_grad():
        d = int(encoder(data[:1]).shape[1])
    dense_params = {name: p for name, p in params.items() if name not in factored}
    if dense_params:
        dense = latent_jacobians(encoder, dense_params, data, batch_size)
    else:
        dense = torch.zeros(len(data) * d, 0, device=data.device)
    dense_columns = None if not factored else (
        torch.cat([offsets[name] for name in dense_params]) if dense_params
        else torch.zeros(0, dtype=torch.long, device=data.device)
    )
    blocks = []
    if layers:
        parts: list[list[list[tuple[torch.Tensor, torch.Tensor]]]] = []
        for start in range(0, len(data), batch_size):
            xb = data[start : start + batch_size]
            per_unit = [_batch_factors(encoder, xb, _latent_unit(k), layers)[0] for k in range(d)]
            parts.append(per_unit)
        for i, (name, (module, with_bias)) in enumerate(layers.items()):
            columns = offsets[f"{name}.weight"].reshape(module.out_features, module.in_features)
            if with_bias:
                columns = torch.cat([columns, offsets[f"{name}.bias"][:, None]], dim=1)
            columns = columns.T.contiguous()  # (c, out): a vector's part of the block is an (in, out) matrix
            inputs = torch.cat([unit[0][i][0] for unit in parts])
            deltas = torch.cat([torch.stack([unit[k][i][1] for k in range(d)], dim=1) for unit in parts])
            blocks.append(FactorBlock(columns, inputs, deltas))
    return LatentJacobian(dense, d, n_params, dense_columns, blocks)


def _latent_unit(k: int) -> LossFn:
    """``z ↦ z[:, k]`` as a per-example "loss": its gradient at a layer's output is ``δ_ik``."""
    def unit(z: torch.Tensor, _x: torch.Tensor) -> torch.Tensor:
        return z[:, k]
    return unit


def gauss_newton_bytes(jacobian_numbers: int, n_jacobian_rows: int, n_params: int, n_gradient_rows: int) -> int:
    """Bytes the Gauss–Newton estimator holds: the latent Jacobian, its Gram matrix and the gradient rows."""
    return 4 * (jacobian_numbers + n_jacobian_rows * n_jacobian_rows + n_gradient_rows * n_params)


def check_gauss_newton_memory(jacobian_numbers: int, n_rows: int, latent_dim: int, n_params: int,
                              n_gradient_rows: int, n_bytes: int) -> None:
    """Refuse runs whose Jacobian and gradients exceed the memory budget, naming the alternatives."""
    needed = gauss_newton_bytes(jacobian_numbers, n_rows * latent_dim, n_params, n_gradient_rows)
    if needed > n_bytes:
        raise ParameterError(
            f"hessian='gauss_newton' holds the latent Jacobian of {n_rows} examples × {latent_dim} latent units × "
            f"{n_params} encoder parameters and {n_gradient_rows} gradient rows ({needed / 2**20:.0f} MB), more "
            f"than max_memory_mb={n_bytes / 2**20:.0f}; raise max_memory_mb, use fewer Hessian examples "
            "or hessian='exact' (which streams its gradients within the budget)"
        )


def gauss_newton_lissa(
    jacobians: LatentJacobian | torch.Tensor,
    latent_hessians: torch.Tensor,
    g_train: torch.Tensor,
    g_test: torch.Tensor,
    batches: Sequence[torch.Tensor],
    damp: float,
    scale: float,
    n_scale: int,
    *,
    direction: str = "auto",
    route: str = "auto",
    progress: Progress = None,
    internal_order: bool = False,
) -> torch.Tensor:
    """Influence scores ``(n_test, n_train)`` of the Gauss–Newton LiSSA, divided by ``scale·n_scale``.

    Args:
        jacobians: the latent Jacobian of the Hessian data (:func:`latent_jacobian`, or its ``(N·d, P)`` rows).
        latent_hessians: ``(N, d, d)`` latent loss Hessians ``K_i``.
        g_train, g_test: per-example gradients ``(n, P)``.
        batches: one index tensor into the Hessian data per iteration (draws with replacement).
        direction: ``"train"`` (the recursion on the training gradients, as METHOD writes it),
            ``"test"`` (the transposed recursion on the test gradients: same scores) or ``"auto"``
            (the side with fewer vectors).
        route: ``"span"`` (Gram-matrix coordinates), ``"parameters"`` (explicit vectors) or
            ``"auto"`` (the one with fewer multiply-adds); both give the same scores.
        internal_order: the gradient rows' columns are already in the Jacobian's internal order
            (:meth:`LatentJacobian.to_internal`, which a caller can apply as it computes them, so that no copy in
            the parameters' order is held beside them).
    """
    if direction == "auto":
        direction = "test" if len(g_test) < len(g_train) else "train"
    d = latent_hessians.shape[1]
    if isinstance(jacobians, torch.Tensor):
        jacobians = LatentJacobian(jacobians, d, jacobians.shape[1])
    rhs = g_train if direction == "train" else g_test
    steps = [_batch_rows(idx, d, jacobians.device) for idx in batches]
    if direction == "test":
        steps = steps[::-1]
    examples_per_step = sum(len(unique) for _, unique, _ in steps) / max(1, len(steps))
    n_jac = jacobians.n_rows
    parameter_cost = 2 * len(steps) * jacobians.product_macs(examples_per_step) * len(rhs)
    gram_cost = jacobians.gram_macs() + len(steps) * examples_per_step * d * n_jac * len(rhs) \
        + jacobians.product_macs(jacobians.n_examples) * (len(g_train) + len(g_test))
    if route == "auto":
        route = "span" if gram_cost < parameter_cost else "parameters"
    if route not in ("span", "parameters"):
        raise ParameterError(f"route must be 'span', 'parameters' or 'auto', got {route!r}")
    solve = _solve_in_jacobian_span if route == "span" else _solve_in_parameter_space
    other = g_train if direction == "test" else g_test
    if not internal_order:
        rhs, other = jacobians.to_internal(rhs), jacobians.to_internal(other)
    scores = solve(jacobians, latent_hessians, rhs, other, steps, damp, scale, transposed=direction == "test",
                   progress=progress)
    scores = scores if direction == "train" else scores.T
    return scores / (scale * n_scale)


def _batch_rows(idx: torch.Tensor, d: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Jacobian rows, distinct examples and their weights (repeated draws merged) of one minibatch."""
    unique, counts = idx.unique(return_counts=True)
    unique = unique.to(device)
    rows = (unique[:, None] * d + torch.arange(d, device=device)).reshape(-1)
    return rows, unique, counts.to(device, torch.float32) / len(idx)


def _latent_product(jv: torch.Tensor, latent_hessians: torch.Tensor, unique: torch.Tensor,
                    weights: torch.Tensor) -> torch.Tensor:
    """``W K (J_B v)`` for rows ``jv`` ``(|B|·d, n)``, returned in the same layout."""
    d = latent_hessians.shape[1]
    blocks = jv.reshape(len(unique), d, -1)
    return (weights[:, None, None] * (latent_hessians[unique] @ blocks)).reshape(len(unique) * d, -1)


def _solve_in_parameter_space(jacobians: LatentJacobian, latent_hessians, rhs, other, steps, damp, scale, *,
                              transposed, progress):
    """The recursion on explicit vectors ``(P, n)``: cheap when there are few right-hand sides."""
    g = rhs.T
    v, acc = g.clone(), g.clone()
    for t, (rows, unique, weights) in enumerate(steps):
        jv = _latent_product(jacobians.rows(rows, unique, v), latent_hessians, unique, weights)
        hv = jacobians.transpose_rows(rows, unique, jv)
        v.mul_(1.0 - damp).sub_(hv, alpha=1.0 / scale)
        if transposed:
            acc.add_(v)
        else:
            v.add_(g)
        report(progress, t + 1, len(steps))
    return other @ (acc if transposed else v)


def _solve_in_jacobian_span(jacobians: LatentJacobian, latent_hessians, rhs, other, steps, damp, scale, *,
                            transposed, progress):
    """The recursion in coordinates ``v = β g + J_allᵀ α``: one Gram-matrix block product per iteration."""
    gram = jacobians.gram()
    phi_rhs = jacobians.times(rhs)
    alpha = torch.zeros_like(phi_rhs)
    beta = 1.0
    acc_alpha, acc_beta = torch.zeros_like(phi_rhs), 1.0
    for t, (rows, unique, weights) in enumerate(steps):
        jv = beta * phi_rhs[rows] + gram[rows] @ alpha
        hv = _latent_product(jv, latent_hessians, unique, weights)
        alpha.mul_(1.0 - damp)
        alpha[rows] -= hv / scale
        if transposed:
            beta = (1.0 - damp) * beta
            acc_alpha.add_(alpha)
            acc_beta += beta
        else:
            beta = 1.0 + (1.0 - damp) * beta
        report(progress, t + 1, len(steps))
    alpha, beta = (acc_alpha, acc_beta) if transposed else (alpha, beta)
    return beta * (other @ rhs.T) + jacobians.times(other).T @ alpha
