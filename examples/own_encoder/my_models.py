"""A small convolutional autoencoder, defined in user code (it is not one of LFX Explorer's zoo architectures).

LFX Explorer imports it through the project file (``factory = "my_models:build_autoencoder"``)
and explains its ``encoder``; TracIn and Influence Functions also use its ``decoder``.
"""
from __future__ import annotations

import torch
from torch import nn


class SmallAutoencoder(nn.Module):
    """1×28×28 grayscale images → ``latent_dim`` numbers → 1×28×28 reconstructions in [0, 1]."""

    def __init__(self, latent_dim: int = 8, width: int = 16) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, width, 4, stride=2, padding=1), nn.ReLU(),          # 14×14
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.ReLU(),  # 7×7
            nn.Flatten(), nn.Linear(2 * width * 7 * 7, latent_dim),
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, 2 * width * 7 * 7), nn.ReLU(), nn.Unflatten(1, (2 * width, 7, 7)),
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(width, 1, 4, stride=2, padding=1), nn.Sigmoid(),
        )

    def forward(self, x):
        return self.decoder(self.encoder(x))


def build_autoencoder(latent_dim: int = 8, width: int = 16) -> SmallAutoencoder:
    """The factory the project file names: returns an untrained model; LFX Explorer loads the weights."""
    return SmallAutoencoder(latent_dim, width)


class SmallVAE(nn.Module):
    """A VAE whose encoder returns the tuple ``(μ, log σ²)``; the project file says ``mu = "tuple:0"``."""

    def __init__(self, latent_dim: int = 4, width: int = 16) -> None:
        super().__init__()
        self.encoder = _GaussianEncoder(latent_dim, width)
        self.decoder = SmallAutoencoder(latent_dim, width).decoder

    def forward(self, x):
        mu, logvar = self.encoder(x)
        z = mu + (0.5 * logvar).exp() * torch.randn_like(mu) if self.training else mu
        return self.decoder(z), mu, logvar


class _GaussianEncoder(nn.Module):
    def __init__(self, latent_dim: int, width: int) -> None:
        super().__init__()
        self.body = SmallAutoencoder(2 * latent_dim, width).encoder

    def forward(self, x):
        mu, logvar = self.body(x).chunk(2, dim=1)
        return mu, logvar


def build_vae(latent_dim: int = 4, width: int = 16) -> SmallVAE:
    """The factory of the example's VAE."""
    return SmallVAE(latent_dim, width)
