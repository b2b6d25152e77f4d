"""Generic model wrappers shared by the architecture families.

``Autoencoder`` and ``Classifier`` fix the engine-wide contract (ARCHITECTURE.md):
an ``encoder`` attribute mapping inputs to ``(N, d)``, a ``latent_dim`` attribute,
reconstructions resp. logits from ``forward``, and the pretext perturbation applied
in ``forward`` only in training mode.
"""
from __future__ import annotations

from torch import Tensor, nn

from lfx_engine.errors import ParameterError
from lfx_engine.models.pretext import get_perturbation

RECONSTRUCTION_LOSSES = ("mse", "l1")


#: The largest latent size an architecture accepts (beyond it the linear layers alone would not fit in memory).
MAX_LATENT_DIM = 65536


def check_latent_dim(latent_dim: int) -> int:
    """Refuse non-integer, non-positive or absurdly large latent sizes with a ParameterError."""
    if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or not 1 <= latent_dim <= MAX_LATENT_DIM:
        raise ParameterError(f"latent_dim must be an integer in 1..{MAX_LATENT_DIM}, got {latent_dim!r}")
    return latent_dim


class Autoencoder(nn.Module):
    """Encoder + decoder trained on a pretext task; ``forward`` returns the reconstruction.

    In training mode the input is perturbed (denoising noise / inpainting mask)
    before encoding; in eval mode ``forward`` is deterministic. The target of the
    loss is always the clean input.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, latent_dim: int,
                 pretext: str = "reconstruction", loss: str = "mse") -> None:
        super().__init__()
        if loss not in RECONSTRUCTION_LOSSES:
            raise ParameterError(f"unknown reconstruction loss {loss!r}; choose one of {RECONSTRUCTION_LOSSES}")
        self.encoder = encoder
        self.decoder = decoder
        self.latent_dim = check_latent_dim(latent_dim)
        self.pretext = pretext
        self.perturb = get_perturbation(pretext)
        self.loss_name = loss

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            x = self.perturb(x)
        return self.decoder(self.encoder(x))

    def extra_repr(self) -> str:
        return f"latent_dim={self.latent_dim}, pretext={self.pretext!r}, loss={self.loss_name!r}"


class Classifier(nn.Module):
    """Encoder + linear head; ``forward`` returns logits (no softmax: CrossEntropy applies it)."""

    def __init__(self, encoder: nn.Module, latent_dim: int, n_classes: int) -> None:
        super().__init__()
        if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
            raise ParameterError(f"n_classes must be an integer >= 2, got {n_classes!r}")
        self.encoder = encoder
        self.latent_dim = check_latent_dim(latent_dim)
        self.n_classes = n_classes
        self.head = nn.Linear(latent_dim, n_classes)
        self.pretext = "classification"
        self.loss_name = "cross_entropy"

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x))

    def extra_repr(self) -> str:
        return f"latent_dim={self.latent_dim}, n_classes={self.n_classes}"
