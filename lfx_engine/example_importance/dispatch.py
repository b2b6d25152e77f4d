"""The one method dispatch of example importance: a method's name and settings to its exact score matrix.

The explorer's subset views and ``reproduce consistency_examples`` both call :func:`score_matrix`; the
full-split index (:mod:`.index`) fits the same methods once and scores any test input later.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence, cast

import torch
from torch import nn

from ..errors import ParameterError
from ._common import Progress
from .gradient_similarity import gradient_similarity_scores
from .gradients import LossFn, mse_per_example
from .influence import influence_scores
from .latent import cosine_scores, dknn_scores, encode
from .simplex import simplex_scores
from .tracin import Checkpoint, tracin_scores

#: Every example-importance method, by name.
METHODS = ("dknn", "cosine", "simplex", "tracin", "influence", "grad_dot", "grad_cos")
#: Settings each method takes (the rest of its function's arguments are fixed by the caller's data).
SETTINGS = {
    "dknn": ("eps",), "cosine": (), "simplex": ("steps", "lr", "k_nearest"),
    "tracin": ("projection_dim", "lr_factor", "max_memory_mb"),
    "influence": ("damp", "scale", "recursion_depth", "minibatch_size", "seed", "n_train_for_scaling", "hessian",
                  "max_memory_mb"),
    "grad_dot": ("max_memory_mb",), "grad_cos": ("max_memory_mb",),
}


def score_matrix(method: str, model: nn.Module, x_train: torch.Tensor, x_test: torch.Tensor, *,
                 loss_fn: LossFn = mse_per_example, checkpoints: Sequence[Checkpoint] = (),
                 params: Mapping[str, Any] | None = None, device: torch.device | str | None = None,
                 progress: Progress = None) -> dict[str, torch.Tensor]:
    """``{"scores": (n_test, n_train)}`` of ``method`` (SimplEx adds ``residuals`` and ``latent_norms``).

    Larger = more important. Gradient methods work on a private copy of the model (TracIn loads its
    checkpoints into it), so a shared, cached model is never touched.
    """
    if method not in METHODS:
        raise ParameterError(f"unknown example-importance method {method!r}; choose from {', '.join(METHODS)}")
    settings = dict(params or {})
    unknown = sorted(set(settings) - set(SETTINGS[method]))
    if unknown:
        raise ParameterError(f"{method} has no setting {', '.join(unknown)}")
    if method in ("dknn", "cosine", "simplex"):
        h_train = encode(cast(nn.Module, model.encoder), x_train, device=device)
        h_test = encode(cast(nn.Module, model.encoder), x_test, device=device)
        if method == "dknn":
            return {"scores": dknn_scores(h_test, h_train, device=device, **settings)}
        if method == "cosine":
            return {"scores": cosine_scores(h_test, h_train, device=device)}
        weights, residuals = simplex_scores(h_test, h_train, device=device, progress=progress, **settings)
        return {"scores": weights, "residuals": residuals, "latent_norms": h_test.norm(dim=1)}
    work = copy.deepcopy(model).eval()
    if method == "tracin":
        return {"scores": tracin_scores(work, list(checkpoints), x_train, x_test, loss_fn=loss_fn, device=device,
                                        progress=progress, **settings)}
    if method in ("grad_dot", "grad_cos"):
        return {"scores": gradient_similarity_scores(work, x_train, x_test, "dot" if method == "grad_dot" else
                                                     "cosine", loss_fn=loss_fn, device=device, progress=progress,
                                                     **settings)}
    settings.setdefault("minibatch_size", 300)
    settings["minibatch_size"] = min(int(settings["minibatch_size"]), len(x_train))
    return {"scores": influence_scores(work, x_train, x_test, loss_fn=loss_fn, device=device, progress=progress,
                                       **settings)}
