"""Training losses (METHOD §5) and the per-example pretext loss used by TracIn / IF (METHOD §3).

Conventions:

* Autoencoders: mean squared error (images) or mean absolute error (ECG) to the
  **clean** input.
* Classifiers: cross-entropy on logits.
* VAEs: the reconstruction term is summed over pixels and averaged over the
  batch (Bernoulli → BCE, Gaussian → squared error); the KL is summed over
  latent dimensions and averaged over the batch. β-TC-VAE decomposes the KL
  into MI + TC + dimension-wise KL, estimated by minibatch-weighted sampling.

VAE losses return ``(total, components)``; components are detached scalars
named ``rec``, ``kl`` and, for β-TC-VAE, ``mi``, ``tc``, ``dwkl``.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from lfx_engine.errors import ParameterError

LOG_2PI = math.log(2.0 * math.pi)


def mse_loss(recon: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over all elements."""
    return F.mse_loss(recon, target, reduction="mean")


def l1_loss(recon: Tensor, target: Tensor) -> Tensor:
    """Mean absolute error over all elements (the ECG autoencoder's loss)."""
    return F.l1_loss(recon, target, reduction="mean")


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy of raw logits (never softmax them first)."""
    return F.cross_entropy(logits, labels)


def _check_beta(beta: float) -> float:
    if not isinstance(beta, (int, float)) or isinstance(beta, bool) or not math.isfinite(beta) or beta <= 0:
        raise ParameterError(f"beta must be a positive number, got {beta!r}")
    return float(beta)


def reconstruction_per_example(recon: Tensor, x: Tensor, distribution: str) -> Tensor:
    """VAE reconstruction term per example ``(N,)``: BCE (Bernoulli) or squared error (Gaussian) summed over pixels."""
    if distribution == "bernoulli":
        elementwise = F.binary_cross_entropy(recon, x, reduction="none")
    elif distribution == "gaussian":
        elementwise = (recon - x) ** 2
    else:
        raise ParameterError(f"unknown reconstruction distribution {distribution!r}")
    return elementwise.flatten(1).sum(1)


def kl_normal_per_example(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) summed over latent dimensions, per example ``(N,)``."""
    return 0.5 * (mu ** 2 + logvar.exp() - 1.0 - logvar).sum(1)


def gaussian_log_density(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """Elementwise log N(z; μ, exp(logvar)), broadcasting over the inputs."""
    return -0.5 * (LOG_2PI + logvar + (z - mu) ** 2 * torch.exp(-logvar))


def beta_vae_loss(recon: Tensor, x: Tensor, mu: Tensor, logvar: Tensor, beta: float,
                  distribution: str = "bernoulli", kl_weight: float = 1.0) -> tuple[Tensor, dict[str, Tensor]]:
    """β-VAE objective ``rec + w·β·KL``; ``kl_weight`` w < 1 only during a KL warm-up (1 otherwise)."""
    beta = _check_beta(beta)
    rec = reconstruction_per_example(recon, x, distribution).mean()
    kl = kl_normal_per_example(mu, logvar).mean()
    total = rec + kl_weight * beta * kl
    return total, {"rec": rec.detach(), "kl": kl.detach()}


def beta_tcvae_loss(recon: Tensor, x: Tensor, z: Tensor, mu: Tensor, logvar: Tensor, beta: float,
                    dataset_size: int, distribution: str = "bernoulli", alpha: float = 1.0,
                    gamma: float = 1.0, kl_weight: float = 1.0) -> tuple[Tensor, dict[str, Tensor]]:
    """β-TC-VAE objective ``rec + w·(α·MI + β·TC + γ·dimwise-KL)`` (Chen et al. 2018).

    ``kl_weight`` w < 1 only during a KL warm-up (1 otherwise): the whole regulariser is scaled.

    ``z`` is the sample the decoder saw. With minibatch-weighted sampling over
    the batch of size M drawn from a dataset of size N::

        log q(z_i)   ≈ logsumexp_k log q(z_i | x_k)   − log(N·M)
        log q(z_ij)  ≈ logsumexp_k log q(z_ij | x_k)  − log(N·M)

    MI + TC + dimwise-KL equals the one-sample KL estimate ``E[log q(z|x) − log p(z)]``.
    ``kl`` in the components is the analytic KL, reported for comparison.
    """
    beta = _check_beta(beta)
    if int(dataset_size) < 1:
        raise ParameterError(f"dataset_size must be positive, got {dataset_size!r}")
    batch = z.shape[0]
    rec = reconstruction_per_example(recon, x, distribution).mean()

    log_qz_given_x = gaussian_log_density(z, mu, logvar).sum(1)                       # (M,)
    log_pz = gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z)).sum(1)   # (M,)
    # pairwise[i, k, j] = log q(z_ij | x_k)
    pairwise = gaussian_log_density(z.unsqueeze(1), mu.unsqueeze(0), logvar.unsqueeze(0))
    log_norm = math.log(float(dataset_size) * batch)
    log_qz = torch.logsumexp(pairwise.sum(2), dim=1) - log_norm                         # (M,)
    log_prod_qzj = (torch.logsumexp(pairwise, dim=1) - log_norm).sum(1)                 # (M,)

    mi = (log_qz_given_x - log_qz).mean()
    tc = (log_qz - log_prod_qzj).mean()
    dwkl = (log_prod_qzj - log_pz).mean()
    total = rec + kl_weight * (alpha * mi + beta * tc + gamma * dwkl)
    kl = kl_normal_per_example(mu, logvar).mean()
    return total, {"rec": rec.detach(), "kl": kl.detach(), "mi": mi.detach(), "tc": tc.detach(),
                   "dwkl": dwkl.detach()}


def example_loss(model: nn.Module, x: Tensor, y: Optional[Tensor] = None,
                 params: Optional[Mapping[str, Tensor]] = None) -> Tensor:
    """Per-example pretext loss ``(N,)``: ``L(x) = loss(x, model(x))`` (METHOD §3).

    Image autoencoders: MSE averaged over the example's elements; ECG: L1.
    Classifiers need labels ``y`` (cross-entropy). VAEs: negative ELBO with the
    reconstruction from ``z = μ`` in eval mode (reconstruction term + KL).

    ``params`` (a name → tensor mapping, e.g. encoder parameters only) is passed
    to :func:`torch.func.functional_call`, so the function can be wrapped in
    ``torch.func.grad``/``vmap`` (inside vmap, unsqueeze the single example
    first). Call it in eval mode: the forward pass is then deterministic and
    free of in-place ops.
    """
    out = functional_call(model, dict(params), (x,), strict=False) if params is not None else model(x)
    loss_name = getattr(model, "loss_name", None)
    if loss_name == "mse":
        return ((out - x) ** 2).flatten(1).mean(1)
    if loss_name == "l1":
        return (out - x).abs().flatten(1).mean(1)
    if loss_name == "cross_entropy":
        if y is None:
            raise ParameterError("a classifier's example loss needs labels y")
        return F.cross_entropy(out, y, reduction="none")
    if loss_name == "vae":
        recon, mu, logvar = out
        # a plain str attribute of the VAE (torch types unknown Module attributes as Tensor | Module)
        distribution = cast(str, model.distribution)
        return reconstruction_per_example(recon, x, distribution) + kl_normal_per_example(mu, logvar)
    raise ParameterError(f"model {type(model).__name__} declares no known pretext loss (loss_name={loss_name!r})")
