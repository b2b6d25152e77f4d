"""MNIST (1×28×28) convolutional autoencoder and classifier, d = 4 (METHOD §5).

Parameter counts (checked by the tests): encoder 43,428; autoencoder 87,125;
classifier 43,478.
"""
from __future__ import annotations

from torch import Tensor, nn

from lfx_engine.models.base import Autoencoder, Classifier, check_latent_dim

MNIST_LATENT_DIM = 4


class MnistEncoder(nn.Module):
    """1×28×28 → 8×14×14 → 16×7×7 → 32×3×3 → 288 → 128 → d."""

    def __init__(self, latent_dim: int = MNIST_LATENT_DIM) -> None:
        super().__init__()
        check_latent_dim(latent_dim)
        self.conv = nn.Sequential(
            nn.Conv2d(1, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=0),
            nn.ReLU(),
        )
        self.lin = nn.Sequential(
            nn.Linear(288, 128),
            nn.ReLU(),
            nn.Linear(128, latent_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.lin(self.conv(x).flatten(1))


class MnistDecoder(nn.Module):
    """Mirror image of :class:`MnistEncoder`, ending in a sigmoid so outputs lie in [0, 1]."""

    def __init__(self, latent_dim: int = MNIST_LATENT_DIM) -> None:
        super().__init__()
        check_latent_dim(latent_dim)
        self.lin = nn.Sequential(
            nn.Linear(latent_dim, 128),
            nn.ReLU(),
            nn.Linear(128, 288),
            nn.ReLU(),
        )
        self.conv = nn.Sequential(
            nn.ConvTranspose2d(32, 16, 3, stride=2, padding=0),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.ConvTranspose2d(16, 8, 3, stride=2, padding=1, output_padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.ConvTranspose2d(8, 1, 3, stride=2, padding=1, output_padding=1),
            nn.Sigmoid(),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.conv(self.lin(z).unflatten(1, (32, 3, 3)))


class MnistAutoencoder(Autoencoder):
    """MNIST autoencoder for the reconstruction / denoising / inpainting pretext tasks (MSE loss)."""

    def __init__(self, latent_dim: int = MNIST_LATENT_DIM, pretext: str = "denoising") -> None:
        check_latent_dim(latent_dim)
        super().__init__(MnistEncoder(latent_dim), MnistDecoder(latent_dim), latent_dim, pretext, loss="mse")


class MnistClassifier(Classifier):
    """MNIST encoder with a Linear(d→K) logits head (CrossEntropy)."""

    def __init__(self, latent_dim: int = MNIST_LATENT_DIM, n_classes: int = 10) -> None:
        check_latent_dim(latent_dim)
        super().__init__(MnistEncoder(latent_dim), latent_dim, n_classes)
