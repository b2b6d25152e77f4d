"""Fit once, score many: example importance against a whole training set, one test input at a time.

:func:`fit` computes the training side of a method once: the latents (DKNN,
cosine, the SimplEx corpus) or per-checkpoint gradient features (TracIn, the
gradient baselines, Influence Functions). The result, an :class:`ExampleIndex`,
is a handful of arrays (:meth:`ExampleIndex.arrays`, so a caller can keep it on
disk) plus the model; :meth:`ExampleIndex.score` then ranks every training
example for new test inputs, writing each block of rows to a sink
(:class:`DenseSink`, :class:`TopKSink`, :class:`ShardSink`).

Gradient features are either exact (every encoder parameter, ``projection_dim=None``)
or a seeded random projection that never builds the full gradient: a linear
layer's per-example gradient is the outer product ``δ aᵀ`` of its output
gradient and input, so it is projected Kronecker-wise as ``(R_outᵀ δ) ⊗ (R_inᵀ a)``
(the TRAK / LoGra construction); the remaining parameters (convolutions, norms,
recurrent weights) get a dense Gaussian projection. Dot products of projected
features are unbiased estimates of the exact ones.
"""
from __future__ import annotations

import copy
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence, cast

import numpy as np
import torch
from torch import nn

from ..errors import ParameterError
from ._common import Progress, eval_on, has_rnn, report, resolve_device
from .factored import FactorLayer, factorable_linears, factored_grads, factored_names
from .gradients import (
    LossFn,
    _grads_on_device,
    grads_at_weights,
    is_encoder_param,
    mse_per_example,
    selected_parameters,
    stack_states,
)
from .influence import BatchHessian, _lissa_transposed, draw_minibatches, latent_curvature, latent_mode_applies
from .latent import cosine_scores, dknn_scores, encode
from .simplex import simplex_scores
from .streaming import budget_bytes
from .tracin import Checkpoint, load_checkpoint

#: Methods an index can be fitted for.
INDEX_METHODS = ("dknn", "cosine", "simplex", "tracin", "grad_dot", "grad_cos", "influence")
LATENT_METHODS = ("dknn", "cosine", "simplex")
GRADIENT_METHODS = ("tracin", "grad_dot", "grad_cos", "influence")


# ----------------------------------------------------------------------------------------------- sinks
class Sink(Protocol):
    """Receives score rows block by block (``start`` is the first test row of ``block``)."""

    def write(self, start: int, block: torch.Tensor) -> None: ...

    def result(self) -> Any: ...


class DenseSink:
    """All rows in one ``(n_test, n_train)`` float32 array."""

    def __init__(self, n_test: int, n_train: int) -> None:
        self.scores = np.zeros((n_test, n_train), dtype=np.float32)

    def write(self, start: int, block: torch.Tensor) -> None:
        self.scores[start:start + len(block)] = block.cpu().numpy()

    def result(self) -> np.ndarray:
        return self.scores


class TopKSink:
    """The ``k`` highest (and, with ``bottom=True``, lowest) scores of each row and their training indices."""

    def __init__(self, n_test: int, k: int, bottom: bool = False) -> None:
        if k < 1:
            raise ParameterError(f"k must be a positive integer, got {k!r}")
        self.k, self.bottom = k, bottom
        self.top_scores = np.zeros((n_test, 0), dtype=np.float32)
        self._rows: dict[str, list[tuple[int, np.ndarray]]] = {"top": [], "top_idx": [], "bot": [], "bot_idx": []}

    def write(self, start: int, block: torch.Tensor) -> None:
        k = min(self.k, block.shape[1])
        top = block.topk(k, dim=1)
        low = block.topk(k, dim=1, largest=False) if self.bottom else None
        self.add(start, top.values, top.indices, *((low.values, low.indices) if low is not None else (None, None)))

    def add(self, start: int, top_values: torch.Tensor, top_indices: torch.Tensor,
            bottom_values: torch.Tensor | None = None, bottom_indices: torch.Tensor | None = None) -> None:
        """Rows already reduced elsewhere (e.g. merged over training blocks): their top (and bottom) k."""
        self._rows["top"].append((start, top_values.cpu().numpy()))
        self._rows["top_idx"].append((start, top_indices.cpu().numpy()))
        if self.bottom and bottom_values is not None and bottom_indices is not None:
            self._rows["bot"].append((start, bottom_values.cpu().numpy()))
            self._rows["bot_idx"].append((start, bottom_indices.cpu().numpy()))

    def result(self) -> dict[str, np.ndarray]:
        out = {}
        for name, rows in self._rows.items():
            if rows:
                out[name] = np.concatenate([r for _, r in sorted(rows, key=lambda item: item[0])])
        names = {"top": "top_scores", "top_idx": "top_indices", "bot": "bottom_scores", "bot_idx": "bottom_indices"}
        return {names[k]: v for k, v in out.items()}


class ShardSink:
    """Each block of rows as its own ``.npz`` file (``scores`` and the first test row ``start``) in ``folder``.

    For dataset-wide runs whose full matrix does not fit in memory: a shard is written atomically, so a
    stopped run leaves only whole shards behind.
    """

    def __init__(self, folder: str | Path, prefix: str = "scores") -> None:
        self.folder, self.prefix = Path(folder), prefix
        self.folder.mkdir(parents=True, exist_ok=True)
        self.paths: list[Path] = []

    def write(self, start: int, block: torch.Tensor) -> None:
        from lfx_engine.atomic import atomic_write

        scores = block.cpu().numpy()
        path = self.folder / f"{self.prefix}_{start:09d}.npz"
        atomic_write(path, lambda handle: np.savez(handle, scores=scores, start=np.int64(start)))
        self.paths.append(path)

    def result(self) -> list[Path]:
        return list(self.paths)


def read_shards(paths: Sequence[str | Path]) -> np.ndarray:
    """The rows of :class:`ShardSink` files, in test order, as one array."""
    parts = []
    for path in paths:
        with np.load(path, allow_pickle=False) as data:
            parts.append((int(data["start"]), data["scores"]))
    return np.concatenate([p for _, p in sorted(parts, key=lambda item: item[0])])


# ----------------------------------------------------------------------------------------------- features
@dataclass
class GradientFeatureMap:
    """Per-example loss gradients of the encoder as feature rows: exact, or projected without the full gradient.

    ``layers`` are the linear layers kept as (input, output-gradient) factors; ``dense`` the other parameters'
    names in :func:`selected_parameters` order. ``projection_dim=None`` keeps every number (exact dot products).
    """

    names: list[str]
    layers: dict[str, FactorLayer]
    dense: list[str]
    projection_dim: int | None
    seed: int = 0
    _mats: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, model: nn.Module, probe: torch.Tensor, projection_dim: int | None, seed: int = 0,
              param_filter: Callable[[str], bool] = is_encoder_param) -> "GradientFeatureMap":
        params = selected_parameters(model, param_filter)
        names = list(params)
        layers = factorable_linears(model, set(names), probe)
        held = factored_names(layers)
        return cls(names, layers, [n for n in names if n not in held], projection_dim, seed)

    def n_dense(self, model: nn.Module) -> int:
        shapes = dict(model.named_parameters())
        return sum(shapes[n].numel() for n in self.dense)

    def _matrix(self, key: str, rows: int, cols: int, device: torch.device) -> torch.Tensor:
        """A seeded Gaussian ``(rows, cols)`` with N(0, 1/cols) entries, the same for train and test."""
        if key not in self._mats:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + zlib.crc32(key.encode()))
            self._mats[key] = torch.randn(rows, cols, generator=generator) / math.sqrt(cols)
        return self._mats[key].to(device)

    def _side(self, size: int) -> int:
        return size if self.projection_dim is None else min(size, max(1, round(math.sqrt(self.projection_dim))))

    def width(self, model: nn.Module) -> int:
        """Numbers per feature row."""
        n_dense = self.n_dense(model)
        dense = n_dense if self.projection_dim is None else min(n_dense, self.projection_dim)
        return dense + sum(self._side(m.out_features) * self._side(m.in_features + with_bias)
                           for m, with_bias in self.layers.values())

    def rows(self, model: nn.Module, x: torch.Tensor, loss_fn: LossFn, batch_size: int,
             device: torch.device) -> torch.Tensor:
        """Feature rows ``(len(x), width)`` of ``x`` at the model's current weights (model in eval mode)."""
        if not self.layers:  # nothing to keep as factors (e.g. a recurrent encoder): plain per-example gradients
            names = set(self.names)
            dense = _grads_on_device(model, x, loss_fn, lambda n: n in names, batch_size, device)
            return self._project_dense(dense, device)
        rows = factored_grads(model, x, loss_fn, lambda n: n in set(self.names), self.layers, batch_size, device)
        parts = [self._project_dense(rows.dense, device)] if self.dense else []
        for name, (a, d) in zip(self.layers, rows.factors):
            d_side = self._project(f"{name}.out", d, device)
            a_side = self._project(f"{name}.in", a, device)
            parts.append((d_side[:, :, None] * a_side[:, None, :]).reshape(len(x), -1))
        return torch.cat(parts, dim=1) if parts else torch.zeros(len(x), 0, device=device)

    def _project(self, key: str, m: torch.Tensor, device: torch.device) -> torch.Tensor:
        side = self._side(m.shape[1])
        if side == m.shape[1]:
            return m
        return m @ self._matrix(key, m.shape[1], side, device)

    def _project_dense(self, dense: torch.Tensor, device: torch.device) -> torch.Tensor:
        if self.projection_dim is None or dense.shape[1] <= self.projection_dim:
            return dense
        return dense @ self._matrix("dense", dense.shape[1], self.projection_dim, device)

    def vector(self, model: nn.Module, flat: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Features of full gradient-shaped vectors ``(n, P)`` in :attr:`names` order (e.g. a solved IF vector).

        A linear layer's block ``[W | b]`` is mapped to ``R_outᵀ [W | b] R_in``, the same map that turns a
        per-example ``δ aᵀ`` into ``(R_outᵀ δ) ⊗ (R_inᵀ a)``.
        """
        shapes = dict(model.named_parameters())
        offsets, pos = {}, 0
        for name in self.names:
            offsets[name] = (pos, pos + shapes[name].numel())
            pos += shapes[name].numel()
        pieces = []
        if self.dense:
            dense = torch.cat([flat[:, offsets[n][0]:offsets[n][1]] for n in self.dense], dim=1)
            pieces.append(self._project_dense(dense, device))
        for name, (module, with_bias) in self.layers.items():
            w0, w1 = offsets[f"{name}.weight"]
            blocks = [flat[:, w0:w1].reshape(len(flat), module.out_features, module.in_features)]
            if with_bias:
                b0, b1 = offsets[f"{name}.bias"]
                blocks.append(flat[:, b0:b1].reshape(len(flat), module.out_features, 1))
            full = torch.cat(blocks, dim=2)  # (n, out, in + 1)
            out_side, in_side = self._side(full.shape[1]), self._side(full.shape[2])
            if out_side < full.shape[1]:
                full = torch.einsum("noi,ok->nki", full, self._matrix(f"{name}.out", full.shape[1], out_side,
                                                                        device))
            if in_side < full.shape[2]:
                full = torch.einsum("noi,ik->nok", full, self._matrix(f"{name}.in", full.shape[2], in_side,
                                                                        device))
            pieces.append(full.reshape(len(flat), -1))
        return torch.cat(pieces, dim=1)


# ----------------------------------------------------------------------------------------------- the index
@dataclass
class ExampleIndex:
    """A fitted training side: ``arrays`` (what :func:`fit` computed) plus what scoring needs from the model."""

    method: str
    model: nn.Module
    arrays: dict[str, np.ndarray]
    params: dict[str, Any]
    loss_fn: LossFn = mse_per_example
    checkpoints: Sequence[Checkpoint] = ()
    hessian_data: torch.Tensor | None = None
    device: torch.device | str | None = None
    _work: nn.Module | None = field(default=None, init=False, repr=False)
    _fmap: GradientFeatureMap | None = field(default=None, init=False, repr=False)
    _weights: list[Mapping[str, torch.Tensor]] | None = field(default=None, init=False, repr=False)
    _stacked: dict[str, torch.Tensor] | None = field(default=None, init=False, repr=False)

    @property
    def n_train(self) -> int:
        return int(self.arrays["n_train"])

    def score(self, x_test: torch.Tensor, sink: Sink | None = None, batch_size: int = 256,
              progress: Progress = None) -> Any:
        """Scores of every training example for each row of ``x_test``, written to ``sink`` (dense by default).

        Larger = more important, as in the subset functions (:func:`.dknn_scores`, :func:`.tracin_scores`, …).
        """
        sink = sink or DenseSink(len(x_test), self.n_train)
        for start in range(0, len(x_test), batch_size):
            block = x_test[start:start + batch_size]
            sink.write(start, self._score_block(block))
            report(progress, min(start + batch_size, len(x_test)), len(x_test))
        return sink.result()

    def _score_block(self, x: torch.Tensor) -> torch.Tensor:
        dev = resolve_device(self.device, self.model)
        if self.method in LATENT_METHODS:
            h_train = torch.from_numpy(self.arrays["latents"])
            h_test = encode(cast(nn.Module, self.model.encoder), x, device=dev)
            if self.method == "dknn":
                return dknn_scores(h_test, h_train, device=dev)
            if self.method == "cosine":
                return cosine_scores(h_test, h_train, device=dev)
            return simplex_scores(h_test, h_train, steps=self.params["steps"], lr=self.params["lr"],
                                  k_nearest=self.params.get("k_nearest"), device=dev)[0]
        return self._gradient_scores(x, dev)

    def _gradient_scores(self, x: torch.Tensor, dev: torch.device) -> torch.Tensor:
        if self._work is None:  # a private copy (checkpoints are loaded into it) and its feature map, made once:
            self._work = copy.deepcopy(self.model)  # the projection matrices are drawn once per index, not per query
            self._fmap = _feature_map(self._work, x[:2].to(dev), self.params)
            self._weights = _states(self.method, self._work, self.checkpoints)  # read from disk once, not per query
            for state in self._weights:  # checked once (strict): a query then copies the tensors in place
                self._work.load_state_dict(state)
        model, fmap, states = self._work, self._fmap, self._weights
        assert fmap is not None and states is not None
        with eval_on(model, dev):  # the private copy: its weights need no restoring
            per_checkpoint = self._query_rows(model, fmap, states, x, dev)
            if per_checkpoint is not None:  # one clicked sample: every checkpoint's features from one pass
                return self.score_features(per_checkpoint[:, None, :])
            scores = torch.zeros(len(x), self.n_train)
            targets = model.state_dict(keep_vars=True)
            for c, state in enumerate(states):
                with torch.no_grad():  # load_state_dict's per-module walk cost more than a query's gradient
                    for key, value in state.items():
                        targets[key].copy_(value)
                if self.method == "influence" and "solve_0" in self.arrays:
                    solve = torch.from_numpy(self.arrays["solve_0"]).to(dev)
                    n_hessian = int(self.arrays["n_hessian"])  # as the exact path: the Hessian data's size
                    test = fmap.rows(model, x, self.loss_fn, 64, dev) @ solve / (self.params["scale"] * n_hessian)
                elif self.method == "influence":
                    test = self._solved_test_features(model, fmap, x, dev)
                else:
                    test = fmap.rows(model, x, self.loss_fn, 64, dev)
                block = _products(test.float(), self.arrays, c)
                if self.method == "grad_cos":
                    norms = torch.from_numpy(self.arrays["norms_0"]).to(dev)
                    block = block / (test.norm(dim=1)[:, None] * norms[None, :]).clamp_min(1e-12)
                scores += block.cpu()
        return scores

    def score_features(self, features: torch.Tensor) -> torch.Tensor:
        """TracIn scores ``(n, n_train)`` of test rows given as their features at every checkpoint ``(C, n, width)``:
        the products with the stored training rows alone (a search, without the test rows' gradients)."""
        scores = torch.zeros(features.shape[1], self.n_train)
        for c, test in enumerate(features):
            scores += _products(test.float(), self.arrays, c).cpu()
        return scores

    def _query_rows(self, model: nn.Module, fmap: GradientFeatureMap, states: list[Mapping[str, torch.Tensor]],
                    x: torch.Tensor, dev: torch.device) -> torch.Tensor | None:
        """TracIn features ``(C, width)`` of a single test row at all ``C`` checkpoints, vmapped over the
        checkpoints (:func:`.grads_at_weights`); None where that does not apply."""
        if len(x) != 1 or len(states) < 2 or self.method != "tracin":
            return None
        if self._stacked is None:
            self._stacked = stack_states(states, dev)
        flat = grads_at_weights(model, self._stacked, x[0].to(dev), self.loss_fn, fmap.names)
        return None if flat is None else fmap.vector(model, flat, dev).float()

    def _solved_test_features(self, model: nn.Module, fmap: GradientFeatureMap, x: torch.Tensor,
                              dev: torch.device) -> torch.Tensor:
        """Features of ``(H + damp·scale·I)⁻¹``-weighted test gradients (transposed LiSSA, exact HVPs)."""
        data = self.hessian_data if self.hessian_data is not None else torch.empty(0)
        if len(data) == 0:
            raise ParameterError("Influence Functions need the training inputs for the Hessian")
        p = self.params
        params = selected_parameters(model, is_encoder_param)
        batches = draw_minibatches(len(data), min(p["minibatch_size"], len(data)), p["recursion_depth"], p["seed"])
        hessian = BatchHessian(model, params, data.to(dev), self.loss_fn, "full", 1)
        g = _grads_on_device(model, x, self.loss_fn, is_encoder_param, 64, dev)
        solved = _lissa_transposed(hessian, g, batches, p["damp"], p["scale"], None, 0, len(batches))
        solved /= p["scale"] * len(data)
        return fmap.vector(model, solved, dev)


def feature_bytes(width: int, projected: bool) -> int:
    """Bytes per stored feature row: projected features are kept as float16 (with a scale), exact ones as float32."""
    return (2 if projected else 4) * width


def _stored(features: torch.Tensor, c: int, quantise: bool) -> dict[str, np.ndarray | np.generic]:
    """Checkpoint ``c``'s features as stored: projected ones as float16 scaled by their largest magnitude.

    A projection's own error dwarfs float16's rounding; the scale keeps small gradients out of its subnormals.
    """
    if not quantise:
        return {f"features_{c}": features.numpy()}
    scale = float(features.abs().max()) or 1.0
    return {f"features_{c}": (features / scale).half().numpy(), f"scale_{c}": np.float32(scale)}


#: Stored feature rows turned into float32 at a time when scoring (a reused buffer that stays in cache).
SCORE_CHUNK_ROWS = 4096
#: Up to this many test rows (a clicked sample) are multiplied with the float16 rows directly, with no
#: conversion (measured 4.6 against 6-9 ms per checkpoint over 60,000 rows × 256).
HALF_QUERY_ROWS = 8


def _products(test: torch.Tensor, arrays: Mapping[str, np.ndarray], c: int) -> torch.Tensor:
    """``test @ featuresᵀ`` for checkpoint ``c``'s stored training features, undoing :func:`_stored`'s scale.

    The float16 rows are converted a chunk at a time into one reused float32 buffer: converting the whole split
    at once wrote a fresh float32 copy of it per query, which cost several times the products themselves.
    A few test rows multiply the float16 rows directly. The scale multiplies the test rows rather than the split.
    """
    stored = torch.from_numpy(np.asarray(arrays[f"features_{c}"]))
    if f"scale_{c}" in arrays:
        test = test * float(arrays[f"scale_{c}"])
    if stored.dtype == torch.float16 and len(test) <= HALF_QUERY_ROWS and test.device.type == "cpu":
        # stored entries are at most 1 in magnitude (:func:`_stored`), so with each test row scaled to at most 1
        # every product and partial sum stays far inside float16's range (per row: a row's scores do not depend
        # on the other rows of its block)
        top = test.abs().amax(dim=1, keepdim=True).clamp_min(1e-30)
        return ((test / top).half() @ stored.T).float() * top
    out = torch.empty(len(test), len(stored), device=test.device)
    buffer = torch.empty(min(SCORE_CHUNK_ROWS, len(stored)), stored.shape[1], device=test.device)
    for start in range(0, len(stored), SCORE_CHUNK_ROWS):
        chunk = buffer[:min(SCORE_CHUNK_ROWS, len(stored) - start)]
        chunk.copy_(stored[start:start + len(chunk)])
        out[:, start:start + len(chunk)] = test @ chunk.T
    return out


def _feature_map(model: nn.Module, probe: torch.Tensor, params: Mapping[str, Any]) -> GradientFeatureMap:
    return GradientFeatureMap.build(model, probe, params.get("projection_dim"), int(params.get("seed", 0)))


def _states(method: str, model: nn.Module, checkpoints: Sequence[Checkpoint]) -> list[Mapping[str, torch.Tensor]]:
    """The weights the gradients are taken at: every TracIn checkpoint, else the final weights."""
    if method == "tracin":
        if not checkpoints:
            raise ParameterError("TracIn needs at least one checkpoint; train with checkpointing enabled")
        return [load_checkpoint(c) for c in checkpoints]
    return [{k: v.detach().clone() for k, v in model.state_dict().items()}]


def default_params(method: str) -> dict[str, Any]:
    """Settings of :func:`fit` for ``method`` (METHOD §3's where the subset functions have them)."""
    if method == "simplex":
        return {"steps": 1000, "lr": 0.1, "k_nearest": None}
    if method in GRADIENT_METHODS:
        out: dict[str, Any] = {"projection_dim": 1024, "seed": 0}
        if method == "influence":
            out.update({"damp": 1e-3, "scale": 1000.0, "recursion_depth": 100, "minibatch_size": 300,
                        "hessian": "auto"})
        return out
    return {}


def fit(method: str, model: nn.Module, x_train: torch.Tensor, *, loss_fn: LossFn = mse_per_example,
        checkpoints: Sequence[Checkpoint] = (), params: Mapping[str, Any] | None = None,
        device: torch.device | str | None = None, batch_size: int = 256, progress: Progress = None,
        max_memory_mb: float | None = None, hessian_data: torch.Tensor | None = None,
        solve: np.ndarray | None = None) -> ExampleIndex:
    """Compute ``method``'s training side over ``x_train`` once; :meth:`ExampleIndex.score` does the rest.

    ``params`` override :func:`default_params` (``projection_dim=None`` asks for exact gradient features, which
    must fit in ``max_memory_mb``). The model is not changed (gradients are taken on a private copy).
    Influence Functions estimate their Hessian on ``hessian_data`` (default ``x_train``; a block of a split
    passes the whole split). With the Gauss–Newton Hessian the recursion is solved here, once
    (:func:`influence_solve`), unless ``solve`` brings that matrix for the same model, data and settings.
    """
    settings = _settings(method, params)
    dev = resolve_device(device, model)
    # arrays and numpy scalars (the counts and scales), as np.savez stores them
    arrays: dict[str, Any] = {"n_train": np.int64(len(x_train))}
    if method in LATENT_METHODS:
        arrays["latents"] = encode(cast(nn.Module, model.encoder), x_train, batch_size=batch_size, device=dev,
                                   progress=progress).numpy()
        return ExampleIndex(method, model, arrays, settings, loss_fn, checkpoints, None, device)
    hessian_inputs = x_train if hessian_data is None else hessian_data
    work = copy.deepcopy(model)
    fmap = _feature_map(work, x_train[:2].to(dev), settings)
    states = _states(method, work, checkpoints)
    width = fmap.width(work)
    gauss_newton = method == "influence" and _solves_once(work, x_train[:8], settings["hessian"], width, dev)
    if gauss_newton and solve is not None and np.shape(solve) != (width, width):
        raise ParameterError(f"the given solve has shape {np.shape(solve)}, not ({width}, {width}): it belongs to "
                             "other settings")
    solve_steps = settings["recursion_depth"] if gauss_newton and solve is None else 0
    needed = len(states) * len(x_train) * feature_bytes(width, settings["projection_dim"] is not None) \
        + (3 * 4 * width * width if solve_steps else 0)
    if needed > budget_bytes(max_memory_mb):
        raise ParameterError(
            f"{method}'s training features need {needed / 2**20:.0f} MB, over the "
            f"memory budget of {budget_bytes(max_memory_mb) / 2**20:.0f} MB: set a smaller projection_dim")
    total = len(states) * len(x_train) + solve_steps
    with eval_on(work, dev, restore_weights=True):
        for c, state in enumerate(states):
            work.load_state_dict(state)
            chunks = []
            for start in range(0, len(x_train), batch_size):
                rows = fmap.rows(work, x_train[start:start + batch_size], loss_fn, 64, dev)
                chunks.append(rows.cpu())
                report(progress, c * len(x_train) + min(start + batch_size, len(x_train)), total)
            features = torch.cat(chunks)
            if method == "grad_cos":
                arrays[f"norms_{c}"] = features.norm(dim=1).numpy()
            arrays.update(_stored(features, c, quantise=settings["projection_dim"] is not None))
        if solve_steps:
            def step(done: int, _: int) -> None:
                report(progress, len(x_train) + done, total)
            solve = projected_solve(work, fmap, hessian_inputs, loss_fn, settings, dev, step).cpu().numpy()
    if gauss_newton:
        arrays["solve_0"] = np.asarray(solve, dtype=np.float32)
        arrays["n_hessian"] = np.int64(len(hessian_inputs))
    kept = hessian_inputs if method == "influence" and not gauss_newton else None
    return ExampleIndex(method, model, arrays, settings, loss_fn, checkpoints, kept, device)


def influence_solve(model: nn.Module, hessian_data: torch.Tensor, *, loss_fn: LossFn = mse_per_example,
                    params: Mapping[str, Any] | None = None, device: torch.device | str | None = None,
                    progress: Progress = None) -> np.ndarray | None:
    """The Gauss–Newton solve :func:`fit` stores for Influence Functions with these settings, computed alone.

    ``None`` where the index keeps the exact Hessian instead. Dataset-wide precompute computes it once and hands
    it to every block's :func:`fit` (``solve=``): the Hessian is the whole split's, whichever block is scored.
    """
    settings = _settings("influence", params)
    dev = resolve_device(device, model)
    work = copy.deepcopy(model)
    fmap = _feature_map(work, hessian_data[:2].to(dev), settings)
    width = fmap.width(work)
    if not _solves_once(work, hessian_data[:8], settings["hessian"], width, dev):
        return None
    with eval_on(work, dev):
        return projected_solve(work, fmap, hessian_data, loss_fn, settings, dev, progress).cpu().numpy()


def _settings(method: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """:func:`default_params` overridden by ``params``, every name and choice checked."""
    if method not in INDEX_METHODS:
        raise ParameterError(f"unknown example-importance method {method!r}; choose from {', '.join(INDEX_METHODS)}")
    settings = {**default_params(method), **dict(params or {})}
    unknown = sorted(set(settings) - set(default_params(method)))
    if unknown:
        raise ParameterError(f"{method} has no setting {', '.join(unknown)}")
    if method == "influence" and settings["hessian"] not in INDEX_HESSIANS:
        raise ParameterError(f"hessian must be one of {', '.join(INDEX_HESSIANS)}, got {settings['hessian']!r}")
    return settings


def _solves_once(model: nn.Module, probe: torch.Tensor, hessian: str, width: int, device: torch.device) -> bool:
    with eval_on(model, device):
        return _index_hessian(model, probe.to(device), hessian, width) == "gauss_newton"


#: Hessians a fitted Influence-Functions index accepts (``params["hessian"]``).
INDEX_HESSIANS = ("auto", "gauss_newton", "exact")
#: Widest feature row whose ``(w, w)`` Gauss–Newton solve ``hessian="auto"`` fits (each of its
#: ``recursion_depth`` steps costs about ``4·minibatch·latent_dim·w²`` multiply-adds).
MAX_SOLVE_WIDTH = 4096


def _index_hessian(model: nn.Module, probe: torch.Tensor, hessian: str, width: int) -> str:
    """``"gauss_newton"`` (solved once, in feature space) where asked or where ``"auto"`` finds it applies.

    It applies to ``decoder∘encoder`` models without recurrent layers whose feature rows are at most
    :data:`MAX_SOLVE_WIDTH` wide (projected features; exact ones of a small encoder). Otherwise each query runs
    the exact recursion.
    """
    params = selected_parameters(model, is_encoder_param)
    applies = latent_mode_applies(model, params, probe)
    if hessian == "gauss_newton" and not applies:
        raise ParameterError("hessian='gauss_newton' needs model(x) == model.decoder(model.encoder(x)) and "
                             "encoder-only parameters; use hessian='exact'")
    if hessian == "auto":  # recurrent encoders' per-example Jacobian rows are a slow loop (as in the subset path)
        return "gauss_newton" if applies and width <= MAX_SOLVE_WIDTH and not has_rnn(model) else "exact"
    return hessian


class _Latent(nn.Module):
    """``x ↦ encoder(x)`` under the model's own parameter names (``encoder.*``): the latent's Jacobian rows."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


def projected_solve(model: nn.Module, fmap: GradientFeatureMap, x_train: torch.Tensor, loss_fn: LossFn,
                    params: Mapping[str, Any], device: torch.device, progress: Progress = None) -> torch.Tensor:
    """The transposed LiSSA recursion of the encoder-Gauss–Newton Hessian, in feature space: ``(w, w)``.

    The same minibatches, damping and scaling as the exact estimator; each minibatch's Hessian is
    ``Σ_i w_i R_iᵀ K_i R_i``, with ``R_i`` the feature rows of the latent's Jacobian (one per latent unit) and
    ``K_i`` the loss's Hessian in the latent (:func:`.latent_curvature`). A test gradient's solved features are
    then ``φ(g) @ solve / (scale · len(x_train))``: one product per query instead of ``recursion_depth`` HVP passes.
    Applying the recursion to the projected Hessian instead of projecting the solved vector is an
    approximation (the projection does not commute with ``H``); ``bench/bench_scale.py`` reports its agreement.
    """
    batches = draw_minibatches(len(x_train), min(params["minibatch_size"], len(x_train)),
                               params["recursion_depth"], params["seed"])
    width = fmap.width(model)
    drawn = torch.cat(batches).unique()
    with torch.no_grad():
        d = cast(nn.Module, model.encoder)(x_train[:1].to(device)).shape[1]
    # Each example's Jacobian rows and curvature once, when those of every drawn example fit (a small training
    # set is drawn many times over); otherwise each minibatch computes its own.
    known = len(drawn) * d * (width + d) * 4 <= SOLVE_ROWS_BYTES
    if known:
        rows_of, curvature_of = _latent_rows(model, fmap, x_train[drawn].to(device), loss_fn, device)
        position = torch.full((len(x_train),), -1, dtype=torch.long)
        position[drawn] = torch.arange(len(drawn))
    u = torch.eye(width, device=device)
    acc = u.clone()
    for t, idx in enumerate(reversed(batches)):
        unique, counts = idx.unique(return_counts=True)
        weights = counts.to(device, torch.float32) / len(idx)
        if known:
            at = position[unique].to(device)
            rows, curvature = rows_of[at], curvature_of[at]
        else:
            rows, curvature = _latent_rows(model, fmap, x_train[unique].to(device), loss_fn, device)
        curvature = curvature * weights[:, None, None]
        rows = rows.reshape(len(unique) * d, width)  # (b·d, w), example-major
        ur = (u @ rows.T).reshape(width, len(unique), d)
        hu = torch.einsum("wbd,bde->wbe", ur, curvature).reshape(width, len(unique) * d) @ rows
        u.mul_(1.0 - params["damp"]).sub_(hu, alpha=1.0 / params["scale"])
        acc.add_(u)
        report(progress, t + 1, len(batches))
    return acc


#: Bytes :func:`projected_solve` may hold for the Jacobian rows and curvatures of every drawn example at once.
SOLVE_ROWS_BYTES = 256 * 2**20


def _latent_rows(model: nn.Module, fmap: GradientFeatureMap, x: torch.Tensor, loss_fn: LossFn,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature rows of the latent's Jacobian ``(n, d, w)`` and the latent loss Hessians ``(n, d, d)`` of ``x``."""
    latent = _Latent(cast(nn.Module, model.encoder))
    curvature = latent_curvature(model, x, loss_fn)[2]

    def unit(c: int) -> LossFn:
        """Latent unit ``c`` in the place of a loss: its gradient rows are the Jacobian's row ``c``."""
        return lambda z, _: z[:, c]

    rows = torch.stack([fmap.rows(latent, x, unit(c), 64, device)
                        for c in range(curvature.shape[1])], dim=1)
    return rows, curvature


def from_arrays(method: str, model: nn.Module, arrays: Mapping[str, np.ndarray], *, params: Mapping[str, Any],
                loss_fn: LossFn = mse_per_example, checkpoints: Sequence[Checkpoint] = (),
                hessian_data: torch.Tensor | None = None, device: torch.device | str | None = None) -> ExampleIndex:
    """An index from arrays :func:`fit` computed earlier (e.g. read back from the disk cache)."""
    settings = {**default_params(method), **dict(params)}
    return ExampleIndex(method, model, dict(arrays), settings, loss_fn, checkpoints,
                        hessian_data if method == "influence" else None, device)
