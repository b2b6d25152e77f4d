"""Label-free example importance: score matrices ``(n_test, n_train)``, larger = more important.

* :mod:`.latent` — :func:`encode`, :func:`dknn_scores`, :func:`cosine_scores`
* :mod:`.simplex` — :func:`simplex_scores`
* :mod:`.gradients` — :func:`per_example_grads` (torch.func), pretext losses
* :mod:`.tracin` — :func:`tracin_scores` over saved checkpoints
* :mod:`.gradient_similarity` — :func:`gradient_similarity_scores`, the plain gradient dot / cosine baselines
* :mod:`.factored` — linear layers' per-example gradients as (input, output-gradient) factors
* :mod:`.streaming` — gradient products in blocks under ``max_memory_mb``
* :mod:`.roles` — :func:`example_roles`: proponents, opponents, unused SimplEx weights; :func:`ranking_ends`
* :mod:`.influence` — :func:`influence_scores` (LiSSA with batched HVPs, or the fast
  encoder-Gauss–Newton Hessian of :mod:`.gauss_newton`)
"""
from .gradients import (
    RandomProjection,
    is_encoder_param,
    l1_per_example,
    mse_per_example,
    per_example_grads,
    selected_parameters,
)
from .gradient_similarity import GRADIENT_SIMILARITIES, gradient_norms, gradient_similarity_scores
from .influence import HESSIANS, BatchHessian, draw_minibatches, influence_scores, resolve_hessian
from .latent import cosine_scores, dknn_scores, encode
from .roles import SIGNED_METHODS, bottom_meaning, example_roles, ranking_ends, role_codes, role_counts
from .simplex import simplex_scores
from .tracin import load_checkpoint, tracin_scores

__all__ = [
    "BatchHessian",
    "GRADIENT_SIMILARITIES",
    "HESSIANS",
    "RandomProjection",
    "SIGNED_METHODS",
    "bottom_meaning",
    "cosine_scores",
    "dknn_scores",
    "draw_minibatches",
    "encode",
    "example_roles",
    "gradient_norms",
    "gradient_similarity_scores",
    "influence_scores",
    "is_encoder_param",
    "l1_per_example",
    "load_checkpoint",
    "mse_per_example",
    "per_example_grads",
    "ranking_ends",
    "resolve_hessian",
    "role_codes",
    "role_counts",
    "selected_parameters",
    "simplex_scores",
    "tracin_scores",
]
