"""Training objectives: how one batch turns into a loss, in training and in evaluation.

The distinction matters for the pretext tasks (METHOD §5): during training the
autoencoder's ``forward`` perturbs its own input (global RNG); during
evaluation the model is in eval mode and the objective perturbs the input
explicitly with a **seeded** generator, so held-out losses measure the pretext
task and are comparable from epoch to epoch.
"""
from __future__ import annotations

from typing import Optional, cast

import torch
from torch import Tensor, nn

from lfx_engine.errors import ParameterError
from lfx_engine.models.losses import beta_tcvae_loss, beta_vae_loss, cross_entropy, l1_loss, mse_loss
from lfx_engine.models.pretext import PERTURBATIONS, get_perturbation

Components = dict[str, Tensor]
TASKS = ("reconstruction", "denoising", "inpainting", "classification", "betavae", "btcvae")


class Objective:
    """Base class. ``needs_labels`` tells the trainer whether ``y`` is required."""

    name = "objective"
    needs_labels = False

    def train_loss(self, model: nn.Module, x: Tensor, y: Optional[Tensor]) -> tuple[Tensor, Components]:
        """Loss of a batch with the model in training mode (randomness from the global RNG)."""
        raise NotImplementedError

    def eval_loss(self, model: nn.Module, x: Tensor, y: Optional[Tensor],
                  generator: Optional[torch.Generator]) -> tuple[Tensor, Components]:
        """Loss of a batch with the model in eval mode; any randomness comes from ``generator``."""
        raise NotImplementedError


class ReconstructionObjective(Objective):
    """Autoencoder pretext task: reconstruct the clean input from a perturbed one (MSE, or L1 for ECG)."""

    def __init__(self, pretext: str = "reconstruction", loss: str = "mse") -> None:
        self.name = pretext
        self.perturb = get_perturbation(pretext)
        if loss not in ("mse", "l1"):
            raise ParameterError(f"unknown reconstruction loss {loss!r}")
        self.loss_name = loss
        self.loss_fn = mse_loss if loss == "mse" else l1_loss

    def train_loss(self, model, x, y):
        loss = self.loss_fn(model(x), x)  # the model perturbs x itself in training mode
        return loss, {}

    def eval_loss(self, model, x, y, generator):
        loss = self.loss_fn(model(self.perturb(x, generator)), x)
        return loss, {}


class ClassificationObjective(Objective):
    """Cross-entropy on logits; the evaluation also reports accuracy."""

    name = "classification"
    needs_labels = True

    def train_loss(self, model, x, y):
        return cross_entropy(model(x), y), {}

    def eval_loss(self, model, x, y, generator):
        logits = model(x)
        accuracy = (logits.argmax(1) == y).to(torch.float32).mean()
        return cross_entropy(logits, y), {"accuracy": accuracy.detach()}


class VAEObjective(Objective):
    """β-VAE or β-TC-VAE. ``dataset_size`` (the training-set size N) is needed by β-TC-VAE's estimator.

    Evaluation draws ``z = μ + σ·ε`` from the seeded generator, so the held-out
    value estimates the same objective as training, reproducibly.

    ``warmup_steps`` > 0: a linear KL warm-up (Bowman et al. 2016). The regulariser's weight rises from
    1/warmup_steps to 1 over the first that many training steps (one ``train_loss`` call is one optimiser
    step), so the decoder learns to use the latents before the prior pulls them in; it is a remedy for
    posterior collapse at large β. Evaluation always uses the full objective.
    """

    def __init__(self, kind: str, beta: float, distribution: str = "bernoulli",
                 dataset_size: Optional[int] = None, warmup_steps: int = 0) -> None:
        if kind not in ("betavae", "btcvae"):
            raise ParameterError(f"unknown VAE loss {kind!r}; choose betavae or btcvae")
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta > 0:
            raise ParameterError(f"beta must be a positive number, got {beta!r}")
        if kind == "btcvae" and (dataset_size is None or dataset_size < 1):
            raise ParameterError("the beta-TC-VAE loss needs the training-set size (dataset_size)")
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ParameterError(f"the KL warm-up must be a whole number of steps >= 0, got {warmup_steps!r}")
        self.name = kind
        self.kind = kind
        self.beta = float(beta)
        self.distribution = distribution
        self.dataset_size = dataset_size
        self.warmup_steps = warmup_steps
        self.steps_done = 0

    def kl_weight(self, step: int) -> float:
        """The regulariser's weight at training step ``step`` (0-based): 1 after the warm-up."""
        if self.warmup_steps <= 0:
            return 1.0
        return min(1.0, (step + 1) / self.warmup_steps)

    def _loss(self, model, x, generator, kl_weight: float = 1.0):
        mu, logvar = model.encode(x)
        z = model.reparameterize(mu, logvar, generator)
        recon = model.decode(z)
        if self.kind == "betavae":
            return beta_vae_loss(recon, x, mu, logvar, self.beta, self.distribution, kl_weight=kl_weight)
        assert self.dataset_size is not None  # __init__ requires it for btcvae
        return beta_tcvae_loss(recon, x, z, mu, logvar, self.beta, self.dataset_size, self.distribution,
                               kl_weight=kl_weight)

    def train_loss(self, model, x, y):
        weight = self.kl_weight(self.steps_done)
        self.steps_done += 1
        return self._loss(model, x, None, kl_weight=weight)

    def eval_loss(self, model, x, y, generator):
        return self._loss(model, x, generator)


def make_objective(task: str, model: nn.Module, *, beta: Optional[float] = None,
                   dataset_size: Optional[int] = None, kl_warmup: int = 0) -> Objective:
    """The objective for a zoo task name, checked against the model it will train (``kl_warmup``: VAE tasks)."""
    if kl_warmup and task not in ("betavae", "btcvae"):
        raise ParameterError(f"a KL warm-up applies to VAE tasks only, not {task!r}")
    if task in PERTURBATIONS:
        if getattr(model, "pretext", None) != task:
            raise ParameterError(f"task {task!r} does not match the model's pretext {getattr(model, 'pretext', None)!r}")
        return ReconstructionObjective(task, getattr(model, "loss_name", "mse"))
    if task == "classification":
        if getattr(model, "loss_name", None) != "cross_entropy":
            raise ParameterError("the classification task needs a classifier architecture")
        return ClassificationObjective()
    if task in ("betavae", "btcvae"):
        if not hasattr(model, "reparameterize"):
            raise ParameterError(f"task {task!r} needs a VAE architecture")
        if beta is None:
            raise ParameterError(f"task {task!r} needs beta")
        # a plain str attribute of the VAE (torch types unknown Module attributes as Tensor | Module)
        distribution = cast(str, model.distribution)
        return VAEObjective(task, beta, distribution, dataset_size, warmup_steps=kl_warmup)
    raise ParameterError(f"unknown task {task!r}; choose one of {TASKS}")
