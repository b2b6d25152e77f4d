"""Model architectures (METHOD §5), their losses, pretext perturbations and a registry.

Every model has an ``encoder`` attribute mapping inputs to the representation
``(N, d)`` (the posterior mean μ for VAEs) and a ``latent_dim`` attribute.
"""
from lfx_engine.models.base import Autoencoder, Classifier
from lfx_engine.models.cifar import CifarAutoencoder, CifarClassifier, CifarDecoder, CifarEncoder
from lfx_engine.models.ecg import LSTMAutoencoder, LSTMDecoder, LSTMEncoder
from lfx_engine.models.losses import (
    beta_tcvae_loss,
    beta_vae_loss,
    cross_entropy,
    example_loss,
    kl_normal_per_example,
    l1_loss,
    mse_loss,
    reconstruction_per_example,
)
from lfx_engine.models.mnist import MnistAutoencoder, MnistClassifier, MnistDecoder, MnistEncoder
from lfx_engine.models.pretext import PERTURBATIONS, denoising, get_perturbation, identity, inpainting
from lfx_engine.models.registry import ARCHITECTURES, build_model, resolve_arch_kwargs
from lfx_engine.models.vae import BurgessVAE

__all__ = [
    "ARCHITECTURES", "PERTURBATIONS", "Autoencoder", "BurgessVAE", "CifarAutoencoder", "CifarClassifier",
    "CifarDecoder", "CifarEncoder", "Classifier", "LSTMAutoencoder", "LSTMDecoder", "LSTMEncoder",
    "MnistAutoencoder", "MnistClassifier", "MnistDecoder", "MnistEncoder", "beta_tcvae_loss", "beta_vae_loss",
    "build_model", "cross_entropy", "denoising", "example_loss", "get_perturbation", "identity", "inpainting",
    "kl_normal_per_example", "l1_loss", "mse_loss", "reconstruction_per_example", "resolve_arch_kwargs",
]
