"""CIFAR (3×32×32) convolutional autoencoder and classifier, d = 16 (METHOD §5).

Parameter counts (checked by the tests): autoencoder 1,003,923; classifier
620,026 (10 classes) and 621,556 (100 classes). The LayerNorms normalise over
the whole (C, H, W) feature map and carry elementwise affine parameters.
"""
from __future__ import annotations

from torch import Tensor, nn

from lfx_engine.models.base import Autoencoder, Classifier, check_latent_dim

CIFAR_LATENT_DIM = 16


class CifarEncoder(nn.Module):
    """3×32×32 → 32×16×16 → 64×8×8 → 128×4×4 → 128×4×4 → 2048 → 128 → d."""

    def __init__(self, latent_dim: int = CIFAR_LATENT_DIM) -> None:
        super().__init__()
        check_latent_dim(latent_dim)
        self.conv = nn.Sequential(
            nn.Conv2d(3, 32, 3, stride=1, padding=1),
            nn.LayerNorm([32, 32, 32]),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, stride=1, padding=1),
            nn.LayerNorm([64, 16, 16]),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, stride=1, padding=1),
            nn.LayerNorm([128, 8, 8]),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(128, 128, 3, stride=1, padding=1),
            nn.ReLU(),
        )
        self.lin = nn.Sequential(
            nn.Linear(2048, 128),
            nn.ReLU(),
            nn.Linear(128, latent_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.lin(self.conv(x).flatten(1))


class CifarDecoder(nn.Module):
    """d → 128 → 2048 → 128×4×4 → 64×8×8 → 32×16×16 → 3×32×32 (sigmoid)."""

    def __init__(self, latent_dim: int = CIFAR_LATENT_DIM) -> None:
        super().__init__()
        check_latent_dim(latent_dim)
        self.lin = nn.Sequential(
            nn.Linear(latent_dim, 128),
            nn.ReLU(),
            nn.Linear(128, 2048),
            nn.ReLU(),
        )
        self.conv = nn.Sequential(
            nn.ConvTranspose2d(128, 64, 3, stride=2, padding=1, output_padding=1),
            nn.LayerNorm([64, 8, 8]),
            nn.ReLU(),
            nn.ConvTranspose2d(64, 32, 3, stride=2, padding=1, output_padding=1),
            nn.LayerNorm([32, 16, 16]),
            nn.ReLU(),
            nn.ConvTranspose2d(32, 3, 3, stride=2, padding=1, output_padding=1),
            nn.Sigmoid(),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.conv(self.lin(z).unflatten(1, (128, 4, 4)))


class CifarAutoencoder(Autoencoder):
    """CIFAR autoencoder for the reconstruction / denoising / inpainting pretext tasks (MSE loss)."""

    def __init__(self, latent_dim: int = CIFAR_LATENT_DIM, pretext: str = "denoising") -> None:
        check_latent_dim(latent_dim)
        super().__init__(CifarEncoder(latent_dim), CifarDecoder(latent_dim), latent_dim, pretext, loss="mse")


class CifarClassifier(Classifier):
    """CIFAR encoder with a Linear(d→K) logits head, K = 10 or 100."""

    def __init__(self, latent_dim: int = CIFAR_LATENT_DIM, n_classes: int = 10) -> None:
        check_latent_dim(latent_dim)
        super().__init__(CifarEncoder(latent_dim), latent_dim, n_classes)
