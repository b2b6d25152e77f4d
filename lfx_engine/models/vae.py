"""Burgess et al. VAE for the disentanglement study (METHOD §5).

The original design emits ``2d`` interleaved outputs (μ at even, log σ² at odd
indices). Here the last encoder layer is split into two ``Linear(256→d)`` heads
with the same total parameter count: ``encoder.mu`` (inside ``encoder``, so
``model.encoder(x)`` is the posterior mean μ and unit j's mean is output j) and
``logvar_head`` (outside ``encoder``). For torch-lucent the μ layer is named
``encoder_mu``.

Parameter counts: 1×32×32, d=3 → 463,783; 1×64×64, d=6 → 498,925;
3×32×32, d=16 → 475,843.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from lfx_engine.errors import ParameterError
from lfx_engine.models.base import check_latent_dim

DISTRIBUTIONS = ("bernoulli", "gaussian")
HIDDEN = 256
CHANNELS = 32


def _n_conv_layers(image_size: int) -> int:
    """Number of stride-2 convs taking ``image_size`` down to 4×4 (3 for 32, 4 for 64)."""
    if image_size not in (32, 64):
        raise ParameterError(f"the Burgess VAE supports 32×32 or 64×64 images, got {image_size}")
    return 3 if image_size == 32 else 4


class VAETrunk(nn.Module):
    """Convolutions down to 32×4×4 = 512 features, then Linear(512→256) + ReLU → Linear(256→256) + ReLU."""

    def __init__(self, in_channels: int, image_size: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(_n_conv_layers(image_size)):
            layers += [nn.Conv2d(channels, CHANNELS, 4, stride=2, padding=1), nn.ReLU()]
            channels = CHANNELS
        self.conv = nn.Sequential(*layers)
        self.lin = nn.Sequential(
            nn.Linear(CHANNELS * 4 * 4, HIDDEN),
            nn.ReLU(),
            nn.Linear(HIDDEN, HIDDEN),
            nn.ReLU(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.lin(self.conv(x).flatten(1))


class VAEEncoder(nn.Module):
    """Trunk + μ head: maps an image to the posterior mean μ ``(N, d)``."""

    def __init__(self, in_channels: int, image_size: int, latent_dim: int) -> None:
        super().__init__()
        self.trunk = VAETrunk(in_channels, image_size)
        self.mu = nn.Linear(HIDDEN, latent_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.mu(self.trunk(x))


class VAEDecoder(nn.Module):
    """Linear(d→256→256→512) with ReLU → 32×4×4 → transposed convs up to C×H×W (sigmoid)."""

    def __init__(self, in_channels: int, image_size: int, latent_dim: int) -> None:
        super().__init__()
        self.lin = nn.Sequential(
            nn.Linear(latent_dim, HIDDEN),
            nn.ReLU(),
            nn.Linear(HIDDEN, HIDDEN),
            nn.ReLU(),
            nn.Linear(HIDDEN, CHANNELS * 4 * 4),
            nn.ReLU(),
        )
        layers: list[nn.Module] = []
        for _ in range(_n_conv_layers(image_size) - 1):
            layers += [nn.ConvTranspose2d(CHANNELS, CHANNELS, 4, stride=2, padding=1), nn.ReLU()]
        layers += [nn.ConvTranspose2d(CHANNELS, in_channels, 4, stride=2, padding=1), nn.Sigmoid()]
        self.conv = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.conv(self.lin(z).unflatten(1, (CHANNELS, 4, 4)))


class BurgessVAE(nn.Module):
    """VAE whose ``forward`` returns ``(reconstruction, mu, logvar)``.

    In training mode the decoder sees ``z = μ + σ·ε``; in eval mode it sees μ.
    ``distribution`` names the reconstruction likelihood the losses use
    (Bernoulli/BCE for binary-ish images, Gaussian/MSE-sum for CIFAR).
    """

    def __init__(self, latent_dim: int, in_channels: int = 1, image_size: int = 32,
                 distribution: str = "bernoulli") -> None:
        super().__init__()
        check_latent_dim(latent_dim)
        if in_channels not in (1, 3):
            raise ParameterError(f"in_channels must be 1 or 3, got {in_channels!r}")
        if distribution not in DISTRIBUTIONS:
            raise ParameterError(f"unknown reconstruction distribution {distribution!r}; choose one of {DISTRIBUTIONS}")
        self.latent_dim = latent_dim
        self.in_channels = in_channels
        self.image_size = image_size
        self.distribution = distribution
        self.encoder = VAEEncoder(in_channels, image_size, latent_dim)
        self.logvar_head = nn.Linear(HIDDEN, latent_dim)
        self.decoder = VAEDecoder(in_channels, image_size, latent_dim)
        self.loss_name = "vae"

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior parameters ``(mu, logvar)``, each ``(N, d)``."""
        hidden = self.encoder.trunk(x)
        return self.encoder.mu(hidden), self.logvar_head(hidden)

    def mu(self, x: Tensor) -> Tensor:
        """Posterior mean μ(x), the representation explained per unit."""
        return self.encoder(x)

    @staticmethod
    def reparameterize(mu: Tensor, logvar: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """Always draws ``μ + σ·ε`` (optionally from a seeded generator)."""
        device = generator.device if generator is not None else mu.device
        eps = torch.randn(mu.shape, generator=generator, device=device, dtype=mu.dtype).to(mu.device)
        return mu + torch.exp(0.5 * logvar) * eps

    def decode(self, z: Tensor) -> Tensor:
        """Image in [0, 1] for latent codes ``z`` ``(N, d)``."""
        return self.decoder(z)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar) if self.training else mu
        return self.decode(z), mu, logvar

    def extra_repr(self) -> str:
        return (f"latent_dim={self.latent_dim}, in_channels={self.in_channels}, "
                f"image_size={self.image_size}, distribution={self.distribution!r}")
