"""Pretext-task input perturbations (METHOD §5, "Pretext tasks").

The same perturbation is used in two places:

* inside an autoencoder's ``forward`` in **training mode** (global RNG), and
* explicitly, with a seeded ``torch.Generator``, when evaluating a held-out loss
  in eval mode, so the evaluation measures the pretext task and is reproducible.

Every function is pure (no in-place ops on its input) and returns a new tensor.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from lfx_engine.errors import ParameterError

DENOISING_SIGMA = 0.3
INPAINTING_KEEP = 0.8

Perturbation = Callable[..., Tensor]


def _noise_like(x: Tensor, generator: Optional[torch.Generator], kind: str) -> Tensor:
    """Standard-normal or uniform noise shaped like ``x``; drawn on the generator's device, then moved."""
    device = generator.device if generator is not None else x.device
    if kind == "normal":
        noise = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
    else:
        noise = torch.rand(x.shape, generator=generator, device=device, dtype=x.dtype)
    return noise.to(x.device)


def identity(x: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
    """Reconstruction task: the input unchanged."""
    return x


def denoising(x: Tensor, generator: Optional[torch.Generator] = None, sigma: float = DENOISING_SIGMA) -> Tensor:
    """Denoising task: ``x + sigma * N(0, 1)``, deliberately **not** clipped to [0, 1]."""
    return x + sigma * _noise_like(x, generator, "normal")


def inpainting(x: Tensor, generator: Optional[torch.Generator] = None, keep: float = INPAINTING_KEEP) -> Tensor:
    """Inpainting task: each element (each channel of each pixel) kept with probability ``keep``, else set to 0."""
    mask = (_noise_like(x, generator, "uniform") < keep).to(x.dtype)
    return x * mask


PERTURBATIONS: dict[str, Perturbation] = {
    "reconstruction": identity,
    "denoising": denoising,
    "inpainting": inpainting,
}


def get_perturbation(pretext: str) -> Perturbation:
    """The perturbation callable for a pretext name (``reconstruction``, ``denoising``, ``inpainting``)."""
    try:
        return PERTURBATIONS[pretext]
    except KeyError:
        raise ParameterError(
            f"unknown pretext task {pretext!r}; choose one of {sorted(PERTURBATIONS)}"
        ) from None
