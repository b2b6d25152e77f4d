"""Influence functions with the LiSSA inverse-Hessian-vector-product estimate (METHOD §3).

For every right-hand side ``g = ∇θe L(x_train)`` the recursion

    v₀ = g,   v ← g + (1 − damp)·v − H_t v / scale   (t = 0 … depth−1)

runs with one fresh minibatch ``B_t`` (drawn with replacement) per iteration,
``H_t`` being the Hessian of the mean loss over ``B_t``; then
``v ← v / (scale · n_train)`` and ``S[test, train] = ∇θe L(x_test) · v_train``
(no minus sign). Its fixed point is ``scale·(H + damp·scale·I)⁻¹ g``.

Speed-ups that leave the estimate unchanged:

* all right-hand sides share the minibatch sequence (as in the earlier
  in-memory code), so each iteration builds the first-order gradient graph once
  and takes the HVPs of every vector against it (double backprop, optionally
  batched with ``is_grads_batched``); repeated draws are merged into weights;
* ``direction="test"`` runs the transposed recursion on the test gradients
  (``u ← A_t u`` over the minibatches in reverse order, summing the ``u``),
  which gives the same matrix with ``n_test`` instead of ``n_train`` vectors;
* ``hvp_mode="latent"`` (for ``model = decoder ∘ encoder``) replaces each
  example's loss by its second-order Taylor expansion in the latent,
  ``c·(z − z₀) + ½ (z − z₀)ᵀ K (z − z₀)`` with ``c, K`` the latent gradient and
  Hessian of ``loss(decoder(z), x)``; its Hessian in θe equals the true one
  exactly, but each HVP only runs the encoder.
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Sequence
from typing import cast

import torch
from torch import nn
from torch.func import functional_call, grad, jacrev, jvp, vmap

from ..errors import ParameterError
from ._common import Progress, check_positive, eval_on, has_rnn, report, resolve_device
from .gauss_newton import (
    check_gauss_newton_memory,
    gauss_newton_bytes,
    gauss_newton_lissa,
    jacobian_layout,
    jacobian_numbers,
    latent_jacobian,
)
from .gradients import (
    LossFn,
    ParamFilter,
    _grads_on_device,
    frozen_parameters,
    is_encoder_param,
    mse_per_example,
    selected_parameters,
)
from .streaming import BlockPlan, GradientRows, budget_bytes


def draw_minibatches(n_data: int, minibatch_size: int, depth: int, seed: int = 0) -> list[torch.Tensor]:
    """``depth`` index tensors of ``minibatch_size`` draws with replacement from ``range(n_data)``."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, n_data, (minibatch_size,), generator=generator) for _ in range(depth)]


def latent_curvature(model: nn.Module, data: torch.Tensor, loss_fn: LossFn,
                     batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Latents ``z₀ = encoder(x)``, latent loss gradients ``c`` and Hessians ``K`` ``(N, d, d)`` of every row.

    The loss is seen as a function of the latent, ``z ↦ loss_fn(decoder(z), x)``: its curvature is what the
    encoder-Gauss–Newton Hessian ``JᵀKJ`` keeps (see :mod:`.gauss_newton`).
    """
    encoder, decoder = cast(nn.Module, model.encoder), cast(nn.Module, model.decoder)

    def latent_loss(z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return loss_fn(decoder(z.unsqueeze(0)), x.unsqueeze(0)).sum()

    z0, c, k = [], [], []
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            xb = data[start : start + batch_size]
            zb = encoder(xb).detach()
            c.append(vmap(grad(latent_loss))(zb, xb))
            k.append(vmap(jacrev(jacrev(latent_loss)))(zb, xb))
            z0.append(zb)
    return torch.cat(z0), torch.cat(c), torch.cat(k)


class BatchHessian:
    """Hessian–vector products of the mean pretext loss over one minibatch, for many vectors.

    ``bind(indices)`` builds the first-order gradient graph of the minibatch once;
    ``apply(V)`` returns ``V H`` for a matrix ``V`` of row vectors ``(m, P)``.
    With ``max_graph_bytes`` a minibatch whose graph would not fit is split:
    ``apply`` then builds the graph of one part at a time and sums the parts'
    HVPs (the Hessian is a weighted sum over examples), the same result for one
    more forward and backward pass per part.

    In latent mode the HVPs are taken forward-over-reverse (``jvp`` of ``grad``), vmapped over as many vectors
    as the graph budget allows: about 20 % less CPU time than one double backward per vector on the MNIST
    encoder, the same products. A model that ``torch.func`` cannot transform falls back to the double backward.
    """

    def __init__(
        self,
        model: nn.Module,
        params: dict[str, torch.Tensor],
        data: torch.Tensor,
        loss_fn: LossFn,
        mode: str = "full",
        hvp_batch: int = 1,
        latent_batch_size: int = 64,
        max_graph_bytes: int | None = None,
    ) -> None:
        self.model, self.data, self.loss_fn, self.mode = model, data, loss_fn, mode
        self.names = list(params)
        self.shapes = [p.shape for p in params.values()]
        self.sizes = [p.numel() for p in params.values()]
        self.base = {name: p.detach() for name, p in params.items()}
        self.frozen = frozen_parameters(model, params)
        self.hvp_batch = hvp_batch
        # The oneDNN CPU LSTM kernel's double backward is ~2× slower than the native one.
        self._slow_rnn = data.device.type == "cpu" and has_rnn(model)
        self._grads: list[torch.Tensor] = []
        self._leaves: list[torch.Tensor] = []
        self._active: list[int] = []
        self._parts: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._bound: tuple[torch.Tensor, torch.Tensor] | None = None
        self.forward_over_reverse = mode == "latent" and not has_rnn(model)
        self.graph_examples: int | None = None
        if mode == "latent":
            self._prepare_latent(latent_batch_size)
        if max_graph_bytes is not None:
            per_example = self.graph_bytes_per_example()
            # the HVP's backward allocates about as much again as the graph it runs through
            self.graph_examples = max(1, max_graph_bytes // max(1, 2 * per_example))

    def graph_bytes_per_example(self, n_probe: int = 4) -> int:
        """Bytes the autograd graph of :meth:`bind` saves per example (distinct storages, measured on a probe)."""
        seen: dict[int, int] = {}

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            storage = tensor.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
            return tensor

        probe = torch.arange(min(n_probe, len(self.data)))
        functional, self.forward_over_reverse = self.forward_over_reverse, False  # measure the autograd graph
        try:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
                self._build(probe, torch.full((len(probe),), 1.0 / len(probe), device=self.data.device))
        finally:
            self.forward_over_reverse = functional
        self._grads, self._leaves, self._active, self._bound = [], [], [], None
        return -(-sum(seen.values()) // len(probe))

    # -- latent surrogate -------------------------------------------------
    def _prepare_latent(self, batch_size: int) -> None:
        """Latents ``z₀``, latent loss gradients ``c`` and Hessians ``K`` of all data rows."""
        self.z0, self.c, self.k = latent_curvature(self.model, self.data, self.loss_fn, batch_size)
        self.enc_names = [name[len("encoder.") :] for name in self.names]
        self.enc_frozen = {
            name[len("encoder.") :]: p for name, p in self.frozen.items() if name.startswith("encoder.")
        }

    def _example_losses(self, leaves: list[torch.Tensor], idx: torch.Tensor) -> torch.Tensor:
        """Per-example losses (or their latent surrogates) of the rows ``idx``, as functions of ``leaves``."""
        xb = self.data[idx]
        if self.mode == "latent":
            weights = {**self.enc_frozen, **dict(zip(self.enc_names, leaves))}
            z = functional_call(cast(nn.Module, self.model.encoder), weights, (xb,), strict=False)
            dz = z - self.z0[idx]
            return (self.c[idx] * dz).sum(1) + 0.5 * torch.einsum("bi,bij,bj->b", dz, self.k[idx], dz)
        out = functional_call(self.model, {**self.frozen, **dict(zip(self.names, leaves))}, (xb,), strict=False)
        return self.loss_fn(out, xb)

    # -- HVPs -------------------------------------------------------------
    @contextlib.contextmanager
    def _kernels(self):
        """Native (not oneDNN) kernels for CPU RNNs while building or differentiating the graph."""
        if not self._slow_rnn:
            yield
            return
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*TF32 acceleration on top of oneDNN.*")
            with torch.backends.mkldnn.flags(enabled=False):
                yield

    def bind(self, indices: torch.Tensor) -> None:
        """Build the gradient graph of the mean loss over the minibatch ``indices`` (or plan its parts)."""
        unique, counts = indices.unique(return_counts=True)
        unique = unique.to(self.data.device)
        weights = counts.to(self.data.device, torch.float32) / len(indices)
        if self.graph_examples is not None and len(unique) > self.graph_examples:
            self._parts = list(zip(unique.split(self.graph_examples), weights.split(self.graph_examples)))
            self._grads, self._leaves, self._active = [], [], []
            return
        self._parts = []
        self._build(unique, weights)

    def _build(self, unique: torch.Tensor, weights: torch.Tensor) -> None:
        """The first-order gradient graph of ``Σ weights · loss(unique)`` (forward-over-reverse: the minibatch)."""
        self._bound = (unique, weights)
        if self.forward_over_reverse:
            return
        self._leaves = [p.clone().requires_grad_(True) for p in self.base.values()]
        with torch.enable_grad(), self._kernels():
            loss = (weights * self._example_losses(self._leaves, unique)).sum()
            grads = torch.autograd.grad(loss, self._leaves, create_graph=True, allow_unused=True)
        # Entries whose gradient is constant have zero Hessian rows and columns.
        self._active = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
        self._grads = [grads[i] for i in self._active]

    def apply(self, vectors: torch.Tensor) -> torch.Tensor:
        """``H v`` for every row ``v`` of ``vectors`` ``(m, P)``; returns ``(m, P)``."""
        if self._parts:
            out = torch.zeros_like(vectors)
            for unique, weights in self._parts:
                self._build(unique, weights)
                out += self._apply_bound(vectors)
            self._grads, self._leaves, self._active = [], [], []
            return out
        return self._apply_bound(vectors)

    def _apply_bound(self, vectors: torch.Tensor) -> torch.Tensor:
        if self.forward_over_reverse:
            try:
                return self._apply_forward_over_reverse(vectors)
            except (RuntimeError, NotImplementedError) as exc:  # an op torch.func cannot transform
                warnings.warn(f"forward-over-reverse HVPs unavailable ({exc.__class__.__name__}); using double "
                              "backward", stacklevel=2)
                self.forward_over_reverse = False
                assert self._bound is not None
                self._build(*self._bound)
        out = torch.zeros_like(vectors)
        if not self._active:
            return out
        step = max(1, self.hvp_batch)
        for start in range(0, len(vectors), step):
            block = vectors[start : start + step]
            out[start : start + len(block)] = self._hvp_block(block)
        return out

    def _apply_forward_over_reverse(self, vectors: torch.Tensor) -> torch.Tensor:
        """``H v`` of the latent surrogate for every row of ``vectors``: ``jvp`` of ``grad``, vmapped over rows."""
        assert self._bound is not None, "bind() first"
        unique, weights = self._bound
        encoder = cast(nn.Module, self.model.encoder)
        xb, z0, c, k = self.data[unique], self.z0[unique], self.c[unique], self.k[unique]
        base = tuple(self.base.values())

        def loss(theta: tuple[torch.Tensor, ...]) -> torch.Tensor:
            z = functional_call(encoder, {**self.enc_frozen, **dict(zip(self.enc_names, theta))}, (xb,),
                                strict=False)
            dz = z - z0
            return (weights * ((c * dz).sum(1) + 0.5 * torch.einsum("bi,bij,bj->b", dz, k, dz))).sum()

        gradient = grad(loss)

        def hvp(vector: torch.Tensor) -> torch.Tensor:
            tangents = tuple(t.reshape(shape) for t, shape in zip(vector.split(self.sizes), self.shapes))
            return torch.cat([t.reshape(-1) for t in jvp(gradient, (base,), (tangents,))[1]])

        # vmap holds one tangent graph per vector: as many vectors as the graph budget has room for
        room = (self.graph_examples or 4096) // max(1, len(unique))
        step = max(1, min(64, room))
        out = torch.empty_like(vectors)
        batched = vmap(hvp)
        with warnings.catch_warnings():  # torch.func's first jvp scripts a helper and warns that jit is deprecated
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=FutureWarning)
            for start in range(0, len(vectors), step):
                out[start : start + step] = batched(vectors[start : start + step])
        return out

    def _hvp_block(self, block: torch.Tensor) -> torch.Tensor:
        pieces = list(block.split(self.sizes, dim=1))
        batched = len(block) > 1
        if batched:
            tangents = [pieces[i].reshape(len(block), *self.shapes[i]) for i in self._active]
        else:
            tangents = [pieces[i].reshape(self.shapes[i]) for i in self._active]
        with torch.enable_grad(), self._kernels():
            result = torch.autograd.grad(
                self._grads, self._leaves, grad_outputs=tangents, retain_graph=True,
                allow_unused=True, is_grads_batched=batched,
            )
        rows = [
            (r if r is not None else torch.zeros(len(block), *shape, device=block.device)).reshape(len(block), -1)
            if batched
            else (r if r is not None else torch.zeros(shape, device=block.device)).reshape(1, -1)
            for r, shape in zip(result, self.shapes)
        ]
        return torch.cat(rows, dim=1)


#: Hessians :func:`influence_scores` accepts.
HESSIANS = ("exact", "gauss_newton", "auto")


def gauss_newton_applies(model: nn.Module, params: dict[str, torch.Tensor], data: torch.Tensor,
                         n_vectors: int | None = None, depth: int | None = None, n_gradient_rows: int = 0,
                         max_memory_mb: float | None = None) -> bool:
    """Whether ``hessian="auto"`` takes Gauss–Newton: it can run and it pays off.

    It can run for decoder∘encoder models without recurrent layers whose latent
    Jacobian, Gram matrix and ``n_gradient_rows`` gradients fit in ``max_memory_mb``.
    It pays off when the exact recursion would need many HVPs (``n_vectors ×
    depth``) compared with the Gauss–Newton set-up (one Jacobian row per example
    and latent unit); one test sample against a subset is faster exact.
    """
    if has_rnn(model) or not latent_mode_applies(model, params, data[:8]):
        return False
    with torch.no_grad():
        latent_dim = cast(nn.Module, model.encoder)(data[:1]).shape[1]
    n_params = sum(p.numel() for p in params.values())
    encoder_params = {name[len("encoder."):]: p for name, p in params.items()}
    layout = jacobian_layout(cast(nn.Module, model.encoder), encoder_params, data[:2])
    numbers = jacobian_numbers(encoder_params, layout, len(data), latent_dim)
    if gauss_newton_bytes(numbers, len(data) * latent_dim, n_params, n_gradient_rows) > budget_bytes(max_memory_mb):
        return False
    return n_vectors is None or depth is None or n_vectors * depth >= 2 * len(data) * latent_dim


def resolve_hessian(model: nn.Module, data: torch.Tensor, hessian: str = "auto", n_vectors: int | None = None,
                    depth: int | None = None, param_filter: ParamFilter = is_encoder_param,
                    n_gradient_rows: int = 0, max_memory_mb: float | None = None) -> str:
    """The Hessian ``influence_scores(..., hessian=hessian)`` uses.

    ``n_vectors`` is min(n_train, n_test) and ``n_gradient_rows`` n_train + n_test.
    """
    if hessian != "auto":
        return hessian
    with eval_on(model, resolve_device(None, model)):
        params = selected_parameters(model, param_filter)
        applies = gauss_newton_applies(model, params, data, n_vectors, depth, n_gradient_rows, max_memory_mb)
        return "gauss_newton" if applies else "exact"


def latent_mode_applies(model: nn.Module, params: dict[str, torch.Tensor], probe: torch.Tensor) -> bool:
    """Whether ``model(x) == model.decoder(model.encoder(x))`` and only encoder weights are differentiated."""
    encoder, decoder = getattr(model, "encoder", None), getattr(model, "decoder", None)
    if not isinstance(encoder, nn.Module) or not isinstance(decoder, nn.Module):
        return False
    if not all(name.startswith("encoder.") for name in params):
        return False
    decoder_ids = {id(p) for p in decoder.parameters()}
    if any(id(p) in decoder_ids for p in params.values()):
        return False
    try:
        with torch.no_grad():
            full = model(probe)
            split = decoder(encoder(probe))
        return isinstance(full, torch.Tensor) and full.shape == split.shape and torch.allclose(
            full, split, rtol=1e-4, atol=1e-5
        )
    except Exception:
        return False


def latent_is_affine(model: nn.Module, params: dict[str, torch.Tensor], probe: torch.Tensor) -> bool:
    """Whether the encoder's latent is affine in ``params`` (e.g. its last Linear layer alone).

    Then the encoder has no curvature of its own in those parameters (``∇²θ z = 0``), so the encoder-Gauss–Newton
    Hessian ``Σ Jᵀ K J`` *is* the exact one. Structural check: the gradient of ``Σ z`` with respect to the
    parameters does not depend on them (autograd builds no graph back to them).
    """
    encoder = cast(nn.Module, model.encoder)
    frozen = {name[len("encoder."):]: p for name, p in frozen_parameters(model, params).items()
              if name.startswith("encoder.")}
    names = [name[len("encoder."):] for name in params]
    leaves = [p.detach().clone().requires_grad_(True) for p in params.values()]
    with torch.enable_grad():
        z = functional_call(encoder, {**frozen, **dict(zip(names, leaves))}, (probe,), strict=False)
        grads = torch.autograd.grad(z.sum(), leaves, create_graph=True, allow_unused=True)
    return all(g is None or not g.requires_grad for g in grads)


def influence_scores(
    model: nn.Module,
    x_train: torch.Tensor,
    x_test: torch.Tensor,
    loss_fn: LossFn = mse_per_example,
    param_filter: ParamFilter = is_encoder_param,
    damp: float = 1e-3,
    scale: float = 1000.0,
    recursion_depth: int = 100,
    minibatch_size: int = 300,
    seed: int = 0,
    n_train_for_scaling: int | None = None,
    hessian_data: torch.Tensor | None = None,
    minibatches: Sequence[torch.Tensor] | None = None,
    direction: str = "auto",
    hvp_mode: str = "auto",
    hessian: str = "exact",
    hvp_batch: int | None = None,
    rhs_chunk_size: int | None = None,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    progress: Progress = None,
    max_memory_mb: float | None = None,
) -> torch.Tensor:
    """LiSSA influence scores ``(n_test, n_train)`` as float32 on the CPU.

    Args:
        hessian_data: examples the minibatches are drawn from (default ``x_train``).
        n_train_for_scaling: the ``n_train`` of the final rescaling (default ``len(hessian_data)``).
        minibatches: explicit index tensors into ``hessian_data``, one per iteration (overrides the
            seeded draws and ``recursion_depth``; a full-range index tensor gives the deterministic
            full-data Hessian).
        direction: ``"train"`` (recursion on training gradients, as written in METHOD),
            ``"test"`` (the transposed recursion on test gradients: same scores) or
            ``"auto"`` (whichever side has fewer examples).
        hvp_mode: ``"full"``, ``"latent"`` (decoder∘encoder models only) or ``"auto"``
            (latent when it applies, the model has no recurrent layer and there are at least
            as many vector-iterations as Hessian data rows, so the latent Hessians pay off).
        hessian: ``"exact"`` (Pearlmutter HVPs of the true loss Hessian, METHOD's estimator) or
            ``"gauss_newton"`` (the encoder linearised around its weights, decoder and loss curvature
            kept; same recursion, run in latent-Jacobian coordinates in seconds; decoder∘encoder
            models of moderate size only, see :mod:`.gauss_newton`), or ``"auto"``: Gauss–Newton
            where it applies (no recurrent layer, Jacobian and gradients fit in ``max_memory_mb``),
            exact otherwise. Where the latent is affine in the explained parameters (the encoder's
            last Linear layer alone: :func:`latent_is_affine`) the two Hessians are the same, and
            ``"exact"`` runs the Gauss–Newton solver.
        hvp_batch: vectors per batched double-backward call (default 1 on CPU, 32 on CUDA).
        rhs_chunk_size: right-hand sides solved at once (default: as many as ``max_memory_mb`` allows;
            the minibatch sequence is shared by all chunks).
        max_memory_mb: budget for the per-example gradient rows, LiSSA vectors and Hessian graph held
            at once (default :data:`.streaming.DEFAULT_MEMORY_MB`). The exact estimator streams within it
            (same scores, more gradient recomputation, minibatch graphs built in parts); Gauss–Newton must
            fit its Jacobian in it.
    """
    check_positive(
        damp=damp, scale=scale, recursion_depth=recursion_depth, minibatch_size=minibatch_size,
        n_train_for_scaling=n_train_for_scaling, hvp_batch=hvp_batch, rhs_chunk_size=rhs_chunk_size,
        batch_size=batch_size,
    )
    if direction not in ("auto", "train", "test"):
        raise ParameterError(f"direction must be 'auto', 'train' or 'test', got {direction!r}")
    if hessian not in HESSIANS:
        raise ParameterError(f"hessian must be one of {', '.join(HESSIANS)}, got {hessian!r}")
    if hvp_mode not in ("auto", "full", "latent"):
        raise ParameterError(f"hvp_mode must be 'auto', 'full' or 'latent', got {hvp_mode!r}")
    data = x_train if hessian_data is None else hessian_data
    if len(data) == 0:
        raise ParameterError("the Hessian needs at least one training example")
    n_scale = n_train_for_scaling or len(data)
    batches = list(minibatches) if minibatches is not None else draw_minibatches(
        len(data), minibatch_size, recursion_depth, seed
    )
    if direction == "auto":
        direction = "test" if len(x_test) < len(x_train) else "train"
    dev = resolve_device(device, model)
    hvp_batch = hvp_batch or (32 if dev.type == "cuda" else 1)
    n_bytes = budget_bytes(max_memory_mb)

    with eval_on(model, dev):
        params = selected_parameters(model, param_filter)
        n_params = sum(p.numel() for p in params.values())
        data_dev = data.to(dev)
        if (hessian == "exact" and latent_mode_applies(model, params, data_dev[:8]) and not has_rnn(model)
                and latent_is_affine(model, params, data_dev[:8])
                and gauss_newton_applies(model, params, data_dev, n_gradient_rows=len(x_train) + len(x_test),
                                         max_memory_mb=max_memory_mb)):
            hessian = "gauss_newton"  # no encoder curvature in these parameters: the same Hessian, solved faster
        if hessian == "auto":
            n_vectors = min(len(x_train), len(x_test))
            applies = gauss_newton_applies(model, params, data_dev, n_vectors, len(batches),
                                           len(x_train) + len(x_test), max_memory_mb)
            hessian = "gauss_newton" if applies else "exact"
        if hessian == "gauss_newton":
            return _gauss_newton_scores(model, params, data_dev, x_train, x_test, loss_fn, param_filter, batches,
                                        damp, scale, n_scale, direction, batch_size, dev, progress, n_bytes)
        # Half the budget for the gradient rows and LiSSA vectors, half for the Hessian's autograd graph.
        graph_bytes, n_bytes = n_bytes // 2, n_bytes // 2
        latent_batch = BlockPlan.for_budget(graph_bytes, 4 * n_params, batch_size).batch
        full = None
        mode = hvp_mode
        n_rhs = len(x_train) if direction == "train" else len(x_test)
        if mode == "auto":
            # The latent surrogate saves ~40% per HVP but first needs one latent Hessian per data row
            # (about 30 example-HVPs' worth); RNN decoders would need a slow vmapped double backward.
            # Its graph runs through the encoder only, so it also pays off when the full graph of a
            # minibatch would not fit in the budget and had to be built in parts.
            full = BatchHessian(model, params, data_dev, loss_fn, "full", hvp_batch, max_graph_bytes=graph_bytes)
            assert full.graph_examples is not None  # set, as max_graph_bytes was given
            split = full.graph_examples < len(batches[0].unique()) if batches else False
            worth_it = n_rhs * len(batches) >= len(data) or split
            latent_ok = not has_rnn(model) and latent_mode_applies(model, params, data_dev[:8])
            mode = "latent" if worth_it and latent_ok else "full"
        elif mode == "latent" and not latent_mode_applies(model, params, data_dev[:8]):
            raise ParameterError(
                "hvp_mode='latent' needs model(x) == model.decoder(model.encoder(x)) and encoder-only parameters"
            )
        try:
            batch_hessian = full if mode == "full" and full is not None else BatchHessian(
                model, params, data_dev, loss_fn, mode, hvp_batch, latent_batch, graph_bytes)
        except (RuntimeError, NotImplementedError) as exc:
            if hvp_mode == "latent":
                raise
            warnings.warn(f"latent HVP mode unavailable ({exc.__class__.__name__}); using full HVPs", stacklevel=2)
            batch_hessian = full or BatchHessian(model, params, data_dev, loss_fn, "full", hvp_batch,
                                                 max_graph_bytes=graph_bytes)

        x_rhs, x_other = (x_train, x_test) if direction == "train" else (x_test, x_train)

        def rows(x: torch.Tensor) -> GradientRows:
            return GradientRows(x, n_params, lambda xb, batch: _grads_on_device(
                model, xb, loss_fn, param_filter, batch, dev))

        solve = _lissa if direction == "train" else _lissa_transposed
        scores = _solve_streamed(batch_hessian, rows(x_rhs), rows(x_other), solve, batches, damp, scale * n_scale,
                                 scale, rhs_chunk_size, batch_size, n_bytes, progress)
        scores = scores.T if direction == "train" else scores
    return scores.float().cpu()


def _solve_streamed(
    hessian: BatchHessian, rhs: GradientRows, other: GradientRows, solve, batches: list[torch.Tensor],
    damp: float, divisor: float, scale: float, chunk: int | None, batch_size: int, n_bytes: int,
    progress: Progress,
) -> torch.Tensor:
    """``(solved rhs rows) · (other rows)ᵀ``, shape ``(n_rhs, n_other)``, with the gradient rows in the budget.

    Each chunk of right-hand sides keeps about five rows per vector (gradient,
    iterate, HVPs, sum); the other side is held once when it fits in what is
    left and otherwise recomputed in blocks for every chunk.
    """
    row_bytes = 4 * rhs.width
    budget_rows = max(1, n_bytes // row_bytes)
    fits = 5 * len(rhs) + len(other) <= budget_rows
    chunk = chunk or (len(rhs) if fits else max(1, budget_rows // 10))
    left_rows = max(1, budget_rows - 5 * chunk)
    plan = BlockPlan.for_budget(left_rows * row_bytes, row_bytes, batch_size)
    g_other = other.rows(0, len(other), plan.batch) if fits or len(other) <= plan.hold else None
    assert g_other is None or isinstance(g_other, torch.Tensor)  # plain gradient rows (_grads_on_device)
    out = torch.empty(len(rhs), len(other))
    n_chunks = -(-len(rhs) // chunk)
    total = n_chunks * len(batches)
    for ci, start in enumerate(range(0, len(rhs), chunk)):
        stop = min(len(rhs), start + chunk)
        solved = solve(hessian, rhs.rows(start, stop, min(batch_size, chunk)), batches, damp, scale, progress, ci,
                       total)
        solved /= divisor
        if g_other is not None:
            out[start:stop] = (solved @ g_other.T).cpu()
            continue
        for o0 in range(0, len(other), plan.hold):
            o1 = min(len(other), o0 + plan.hold)
            block = other.rows(o0, o1, plan.batch)
            assert isinstance(block, torch.Tensor)  # plain gradient rows (_grads_on_device)
            out[start:stop, o0:o1] = (solved @ block.T).cpu()
    return out


def _gauss_newton_scores(
    model: nn.Module, params: dict[str, torch.Tensor], data: torch.Tensor, x_train: torch.Tensor,
    x_test: torch.Tensor, loss_fn: LossFn, param_filter: ParamFilter, batches: list[torch.Tensor], damp: float,
    scale: float, n_scale: int, direction: str, batch_size: int, dev: torch.device, progress: Progress,
    n_bytes: int,
) -> torch.Tensor:
    """Influence scores with the encoder-Gauss–Newton Hessian (see :mod:`.gauss_newton`)."""
    if not latent_mode_applies(model, params, data[:8]):
        raise ParameterError(
            "hessian='gauss_newton' needs model(x) == model.decoder(model.encoder(x)) and encoder-only parameters"
        )
    if has_rnn(model):
        raise ParameterError("hessian='gauss_newton' does not support recurrent encoders (per-example Jacobians "
                             "of an LSTM are slow to batch); use hessian='exact'")
    n_params = sum(p.numel() for p in params.values())
    with torch.no_grad():
        latent_dim = cast(nn.Module, model.encoder)(data[:1]).shape[1]
    encoder = cast(nn.Module, model.encoder)
    encoder_params = {name[len("encoder."):]: p for name, p in params.items()}
    layout = jacobian_layout(encoder, encoder_params, data[:2])
    check_gauss_newton_memory(jacobian_numbers(encoder_params, layout, len(data), latent_dim), len(data), latent_dim,
                              n_params, len(x_train) + len(x_test), n_bytes)
    hessian = BatchHessian(model, params, data, loss_fn, "latent", latent_batch_size=batch_size)
    jacobians = latent_jacobian(encoder, encoder_params, data, batch_size, layout)
    # each in the Jacobian's internal order as soon as computed: the copy in the parameters' order is dropped
    g_train = jacobians.to_internal(_grads_on_device(model, x_train, loss_fn, param_filter, batch_size, dev))
    g_test = jacobians.to_internal(_grads_on_device(model, x_test, loss_fn, param_filter, batch_size, dev))
    scores = gauss_newton_lissa(jacobians, hessian.k, g_train, g_test, batches, damp, scale, n_scale,
                                direction=direction, progress=progress, internal_order=True)
    return scores.float().cpu()


def _lissa(
    hessian: BatchHessian, g: torch.Tensor, batches: list[torch.Tensor], damp: float, scale: float,
    progress: Progress, chunk_index: int, total: int,
) -> torch.Tensor:
    """``v_T`` of the LiSSA recursion for the rows of ``g`` (before the final rescaling)."""
    v = g.clone()
    for t, idx in enumerate(batches):
        hessian.bind(idx)
        hv = hessian.apply(v)
        v.mul_(1.0 - damp).add_(g).sub_(hv, alpha=1.0 / scale)
        report(progress, chunk_index * len(batches) + t + 1, total)
    return v


def _lissa_transposed(
    hessian: BatchHessian, h: torch.Tensor, batches: list[torch.Tensor], damp: float, scale: float,
    progress: Progress, chunk_index: int, total: int,
) -> torch.Tensor:
    """``Σ_k A_{T−k}⋯A_{T−1} h`` with ``A_t = (1−damp)I − H_t/scale``: the transpose of the recursion.

    For every ``g``, ``h · v_T(g)`` equals ``(this result) · g``.
    """
    u = h.clone()
    acc = h.clone()
    for t, idx in enumerate(reversed(batches)):
        hessian.bind(idx)
        hu = hessian.apply(u)
        u.mul_(1.0 - damp).sub_(hu, alpha=1.0 / scale)
        acc.add_(u)
        report(progress, chunk_index * len(batches) + t + 1, total)
    return acc
