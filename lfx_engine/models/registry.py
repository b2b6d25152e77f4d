"""Architecture registry: a name → builder table, torchvision-style.

``build_model(arch, **kwargs)`` validates the keyword arguments against the
builder's signature, fills in defaults, and records both on the model
(``model.arch``, ``model.arch_kwargs``) so a checkpoint can rebuild exactly the
same architecture later.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

from torch import nn

from lfx_engine.errors import ParameterError
from lfx_engine.models.base import check_latent_dim
from lfx_engine.models.cifar import CIFAR_LATENT_DIM, CifarAutoencoder, CifarClassifier
from lfx_engine.models.ecg import ECG_LATENT_DIM, ECG_SEQ_LEN, LSTMAutoencoder
from lfx_engine.models.mnist import MNIST_LATENT_DIM, MnistAutoencoder, MnistClassifier
from lfx_engine.models.vae import BurgessVAE


def mnist_ae(latent_dim: int = MNIST_LATENT_DIM, pretext: str = "denoising") -> MnistAutoencoder:
    """MNIST 1×28×28 autoencoder (pretext: reconstruction / denoising / inpainting)."""
    return MnistAutoencoder(latent_dim, pretext)


def mnist_classifier(latent_dim: int = MNIST_LATENT_DIM, n_classes: int = 10) -> MnistClassifier:
    """MNIST encoder + linear head."""
    return MnistClassifier(latent_dim, n_classes)


def cifar_ae(latent_dim: int = CIFAR_LATENT_DIM, pretext: str = "denoising") -> CifarAutoencoder:
    """CIFAR 3×32×32 autoencoder (pretext: reconstruction / denoising / inpainting)."""
    return CifarAutoencoder(latent_dim, pretext)


def cifar_classifier(latent_dim: int = CIFAR_LATENT_DIM, n_classes: int = 10) -> CifarClassifier:
    """CIFAR encoder + linear head (10 or 100 classes)."""
    return CifarClassifier(latent_dim, n_classes)


def ecg_lstm_ae(latent_dim: int = ECG_LATENT_DIM, seq_len: int = ECG_SEQ_LEN) -> LSTMAutoencoder:
    """ECG5000 LSTM autoencoder on (N, 140, 1) beats."""
    return LSTMAutoencoder(latent_dim, seq_len)


def burgess_vae(latent_dim: int, in_channels: int = 1, image_size: int = 32,
                distribution: str = "bernoulli") -> BurgessVAE:
    """Generic Burgess VAE (1 or 3 channels, 32×32 or 64×64)."""
    return BurgessVAE(latent_dim, in_channels, image_size, distribution)


def vae_mnist32(latent_dim: int = 3) -> BurgessVAE:
    """Burgess VAE for MNIST resized to 1×32×32, Bernoulli reconstruction."""
    return BurgessVAE(latent_dim, 1, 32, "bernoulli")


def vae_dsprites(latent_dim: int = 6) -> BurgessVAE:
    """Burgess VAE for dSprites 1×64×64, Bernoulli reconstruction."""
    return BurgessVAE(latent_dim, 1, 64, "bernoulli")


def vae_cifar(latent_dim: int = 16) -> BurgessVAE:
    """Burgess VAE for CIFAR 3×32×32, Gaussian (summed MSE) reconstruction."""
    return BurgessVAE(latent_dim, 3, 32, "gaussian")


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "mnist_ae": mnist_ae,
    "mnist_classifier": mnist_classifier,
    "cifar_ae": cifar_ae,
    "cifar_classifier": cifar_classifier,
    "ecg_lstm_ae": ecg_lstm_ae,
    "burgess_vae": burgess_vae,
    "vae_mnist32": vae_mnist32,
    "vae_dsprites": vae_dsprites,
    "vae_cifar": vae_cifar,
}


def resolve_arch_kwargs(arch: str, **kwargs: Any) -> dict[str, Any]:
    """The complete keyword arguments (defaults filled) ``build_model(arch, ...)`` would use."""
    builder = get_builder(arch)
    try:
        bound = inspect.signature(builder).bind(**kwargs)
    except TypeError as exc:
        raise ParameterError(f"invalid arguments for architecture {arch!r}: {exc}") from None
    bound.apply_defaults()
    resolved = dict(bound.arguments)
    if "latent_dim" in resolved:
        check_latent_dim(resolved["latent_dim"])
    return resolved


def get_builder(arch: str) -> Callable[..., nn.Module]:
    """The builder registered under ``arch``; ParameterError if unknown."""
    try:
        return ARCHITECTURES[arch]
    except (KeyError, TypeError):
        raise ParameterError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}") from None


def build_model(arch: str, **kwargs: Any) -> nn.Module:
    """Build a freshly initialised model; records ``model.arch`` and ``model.arch_kwargs``."""
    resolved = resolve_arch_kwargs(arch, **kwargs)
    model = get_builder(arch)(**resolved)
    # setattr: torch types nn.Module.__setattr__'s value as Tensor | Module, but plain attributes are fine
    setattr(model, "arch", arch)
    setattr(model, "arch_kwargs", resolved)
    return model
