"""Is a VAE fit to be explained? Active units, reconstruction against the mean image, KL.

A collapsed VAE (every posterior mean constant, the decoder drawing one average
image) still yields per-unit saliency maps, and their correlations are then
noise. Disentanglement results must therefore be read only on models that pass
these floors:

* **active units** (Burda et al., 2016): unit ``j`` is active when the variance
  over inputs of its posterior mean, ``Var_x(μ_j(x))``, exceeds 0.01;
* **reconstruction**: the model's reconstruction term at ``z = μ`` must be
  clearly below that of the trivial predictor that outputs the training mean
  image for every input (ratio below :data:`MAX_REC_RATIO`);
* **dead**: no active unit and a KL to the prior near 0, i.e. the encoder
  carries no information at all.

This is not the study's share-based "active units" of the saliency maps, which
is ``salient_units`` in :mod:`lfx_engine.metrics.disentanglement`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, cast

import torch
from torch import Tensor, nn

from lfx_engine.models.losses import reconstruction_per_example


class _VAELike(Protocol):
    """The methods :func:`vae_quality` calls on its model besides nn.Module's own."""

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]: ...

    def decode(self, z: Tensor) -> Tensor: ...


#: Var_x(μ_j) above which a unit counts as active (Burda et al., 2016).
ACTIVE_VARIANCE = 0.01
#: Fewest active units a usable VAE has.
MIN_ACTIVE_UNITS = 2
#: A usable VAE reconstructs at most this fraction of the mean image's loss.
MAX_REC_RATIO = 0.9
#: KL (nats per example) below which a model without active units is dead.
DEAD_KL = 0.05


@dataclass
class VAEQuality:
    """Quality figures of one VAE on one set of inputs (see the module docstring)."""

    n: int
    latent_dim: int
    unit_variance: list[float]
    active_units: int
    rec: float
    mean_image_rec: float
    rec_ratio: float
    kl: float
    problems: list[str] = field(default_factory=list)

    @property
    def dead(self) -> bool:
        return self.active_units == 0 and self.kl < DEAD_KL

    def verdict(self) -> str:
        """``dead`` (no information), ``collapsed`` (< 2 active units), ``undertrained`` (units active, but the
        reconstruction is not clearly better than the mean image) or ``ok``."""
        if self.dead:
            return "dead"
        if self.active_units < MIN_ACTIVE_UNITS:
            return "collapsed"
        return "undertrained" if self.problems else "ok"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict()}


@torch.no_grad()
def vae_quality(model: nn.Module, x: Tensor, *, mean_image: Tensor | None = None, batch_size: int = 500,
                device: torch.device | str = "cpu") -> VAEQuality:
    """Active units, reconstruction ratio and KL of ``model`` on inputs ``x`` (eval mode, ``z = μ``).

    ``model`` needs ``encode(x) -> (μ, log σ²)``, ``decode(z)`` and ``distribution``
    (``bernoulli`` or ``gaussian``), as :class:`lfx_engine.models.BurgessVAE` has.
    ``mean_image`` is the trivial predictor (default: the mean of ``x``; pass the
    training mean to score a test set fairly).
    """
    was_training = model.training
    model.eval()
    dev = torch.device(device)
    distribution = getattr(model, "distribution", "bernoulli")
    vae = cast(_VAELike, model)  # torch types attributes nn.Module lacks (encode, decode) as Tensor | Module
    mean_image = (x.float().mean(0) if mean_image is None else mean_image.float()).to(dev)
    if distribution == "bernoulli":
        mean_image = mean_image.clamp(1e-6, 1 - 1e-6)
    mus, rec_sum, base_sum, kl_sum = [], 0.0, 0.0, 0.0
    try:
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size].float().to(dev)
            mu, logvar = vae.encode(xb)
            recon = vae.decode(mu)
            rec_sum += float(reconstruction_per_example(recon, xb, distribution).sum())
            base = mean_image.expand_as(xb)
            base_sum += float(reconstruction_per_example(base, xb, distribution).sum())
            kl_sum += float((0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar)).sum())
            mus.append(mu.double().cpu())
    finally:
        model.train(was_training)
    mu_all = torch.cat(mus)
    n, d = mu_all.shape
    variance = mu_all.var(0, unbiased=True) if n > 1 else torch.zeros(d, dtype=torch.float64)
    active = int((variance > ACTIVE_VARIANCE).sum())
    rec, base_rec = rec_sum / n, base_sum / n
    ratio = rec / base_rec if base_rec > 0 else float("inf")
    problems = []
    if active < MIN_ACTIVE_UNITS:
        problems.append(f"{active} active unit(s) of {d} (Var_x μ_j > {ACTIVE_VARIANCE}); at least "
                        f"{MIN_ACTIVE_UNITS} are needed")
    if not ratio < MAX_REC_RATIO:
        problems.append(f"reconstructs at {ratio:.2f}× the mean image's loss (needs < {MAX_REC_RATIO})")
    return VAEQuality(n=n, latent_dim=d, unit_variance=[round(float(v), 6) for v in variance],
                      active_units=active, rec=rec, mean_image_rec=base_rec, rec_ratio=ratio, kl=kl_sum / n,
                      problems=problems)
