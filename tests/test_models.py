"""Architectures (exact parameter counts, shapes, the encoder contract), pretext perturbations and losses."""
from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call, grad, vmap

from lfx_engine.errors import ParameterError
from lfx_engine.models import (
    ARCHITECTURES,
    build_model,
    denoising,
    example_loss,
    get_perturbation,
    identity,
    inpainting,
)
from lfx_engine.models.losses import (
    beta_tcvae_loss,
    beta_vae_loss,
    gaussian_log_density,
    kl_normal_per_example,
    reconstruction_per_example,
)

# arch, kwargs, input shape (without batch), total parameters, latent size
CASES = [
    ("mnist_ae", {}, (1, 28, 28), 87_125, 4),
    ("mnist_classifier", {}, (1, 28, 28), 43_478, 4),
    ("cifar_ae", {}, (3, 32, 32), 1_003_923, 16),
    ("cifar_classifier", {}, (3, 32, 32), 620_026, 16),
    ("cifar_classifier", {"n_classes": 100}, (3, 32, 32), 621_556, 16),
    ("ecg_lstm_ae", {}, (140, 1), 249_473, 64),
    ("vae_mnist32", {}, (1, 32, 32), 463_783, 3),
    ("vae_dsprites", {}, (1, 64, 64), 498_925, 6),
    ("vae_cifar", {}, (3, 32, 32), 475_843, 16),
]
IDS = [f"{a}{'-' + '-'.join(f'{k}{v}' for k, v in kw.items()) if kw else ''}" for a, kw, *_ in CASES]


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("arch,kwargs,shape,total,d", CASES, ids=IDS)
def test_parameter_counts_and_shapes(arch, kwargs, shape, total, d):
    model = build_model(arch, **kwargs).eval()
    assert n_params(model) == total
    assert model.latent_dim == d
    x = torch.rand(2, *shape)
    with torch.no_grad():
        h = model.encoder(x)
        out = model(x)
    assert h.shape == (2, d)
    names = [name for name, _ in model.named_parameters()]
    encoder_names = [f"encoder.{name}" for name, _ in model.encoder.named_parameters()]
    assert set(encoder_names) <= set(names) and encoder_names
    if arch.endswith("_ae"):
        assert out.shape == x.shape
    elif "classifier" in arch:
        assert out.shape == (2, kwargs.get("n_classes", 10))
    else:
        recon, mu, logvar = out
        assert recon.shape == x.shape and mu.shape == (2, d) and logvar.shape == (2, d)
        assert torch.equal(mu, h)                       # encoder returns the posterior mean
        assert not any(n.startswith("encoder.") for n, _ in model.logvar_head.named_parameters(prefix="logvar_head"))
        assert model.decode(mu).shape == x.shape
    if arch in ("vae_mnist32", "vae_dsprites", "vae_cifar", "mnist_ae", "cifar_ae"):
        assert 0.0 <= float(out[0].min() if isinstance(out, tuple) else out.min())
        assert float(out[0].max() if isinstance(out, tuple) else out.max()) <= 1.0


def test_encoder_counts_from_the_method():
    assert n_params(build_model("mnist_ae").encoder) == 43_428
    # classifier = encoder + Linear(d→K)
    assert n_params(build_model("cifar_classifier").encoder) == 620_026 - (16 * 10 + 10)


def test_registry_validation():
    assert {"mnist_ae", "mnist_classifier", "cifar_ae", "cifar_classifier", "ecg_lstm_ae", "vae_mnist32",
            "vae_dsprites", "vae_cifar"} <= set(ARCHITECTURES)
    with pytest.raises(ParameterError, match="unknown architecture"):
        build_model("resnet50")
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ParameterError, match="latent_dim"):
            build_model("mnist_ae", latent_dim=bad)
    with pytest.raises(ParameterError, match="latent_dim"):
        build_model("vae_cifar", latent_dim=0)
    with pytest.raises(ParameterError, match="invalid arguments"):
        build_model("mnist_ae", colour=True)
    with pytest.raises(ParameterError, match="pretext"):
        build_model("mnist_ae", pretext="colorization")
    with pytest.raises(ParameterError, match="n_classes"):
        build_model("cifar_classifier", n_classes=1)
    model = build_model("mnist_ae", latent_dim=8)
    assert model.arch == "mnist_ae" and model.arch_kwargs == {"latent_dim": 8, "pretext": "denoising"}
    assert model.encoder(torch.rand(1, 1, 28, 28)).shape == (1, 8)


# --------------------------------------------------------------------------- pretext perturbations


def test_perturbations_statistics_and_purity():
    x = torch.full((64, 3, 32, 32), 0.5)
    original = x.clone()
    assert identity(x) is x
    noisy = denoising(x, torch.Generator().manual_seed(0))
    assert torch.equal(x, original)                              # input untouched
    assert abs(float((noisy - x).std()) - 0.3) < 0.01
    assert float(noisy.max()) > 1.0 and float(noisy.min()) < 0.0  # no clipping
    masked = inpainting(torch.ones(64, 3, 32, 32), torch.Generator().manual_seed(0))
    assert set(masked.unique().tolist()) == {0.0, 1.0}
    assert abs(float((masked == 0).float().mean()) - 0.2) < 0.01
    # per channel: some pixels have only part of their channels masked
    per_pixel = (masked == 0).float().mean(1)
    assert bool(((per_pixel > 0) & (per_pixel < 1)).any())
    # seeded generators reproduce, unseeded calls differ
    again = denoising(x, torch.Generator().manual_seed(0))
    assert torch.equal(noisy, again)
    assert not torch.equal(denoising(x), denoising(x))
    assert get_perturbation("inpainting") is inpainting
    with pytest.raises(ParameterError):
        get_perturbation("jigsaw")


@pytest.mark.parametrize("arch,pretext", [("mnist_ae", "denoising"), ("mnist_ae", "inpainting"),
                                          ("cifar_ae", "denoising")])
def test_autoencoder_perturbs_only_in_training_mode(arch, pretext):
    model = build_model(arch, pretext=pretext)
    x = torch.rand(4, *((1, 28, 28) if arch == "mnist_ae" else (3, 32, 32)))
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(x), model(x))
    # the reconstruction task has nothing random: training-mode outputs repeat exactly
    plain = build_model(arch, pretext="reconstruction").train()
    with torch.no_grad():
        assert torch.equal(plain(x), plain(x))


def test_forward_applies_the_perturbation_in_train_mode_only():
    model = build_model("mnist_ae", pretext="denoising")
    calls = []
    model.perturb = lambda x, generator=None: calls.append(1) or x
    x = torch.rand(3, 1, 28, 28)
    model.eval()(x)
    assert calls == []
    model.train()(x)
    assert calls == [1]


def test_vae_samples_in_training_and_uses_mu_in_eval():
    model = build_model("vae_mnist32")
    x = torch.rand(5, 1, 32, 32)
    model.eval()
    with torch.no_grad():
        recon, mu, _ = model(x)
        assert torch.equal(recon, model.decode(mu))
        assert torch.equal(model(x)[0], recon)
        assert torch.equal(model.mu(x), mu)
        model.train()
        assert not torch.equal(model(x)[0], model(x)[0])
        z1 = model.reparameterize(mu, torch.zeros_like(mu), torch.Generator().manual_seed(3))
        z2 = model.reparameterize(mu, torch.zeros_like(mu), torch.Generator().manual_seed(3))
        assert torch.equal(z1, z2)


def test_classifier_and_ecg_are_deterministic_in_both_modes():
    for arch, shape in (("mnist_classifier", (1, 28, 28)), ("ecg_lstm_ae", (140, 1))):
        model = build_model(arch)
        x = torch.rand(3, *shape)
        for mode in (True, False):
            model.train(mode)
            with torch.no_grad():
                assert torch.equal(model(x), model(x))


# --------------------------------------------------------------------------- losses


def test_kl_and_reconstruction_hand_values():
    mu = torch.zeros(4, 3)
    logvar = torch.zeros(4, 3)
    assert torch.equal(kl_normal_per_example(mu, logvar), torch.zeros(4))
    # KL(N(1, 1) || N(0, 1)) = 0.5 per dimension
    assert torch.allclose(kl_normal_per_example(torch.ones(2, 3), torch.zeros(2, 3)), torch.full((2,), 1.5))
    x = torch.rand(2, 1, 4, 4)
    # Bernoulli with p = 0.5 everywhere: log 2 per pixel, summed per image
    bce = reconstruction_per_example(torch.full_like(x, 0.5), x, "bernoulli")
    assert torch.allclose(bce, torch.full((2,), 16 * math.log(2.0)), atol=1e-5)
    assert torch.equal(reconstruction_per_example(x, x, "gaussian"), torch.zeros(2))
    assert torch.allclose(reconstruction_per_example(x + 0.5, x, "gaussian"), torch.full((2,), 16 * 0.25))


def test_beta_vae_loss_reduces_to_beta_times_kl():
    x = torch.rand(3, 1, 4, 4)
    mu = torch.ones(3, 2)
    logvar = torch.zeros(3, 2)
    total, parts = beta_vae_loss(x, x, mu, logvar, beta=5, distribution="gaussian")
    assert float(parts["rec"]) == 0.0 and math.isclose(float(parts["kl"]), 1.0, rel_tol=1e-6)
    assert math.isclose(float(total), 5.0, rel_tol=1e-6)
    with pytest.raises(ParameterError, match="beta"):
        beta_vae_loss(x, x, mu, logvar, beta=0)
    with pytest.raises(ParameterError, match="beta"):
        beta_vae_loss(x, x, mu, logvar, beta=-1.0)


def test_beta_tcvae_decomposition():
    torch.manual_seed(0)
    x = torch.rand(8, 1, 4, 4)
    recon = torch.rand(8, 1, 4, 4).clamp(0.01, 0.99)
    mu = torch.randn(8, 3)
    logvar = torch.randn(8, 3) * 0.3
    z = mu + torch.exp(0.5 * logvar) * torch.randn(8, 3)
    total, parts = beta_tcvae_loss(recon, x, z, mu, logvar, beta=1.0, dataset_size=1000)
    assert all(torch.isfinite(v) for v in parts.values()) and torch.isfinite(total)
    # MI + TC + dimwise-KL is the one-sample KL estimate E[log q(z|x) - log p(z)]
    log_qzx = gaussian_log_density(z, mu, logvar).sum(1)
    log_pz = gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z)).sum(1)
    assert torch.allclose(parts["mi"] + parts["tc"] + parts["dwkl"], (log_qzx - log_pz).mean(), atol=1e-4)
    assert torch.allclose(total, parts["rec"] + (log_qzx - log_pz).mean(), atol=1e-4)
    total10, parts10 = beta_tcvae_loss(recon, x, z, mu, logvar, beta=10.0, dataset_size=1000)
    assert torch.allclose(total10, total + 9 * parts["tc"], atol=1e-3)
    # batch of one from a dataset of one: q(z) = q(z|x) and it factorises, so MI = TC = 0
    _, single = beta_tcvae_loss(recon[:1], x[:1], z[:1], mu[:1], logvar[:1], beta=5.0, dataset_size=1)
    assert abs(float(single["mi"])) < 1e-5 and abs(float(single["tc"])) < 1e-5
    # ... and with z = mu = 0, logvar = 0 the posterior is the prior: every KL term vanishes
    zero = torch.zeros(1, 3)
    _, prior = beta_tcvae_loss(recon[:1], x[:1], zero, zero, zero, beta=5.0, dataset_size=1)
    assert all(abs(float(prior[k])) < 1e-6 for k in ("mi", "tc", "dwkl", "kl"))
    with pytest.raises(ParameterError):
        beta_tcvae_loss(recon, x, z, mu, logvar, beta=0.0, dataset_size=10)


@pytest.mark.parametrize("kind", ["betavae", "btcvae"])
def test_kl_warmup_scales_the_regulariser_linearly_then_stops(kind):
    """A KL warm-up of 4 steps weighs the regulariser 1/4, 2/4, 3/4, then 1 in training; evaluation is always the
    full objective; the reconstruction term is never scaled."""
    from lfx_engine.training.objectives import VAEObjective, make_objective

    torch.manual_seed(0)
    model = build_model("vae_mnist32", latent_dim=3)
    x = torch.rand(6, 1, 32, 32)
    objective = make_objective(kind, model, beta=5.0, dataset_size=100, kl_warmup=4)
    assert isinstance(objective, VAEObjective)
    assert [objective.kl_weight(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    model.train()
    for step in range(6):
        torch.manual_seed(step)  # the same z sample for both losses of a step
        loss, parts = objective.train_loss(model, x, None)
        torch.manual_seed(step)
        full, _ = VAEObjective(kind, 5.0, model.distribution, 100).train_loss(model, x, None)
        weight = min(1.0, (step + 1) / 4)
        assert torch.allclose(loss - parts["rec"], weight * (full - parts["rec"]), rtol=1e-4, atol=1e-4)
    assert objective.steps_done == 6
    model.eval()
    g = torch.Generator().manual_seed(1)
    evaluated, _ = objective.eval_loss(model, x, None, g)
    reference, _ = VAEObjective(kind, 5.0, model.distribution, 100).eval_loss(model, x, None,
                                                                              torch.Generator().manual_seed(1))
    assert torch.equal(evaluated, reference)
    with pytest.raises(ParameterError, match="warm-up"):
        VAEObjective(kind, 5.0, warmup_steps=-1, dataset_size=100)
    with pytest.raises(ParameterError, match="VAE tasks only"):
        make_objective("reconstruction", build_model("mnist_ae", latent_dim=4, pretext="reconstruction"),
                       kl_warmup=10)


# --------------------------------------------------------------------------- per-example loss (TracIn / IF)


def test_example_loss_values():
    ae = build_model("mnist_ae").eval()
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        losses = example_loss(ae, x)
        assert losses.shape == (5,)
        assert torch.allclose(losses, ((ae(x) - x) ** 2).mean((1, 2, 3)))
        assert torch.equal(losses, example_loss(ae, x))            # eval mode: deterministic
        ecg = build_model("ecg_lstm_ae").eval()
        beats = torch.randn(3, 140, 1)
        assert torch.allclose(example_loss(ecg, beats), (ecg(beats) - beats).abs().mean((1, 2)))
        clf = build_model("mnist_classifier").eval()
        assert example_loss(clf, x, torch.arange(5)).shape == (5,)
        vae = build_model("vae_mnist32").eval()
        assert example_loss(vae, torch.rand(2, 1, 32, 32)).shape == (2,)
    with pytest.raises(ParameterError, match="labels"):
        example_loss(clf, x)


def test_example_loss_under_vmap_matches_a_loop():
    model = build_model("mnist_ae").eval()
    params = {k: v.detach() for k, v in model.named_parameters() if k.startswith("encoder.")}
    x = torch.rand(3, 1, 28, 28)

    def loss_one(p, xi):
        return example_loss(model, xi.unsqueeze(0), params=p).squeeze(0)

    batched = vmap(grad(loss_one), in_dims=(None, 0))(params, x)
    for i in range(3):
        single = grad(loss_one)(params, x[i])
        for key in params:
            assert torch.allclose(batched[key][i], single[key], atol=1e-6)
    # functional_call with swapped weights changes the loss
    shifted = {k: v + 0.1 for k, v in params.items()}
    assert not torch.allclose(example_loss(model, x, params=shifted), example_loss(model, x))
    assert torch.allclose(functional_call(model, params, (x,)), model(x))
