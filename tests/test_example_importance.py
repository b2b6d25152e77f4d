"""Tests of the label-free example-importance engine (DKNN, cosine, SimplEx, TracIn, IF)."""
from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lfx_engine.errors import CheckpointError, ParameterError
from lfx_engine.example_importance import (
    cosine_scores,
    dknn_scores,
    draw_minibatches,
    encode,
    influence_scores,
    l1_per_example,
    mse_per_example,
    per_example_grads,
    simplex_scores,
    tracin_scores,
)
from lfx_engine.example_importance.influence import BatchHessian, latent_mode_applies


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tests run many tiny ops: one intra-op thread avoids synchronisation stalls on busy CPUs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- models
class TinyAE(nn.Module):
    """A few-parameter autoencoder (encoder 3→2 with tanh), small enough for an explicit Hessian."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(3, 2), nn.Tanh())
        self.decoder = nn.Linear(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class ConvAE(nn.Module):
    """A small conv autoencoder with BatchNorm and a perturbation applied only in training mode."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 3, 3, 2, 1), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(48, 2)
        )
        self.decoder = nn.Sequential(nn.Linear(2, 64), nn.Sigmoid(), nn.Unflatten(1, (1, 8, 8)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            x = x + 0.3 * torch.randn_like(x)
        return self.decoder(self.encoder(x))


class LSTMEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm1 = nn.LSTM(1, 4, batch_first=True)
        self.lstm2 = nn.LSTM(4, 2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.lstm1(x)
        _, (h_n, _) = self.lstm2(h)
        return h_n[-1]


class LSTMAE(nn.Module):
    """A miniature of the ECG LSTM autoencoder (final hidden state as latent)."""

    def __init__(self, steps: int = 6) -> None:
        super().__init__()
        self.steps = steps
        self.encoder = LSTMEncoder()
        self.dec = nn.LSTM(2, 3, batch_first=True)
        self.head = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x).unsqueeze(1).repeat(1, self.steps, 1)
        h, _ = self.dec(z)
        return self.head(h)


def conv_model() -> ConvAE:
    """A ConvAE whose BatchNorm running statistics are not the defaults."""
    model = ConvAE()
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(16, 1, 8, 8))
    return model


def autograd_grads(model: nn.Module, x: torch.Tensor, loss_fn=mse_per_example) -> torch.Tensor:
    """Reference per-example encoder gradients: one plain autograd call per example, eval mode."""
    model.eval()
    params = [p for n, p in model.named_parameters() if n.startswith("encoder.")]
    rows = []
    for i in range(len(x)):
        xi = x[i : i + 1]
        loss = loss_fn(model(xi), xi).sum()
        rows.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]))
    return torch.stack(rows)


# --------------------------------------------------------------------------- latent methods
def test_dknn_and_cosine_rank_exact_duplicate_first() -> None:
    h_train = torch.randn(50, 4)
    picks = [7, 21, 3, 49, 0]
    h_test = h_train[picks].clone()
    for scores in (dknn_scores(h_test, h_train, batch_size=2), cosine_scores(h_test, h_train, batch_size=2)):
        assert scores.shape == (5, 50) and scores.dtype == torch.float32
        assert scores.argmax(dim=1).tolist() == picks  # every row filled, incl. the remainder row
    dknn = dknn_scores(h_test, h_train, eps=1e-8)
    assert torch.allclose(dknn[torch.arange(5), picks], torch.full((5,), 1e8))
    other = h_train[1]
    expected = 1.0 / ((h_test[0] - other).square().sum() + 1e-8)
    assert torch.isclose(dknn[0, 1], expected, rtol=1e-5)


def test_cosine_uses_normalised_latents() -> None:
    h_train = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    h_test = torch.tensor([[5.0, 0.0]])
    assert torch.allclose(cosine_scores(h_test, h_train), torch.tensor([[1.0, 0.0, -1.0]]), atol=1e-6)


def test_encode_batches_and_restores_mode() -> None:
    model = conv_model()  # left in training mode
    x = torch.rand(7, 1, 8, 8)
    h = encode(model.encoder, x, batch_size=3)
    model.eval()
    with torch.no_grad():
        expected = model.encoder(x)
    assert torch.allclose(h, expected, atol=1e-6)
    model.train()
    encode(model.encoder, x, batch_size=3)
    assert model.encoder.training


def test_bad_arguments_raise_parameter_error() -> None:
    with pytest.raises(ParameterError):
        dknn_scores(torch.randn(3), torch.randn(4, 3))
    with pytest.raises(ParameterError):
        simplex_scores(torch.randn(2, 3), torch.randn(4, 2))
    with pytest.raises(ParameterError):
        influence_scores(TinyAE(), torch.randn(3, 3), torch.randn(2, 3), recursion_depth=0)


# --------------------------------------------------------------------------- SimplEx
def test_simplex_weights_are_convex_and_reconstruct_a_hull_point() -> None:
    gen = torch.Generator().manual_seed(1)
    h_train = 3 * torch.randn(100, 4, generator=gen)
    idx = torch.randint(0, 100, (7, 3), generator=gen)
    mix = torch.distributions.Dirichlet(torch.ones(3)).sample((7,))
    h_test = (mix[:, :, None] * h_train[idx]).sum(1)  # sparse convex combinations: inside the hull
    weights, residuals = simplex_scores(h_test, h_train, batch_size=3)  # remainder batch of 1
    assert weights.shape == (7, 100) and residuals.shape == (7,)
    assert (weights >= 0).all()
    assert torch.allclose(weights.sum(1), torch.ones(7), atol=1e-5)
    assert residuals.max() < 1e-2 * h_test.norm(dim=1).min()
    assert torch.allclose(residuals, (h_test - weights @ h_train).norm(dim=1), atol=1e-4)


def test_simplex_k_nearest_restricts_support() -> None:
    h_train = torch.randn(40, 3)
    h_test = torch.randn(5, 3)
    weights, residuals = simplex_scores(h_test, h_train, k_nearest=6, steps=200, batch_size=2)
    nearest = torch.cdist(h_test, h_train).topk(6, largest=False).indices
    mask = torch.zeros_like(weights, dtype=torch.bool).scatter_(1, nearest, True)
    assert (weights[~mask] == 0).all()
    assert torch.allclose(weights.sum(1), torch.ones(5), atol=1e-5)
    assert torch.isfinite(residuals).all()


# --------------------------------------------------------------------------- gradients
def test_per_example_grads_match_autograd_loop_and_restore_mode() -> None:
    model = conv_model()
    assert model.training
    x = torch.rand(10, 1, 8, 8)
    grads = per_example_grads(model, x, batch_size=4)  # 10 is not a multiple of 4
    assert model.training  # mode restored
    expected = autograd_grads(copy.deepcopy(model), x)
    assert grads.shape == expected.shape == (10, sum(p.numel() for p in model.encoder.parameters()))
    assert torch.allclose(grads, expected, atol=1e-6, rtol=1e-4)
    loop = per_example_grads(model, x, batch_size=4, method="loop")
    assert torch.allclose(loop, expected, atol=1e-6, rtol=1e-4)
    # a batch of one (a query, or the last block of 9 by 4) takes the plain autograd call in "auto"
    one = per_example_grads(model, x[:9], batch_size=4)
    assert torch.allclose(one, expected[:9], atol=1e-6, rtol=1e-4)
    assert torch.allclose(per_example_grads(model, x[3:4]), expected[3:4], atol=1e-6, rtol=1e-4)


def test_per_example_grads_lstm_and_l1_loss() -> None:
    model = LSTMAE()
    x = torch.randn(5, 6, 1)
    grads = per_example_grads(model, x, loss_fn=l1_per_example, batch_size=2)  # auto: loop for RNNs
    expected = autograd_grads(model, x, loss_fn=l1_per_example)
    assert torch.allclose(grads, expected, atol=1e-6, rtol=1e-4)
    vmapped = per_example_grads(model, x, loss_fn=l1_per_example, batch_size=2, method="vmap")
    assert torch.allclose(vmapped, expected, atol=1e-6, rtol=1e-4)


def test_batch_hessian_lstm_matches_autograd_hvp() -> None:
    model = LSTMAE().eval()
    data = torch.randn(5, 6, 1)
    params = {n: p for n, p in model.named_parameters() if n.startswith("encoder.")}
    hessian = BatchHessian(model, params, data, l1_per_example, "full")
    hessian.bind(torch.tensor([1, 3, 3]))
    vectors = torch.randn(2, sum(p.numel() for p in params.values()))
    ref = torch.stack([_flat_hvp(model, params, data[[1, 3, 3]], v, l1_per_example) for v in vectors])
    assert torch.allclose(hessian.apply(vectors), ref, rtol=1e-4, atol=1e-6)


def test_random_projection_is_seeded() -> None:
    model = TinyAE()
    x = torch.randn(6, 3)
    a = per_example_grads(model, x, projection_dim=5, projection_seed=3)
    b = per_example_grads(model, x, projection_dim=5, projection_seed=3)
    c = per_example_grads(model, x, projection_dim=5, projection_seed=4)
    assert a.shape == (6, 5) and torch.equal(a, b) and not torch.equal(a, c)


# --------------------------------------------------------------------------- TracIn
def test_gradient_baselines_match_explicit_gradients_at_the_final_weights() -> None:
    from lfx_engine.example_importance import gradient_similarity_scores

    model = conv_model()
    x_train, x_test = torch.rand(7, 1, 8, 8), torch.rand(4, 1, 8, 8)
    before = copy.deepcopy(model.state_dict())
    g_train, g_test = autograd_grads(model, x_train), autograd_grads(model, x_test)
    dot = gradient_similarity_scores(model, x_train, x_test, "dot", batch_size=3)
    assert torch.allclose(dot, g_test @ g_train.T, rtol=1e-4, atol=1e-7)
    cos = gradient_similarity_scores(model, x_train, x_test, "cosine", batch_size=3)
    expected = (g_test / g_test.norm(dim=1, keepdim=True)) @ (g_train / g_train.norm(dim=1, keepdim=True)).T
    assert torch.allclose(cos, expected, rtol=1e-4, atol=1e-6) and cos.abs().max() <= 1 + 1e-5
    # gradient norms vary between examples, so the two baselines rank differently
    assert not torch.allclose(dot, cos)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(ParameterError, match="similarity"):
        gradient_similarity_scores(model, x_train, x_test, "euclid")


def test_tracin_matches_explicit_dot_products_and_restores_model(tmp_path) -> None:
    model = conv_model()
    x_train, x_test = torch.rand(9, 1, 8, 8), torch.rand(5, 1, 8, 8)
    ckpt_a = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ckpt_b = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    final = copy.deepcopy(model.state_dict())
    model.train()

    one = tracin_scores(model, [ckpt_a], x_train, x_test, batch_size=4)
    ref_model = copy.deepcopy(model)
    ref_model.load_state_dict(ckpt_a)
    expected_a = autograd_grads(ref_model, x_test) @ autograd_grads(ref_model, x_train).T
    assert one.shape == (5, 9)
    assert torch.allclose(one, expected_a, rtol=1e-4, atol=1e-7)

    # weights and mode are restored
    assert model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, final[key]), key

    from safetensors.torch import save_file

    path = tmp_path / "epoch_10.safetensors"
    save_file({k: v.contiguous() for k, v in ckpt_b.items()}, str(path))
    ref_model.load_state_dict(ckpt_b)
    expected_b = autograd_grads(ref_model, x_test) @ autograd_grads(ref_model, x_train).T
    two = tracin_scores(model, [ckpt_a, path], x_train, x_test, lr_factor=[1.0, 0.5], batch_size=4)
    assert torch.allclose(two, expected_a + 0.5 * expected_b, rtol=1e-4, atol=1e-7)
    with pytest.raises(CheckpointError):
        tracin_scores(model, [tmp_path / "missing.safetensors"], x_train, x_test)
    pickled = tmp_path / "epoch_0.pt"
    torch.save(ckpt_a, pickled)
    with pytest.raises(CheckpointError):  # pickle-based files are never loaded
        tracin_scores(model, [pickled], x_train, x_test)


# --------------------------------------------------------------------------- influence functions
def explicit_hessian(model: nn.Module, data: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Float64 Hessian of the mean loss over ``data`` w.r.t. the flattened encoder parameters."""
    names = [n for n, _ in model.named_parameters() if n.startswith("encoder.")]
    shapes = [p.shape for n, p in model.named_parameters() if n in names]
    flat = torch.cat([p.detach().reshape(-1) for n, p in model.named_parameters() if n in names])

    def loss(theta: torch.Tensor) -> torch.Tensor:
        params, offset = {}, 0
        for name, shape in zip(names, shapes):
            size = shape.numel()
            params[name] = theta[offset : offset + size].reshape(shape)
            offset += size
        out = torch.func.functional_call(model, params, (data,))
        return mse_per_example(out, data).mean()

    return torch.autograd.functional.hessian(loss, flat), names


def test_influence_equals_exact_lissa_recursion_with_full_batch() -> None:
    torch.manual_seed(3)
    model = TinyAE().double()
    data = torch.randn(10, 3, dtype=torch.float64)
    hess, _ = explicit_hessian(model, data)
    g_train = autograd_grads(model, data[:6])
    g_test = autograd_grads(model, data[6:])
    damp, scale, depth, n = 1e-3, 1000.0, 100, len(data)
    # exact recursion with H_batch = H: v_T = Σ_{k=0}^{T} A^k g, A = (1 − damp) I − H / scale
    a = (1 - damp) * torch.eye(len(hess), dtype=torch.float64) - hess / scale
    total, power = torch.zeros_like(a), torch.eye(len(hess), dtype=torch.float64)
    for _ in range(depth + 1):
        total += power
        power = a @ power
    expected = g_test @ (total @ g_train.T) / (scale * n)

    model32 = model.float()
    full = [torch.arange(n)] * depth
    for direction in ("train", "test"):
        scores = influence_scores(
            model32, data[:6].float(), data[6:].float(), hessian_data=data.float(), minibatches=full,
            damp=damp, scale=scale, direction=direction,
        )
        assert scores.shape == (4, 6)
        assert torch.allclose(scores.double(), expected, rtol=1e-4, atol=1e-6 * expected.abs().max())


def test_influence_converges_to_damped_inverse_hessian() -> None:
    torch.manual_seed(4)
    model = TinyAE()
    data = torch.randn(12, 3)
    model64 = copy.deepcopy(model).double()
    hess, _ = explicit_hessian(model64, data.double())
    damp, scale = 0.5, 10.0
    assert torch.linalg.eigvalsh(hess).abs().max() < damp * scale  # the recursion contracts
    g_train = autograd_grads(model64, data.double())
    g_test = autograd_grads(model64, data[:5].double())
    # fixed point v* = scale (H + damp·scale·I)^{-1} g, then v*/(scale·n)
    inverse = torch.linalg.inv(hess + damp * scale * torch.eye(len(hess), dtype=torch.float64))
    expected = g_test @ inverse @ g_train.T / len(data)
    scores = influence_scores(
        model, data, data[:5], minibatches=[torch.arange(12)] * 200, damp=damp, scale=scale, direction="train"
    )
    assert torch.allclose(scores.double(), expected, rtol=1e-4, atol=1e-5 * expected.abs().max())


def test_influence_directions_and_hvp_modes_agree_with_random_minibatches() -> None:
    model = conv_model()
    x_train, x_test = torch.rand(11, 1, 8, 8), torch.rand(7, 1, 8, 8)
    kwargs = dict(damp=0.01, scale=5.0, recursion_depth=8, minibatch_size=4, seed=2, batch_size=4)
    reference = influence_scores(model, x_train, x_test, direction="train", hvp_mode="full", **kwargs)
    assert model.training  # mode restored
    assert reference.shape == (7, 11) and (reference != 0).all()
    for direction, mode, chunk in (("test", "full", None), ("train", "latent", 4), ("test", "latent", 3)):
        other = influence_scores(
            model, x_train, x_test, direction=direction, hvp_mode=mode, rhs_chunk_size=chunk, **kwargs
        )
        assert torch.allclose(other, reference, rtol=1e-3, atol=1e-4 * reference.abs().max()), (direction, mode)
    # the Hessian term matters at these settings: a different seed changes the scores
    other_seed = influence_scores(model, x_train, x_test, **{**kwargs, "seed": 3})
    assert not torch.allclose(other_seed, reference, rtol=1e-3)


def test_batch_hessian_merges_repeated_draws_and_batches_vectors() -> None:
    model = conv_model().eval()
    data = torch.rand(6, 1, 8, 8)
    params = {n: p for n, p in model.named_parameters() if n.startswith("encoder.")}
    assert latent_mode_applies(model, params, data)
    vectors = torch.randn(3, sum(p.numel() for p in params.values()))
    loop = BatchHessian(model, params, data, mse_per_example, "full", hvp_batch=1)
    loop.bind(torch.tensor([0, 0, 2, 5]))
    batched = BatchHessian(model, params, data, mse_per_example, "full", hvp_batch=3)
    batched.bind(torch.tensor([0, 2, 5, 0]))
    ref = torch.stack([_flat_hvp(model, params, data[[0, 0, 2, 5]], v) for v in vectors])
    assert torch.allclose(loop.apply(vectors), ref, rtol=1e-4, atol=1e-6)
    assert torch.allclose(batched.apply(vectors), ref, rtol=1e-4, atol=1e-6)


def _split(v: torch.Tensor, params: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return tuple(t.reshape(p.shape) for t, p in zip(v.split([p.numel() for p in params.values()]), params.values()))


def _mean_loss(model: nn.Module, params: dict[str, torch.Tensor], values, x: torch.Tensor,
               loss_fn=mse_per_example) -> torch.Tensor:
    out = torch.func.functional_call(model, dict(zip(params, values)), (x,))
    return loss_fn(out, x).mean()


def _flat_hvp(model: nn.Module, params: dict[str, torch.Tensor], x: torch.Tensor, v: torch.Tensor,
              loss_fn=mse_per_example) -> torch.Tensor:
    """Reference HVP of the mean loss over ``x`` by torch.autograd.functional.hvp."""
    _, hvp = torch.autograd.functional.hvp(
        lambda *ps: _mean_loss(model, params, ps, x, loss_fn), tuple(p.detach() for p in params.values()),
        _split(v, params),
    )
    return torch.cat([h.reshape(-1) for h in hvp])


def test_draw_minibatches_is_seeded() -> None:
    a = draw_minibatches(50, 7, 3, seed=1)
    assert len(a) == 3 and all(b.shape == (7,) and b.max() < 50 for b in a)
    assert all(torch.equal(x, y) for x, y in zip(a, draw_minibatches(50, 7, 3, seed=1)))


def test_real_mnist_autoencoder_contract(tmp_path) -> None:
    from lfx_engine.example_importance import selected_parameters
    from lfx_engine.models import build_model
    from lfx_engine.training.io import save_checkpoint

    model = build_model("mnist_ae")  # training mode, denoising perturbation in forward
    x = torch.rand(3, 1, 28, 28)
    grads = per_example_grads(model, x)
    assert grads.shape == (3, 43_428)
    assert torch.allclose(grads, autograd_grads(copy.deepcopy(model), x), rtol=1e-4, atol=1e-7)
    model.eval()
    assert latent_mode_applies(model, selected_parameters(model), x)
    model.train()
    path = save_checkpoint(model, tmp_path / "epoch_000.safetensors", {"kind": "tracin"}).path
    scores = tracin_scores(model, [path], x, x[:2])
    assert torch.allclose(scores, grads[:2] @ grads.T, rtol=1e-4)
    assert model.training


# --------------------------------------------------------------------------- Gauss–Newton influence
class LinearEncoderAE(nn.Module):
    """Encoder linear in its weights (so ∇²θ z = 0 and Gauss–Newton is exact), nonlinear decoder."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(5, 2)
        self.decoder = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def test_gauss_newton_equals_exact_lissa_when_the_encoder_is_linear() -> None:
    torch.manual_seed(5)
    model = LinearEncoderAE()
    x_train, x_test = torch.randn(13, 5), torch.randn(6, 5)
    kwargs = dict(damp=0.01, scale=5.0, recursion_depth=12, minibatch_size=5, seed=1)
    exact = influence_scores(model, x_train, x_test, hvp_mode="full", **kwargs)
    fast = influence_scores(model, x_train, x_test, hessian="gauss_newton", **kwargs)
    assert fast.shape == (6, 13)
    assert torch.allclose(fast, exact, rtol=1e-4, atol=1e-5 * exact.abs().max())
    # a separate Hessian set (right-hand sides outside the Jacobian span) as well
    hess_data = torch.randn(9, 5)
    exact = influence_scores(model, x_train, x_test, hessian_data=hess_data, hvp_mode="full", **kwargs)
    fast = influence_scores(model, x_train, x_test, hessian_data=hess_data, hessian="gauss_newton", **kwargs)
    assert torch.allclose(fast, exact, rtol=1e-4, atol=1e-5 * exact.abs().max())


def test_gauss_newton_matches_the_explicit_recursion_on_a_conv_encoder() -> None:
    """With a nonlinear encoder it equals LiSSA on Σ w_i J_iᵀ K_i J_i, built here explicitly."""
    from lfx_engine.example_importance.gauss_newton import gauss_newton_lissa, latent_jacobians

    torch.manual_seed(6)
    model = conv_model().eval()
    data = torch.rand(7, 1, 8, 8)
    params = {n: p for n, p in model.named_parameters() if n.startswith("encoder.")}
    batches = [torch.tensor([0, 3, 3, 6]), torch.tensor([1, 2, 5, 5]), torch.tensor([4, 4, 0, 1])]
    damp, scale = 0.05, 3.0
    hess = BatchHessian(model, params, data, mse_per_example, "latent")
    jac = latent_jacobians(model.encoder, {n[len("encoder."):]: p for n, p in params.items()}, data)
    blocks = jac.reshape(len(data), 2, -1)
    g_train, g_test = autograd_grads(model, data), autograd_grads(model, data[:3])
    v = g_train.T.clone()
    for idx in batches:
        h = sum(blocks[i].T @ hess.k[i] @ blocks[i] for i in idx.tolist()) / len(idx)
        v = g_train.T + (1 - damp) * v - h @ v / scale
    expected = g_test @ v / (scale * len(data))
    tol = dict(rtol=1e-3, atol=1e-4 * float(expected.abs().max()))
    for direction in ("train", "test"):
        for route in ("span", "parameters"):
            got = gauss_newton_lissa(jac, hess.k, g_train, g_test, batches, damp, scale, len(data),
                                     direction=direction, route=route)
            assert torch.allclose(got, expected, **tol), (direction, route)
    fast = influence_scores(model, data, data[:3], minibatches=batches, damp=damp, scale=scale,
                            hessian="gauss_newton")
    assert torch.allclose(fast, expected, **tol)
    exact = influence_scores(model, data, data[:3], minibatches=batches, damp=damp, scale=scale, hvp_mode="full")
    assert not torch.allclose(fast, exact, rtol=1e-3)  # the encoder's curvature term is really dropped


def test_factored_latent_jacobian_equals_the_dense_one_in_every_product() -> None:
    """Linear layers kept as factors (δ_ik a_iᵀ): the same Jacobian, Gram matrix, products and GN scores."""
    from lfx_engine.example_importance.gauss_newton import (
        _batch_rows,
        gauss_newton_lissa,
        jacobian_layout,
        jacobian_numbers,
        latent_jacobian,
        latent_jacobians,
    )

    torch.manual_seed(7)
    model = conv_model().eval()
    data = torch.rand(9, 1, 8, 8)
    hess = BatchHessian(model, {n: p for n, p in model.named_parameters() if n.startswith("encoder.")}, data,
                        mse_per_example, "latent")
    batches = [torch.tensor([0, 3, 3, 8]), torch.tensor([1, 2, 5, 5]), torch.tensor([4, 4, 7, 6])]
    # all encoder parameters (the Linear with its bias) and the Linear's weight alone beside the conv
    for keep in (lambda n: n.startswith("encoder."), lambda n: n.startswith("encoder.") and n != "encoder.4.bias"):
        params = {n[len("encoder."):]: p for n, p in model.named_parameters() if keep(n)}
        layout = jacobian_layout(model.encoder, params, data[:2])
        assert list(layout) == ["4"] and layout["4"].with_bias == ("4.bias" in params)
        jac = latent_jacobian(model.encoder, params, data, batch_size=4)
        dense = latent_jacobians(model.encoder, params, data)
        assert jac.blocks and jac.n_dense < dense.shape[1]
        assert jacobian_numbers(params, layout, len(data), 2) == jac.dense.numel() + sum(
            b.inputs.numel() + b.deltas.numel() for b in jac.blocks) < dense.numel()
        tol = dict(rtol=1e-4, atol=1e-6)
        assert torch.allclose(jac.to_dense(), dense, **tol)
        assert torch.allclose(jac.gram(), dense @ dense.T, **tol)
        g = torch.randn(5, dense.shape[1])
        assert torch.allclose(jac.times(jac.to_internal(g), chunk=2), dense @ g.T, **tol)
        rows, unique, _ = _batch_rows(batches[0], 2, data.device)
        v = torch.randn(dense.shape[1], 3)
        internal = jac.to_internal(v.T).T.contiguous()
        assert torch.allclose(jac.rows(rows, unique, internal), dense[rows] @ v, **tol)
        y = torch.randn(len(rows), 3)
        back = jac.transpose_rows(rows, unique, y)
        assert torch.allclose(back.T, jac.to_internal((dense[rows].T @ y).T), **tol)  # in the internal order
        selected = [p for n, p in model.named_parameters() if keep(n)]
        g_train, g_test = torch.randn(9, dense.shape[1]), torch.randn(4, dense.shape[1])
        assert sum(p.numel() for p in selected) == dense.shape[1]
        for direction in ("train", "test"):
            for route in ("span", "parameters"):
                want = gauss_newton_lissa(dense, hess.k, g_train, g_test, batches, 0.05, 3.0, 9,
                                          direction=direction, route=route)
                got = gauss_newton_lissa(jac, hess.k, g_train, g_test, batches, 0.05, 3.0, 9,
                                         direction=direction, route=route)
                assert torch.allclose(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max())), (direction, route)


class TrainedLinearEncoderAE(nn.Module):
    """Encoder linear in its weights (Gauss–Newton exact), trained to a minimum so the Hessian is positive."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(6, 3))
        self.decoder = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def test_gauss_newton_influence_where_the_hessian_matters() -> None:
    """A trained model with an ill-conditioned Hessian: IF must follow (H + λI)⁻¹, which reorders the examples
    against a plain gradient product; at METHOD's settings (scale 1000 ≫ λ_max, depth 100) LiSSA stops long
    before the inverse and IF ranks almost like the gradient product, as measured on MNIST."""
    from scipy import stats

    torch.manual_seed(3)
    model = TrainedLinearEncoderAE()
    x_train, x_test = torch.randn(40, 6), torch.randn(8, 6)
    opt = torch.optim.Adam(model.parameters(), 0.02)
    for _ in range(1500):
        opt.zero_grad()
        ((model(x_train) - x_train) ** 2).mean().backward()
        opt.step()
    m64 = copy.deepcopy(model).double()
    hess, _ = explicit_hessian(m64, x_train.double())
    eig = torch.linalg.eigvalsh(hess)
    assert eig.min() > 0 and eig.max() / eig.min() > 100  # positive and ill-conditioned
    scale, damp = 1.2 * float(eig.max()), 0.05
    g_train, g_test = autograd_grads(m64, x_train.double()), autograd_grads(m64, x_test.double())
    inverse = torch.linalg.inv(hess + damp * scale * torch.eye(len(hess), dtype=torch.float64))
    expected = g_test @ inverse @ g_train.T / len(x_train)
    dot = g_test @ g_train.T

    def mean_spearman(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(sum(stats.spearmanr(r, q)[0] for r, q in zip(a.numpy(), b.numpy())) / len(a))

    assert mean_spearman(expected, dot) < 0.8  # the Hessian really changes the ranking here
    full = [torch.arange(len(x_train))] * 800
    tol = dict(rtol=1e-3, atol=1e-4 * float(expected.abs().max()))
    fast = influence_scores(model, x_train, x_test, minibatches=full, damp=damp, scale=scale, hessian="gauss_newton")
    exact = influence_scores(model, x_train, x_test, minibatches=full, damp=damp, scale=scale, hessian="exact")
    assert torch.allclose(fast.double(), expected, **tol) and torch.allclose(exact.double(), expected, **tol)
    method = influence_scores(model, x_train, x_test, minibatches=[torch.arange(len(x_train))] * 100, damp=1e-3,
                              scale=1000.0, hessian="gauss_newton")
    assert mean_spearman(method.double(), dot) > 0.95  # 0.97 here; 0.997 on MNIST (REPRODUCTION §2)


def test_gauss_newton_refuses_models_it_cannot_split_and_bad_names() -> None:
    with pytest.raises(ParameterError, match="gauss_newton"):
        influence_scores(LSTMAE(), torch.randn(4, 6, 1), torch.randn(2, 6, 1), hessian="newton")
    class Fused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder, self.decoder = nn.Linear(3, 2), nn.Linear(2, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.decoder(self.encoder(x)) + x
    with pytest.raises(ParameterError, match="decoder"):
        influence_scores(Fused(), torch.randn(4, 3), torch.randn(2, 3), hessian="gauss_newton")

    class RecurrentAE(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder, self.decoder = LSTMEncoder(), nn.Sequential(nn.Linear(2, 6), nn.Unflatten(1, (6, 1)))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.decoder(self.encoder(x))
    with pytest.raises(ParameterError, match="recurrent"):
        influence_scores(RecurrentAE(), torch.randn(4, 6, 1), torch.randn(2, 6, 1), hessian="gauss_newton")


# --------------------------------------------------------------------------- memory budget
def test_streamed_product_holds_no_more_rows_than_the_budget_and_matches_the_dense_product() -> None:
    from lfx_engine.example_importance.streaming import GradientRows, streamed_product

    torch.manual_seed(8)
    width = 50
    left_x, right_x = torch.randn(23, width), torch.randn(17, width)
    calls: list[int] = []

    def compute(xb: torch.Tensor, batch: int) -> torch.Tensor:
        calls.append(len(xb))
        assert batch >= 1
        return xb * 2.0

    dense = 4.0 * left_x @ right_x.T
    roomy_left, roomy_right = GradientRows(left_x, width, compute), GradientRows(right_x, width, compute)
    roomy = streamed_product(roomy_left, roomy_right, 10**9, 8, torch.zeros(23, 17))
    assert torch.allclose(roomy, dense, atol=1e-4)
    assert roomy_left.computed + roomy_right.computed == 40  # everything fits: every row once
    calls.clear()
    budget = 12 * 4 * width  # twelve rows
    left, right = GradientRows(left_x, width, compute), GradientRows(right_x, width, compute)
    tight = streamed_product(left, right, budget, 8, torch.zeros(23, 17), factor=0.5)
    assert torch.allclose(tight, 0.5 * dense, atol=1e-4)
    assert max(calls) <= 12  # never more rows at once than the budget
    assert right.computed == 17  # the smaller side is held, in blocks, each row once ...
    assert left.computed > 23  # ... and the larger side is recomputed per held block


def test_tracin_and_influence_give_the_same_scores_under_a_tight_memory_budget() -> None:
    model = conv_model()
    x_train, x_test = torch.rand(11, 1, 8, 8), torch.rand(7, 1, 8, 8)
    tiny = 0.004  # MB: about eight gradient rows of this model's 134 encoder parameters
    ckpt = copy.deepcopy(model.state_dict())
    roomy = tracin_scores(model, [ckpt], x_train, x_test, batch_size=4)
    tight = tracin_scores(model, [ckpt], x_train, x_test, batch_size=4, max_memory_mb=tiny)
    assert torch.allclose(tight, roomy, rtol=1e-4, atol=1e-6 * roomy.abs().max())
    kwargs = dict(damp=0.01, scale=5.0, recursion_depth=6, minibatch_size=4, seed=2, batch_size=4, hvp_mode="full")
    for direction in ("train", "test"):
        roomy = influence_scores(model, x_train, x_test, direction=direction, **kwargs)
        tight = influence_scores(model, x_train, x_test, direction=direction, max_memory_mb=tiny, **kwargs)
        assert torch.allclose(tight, roomy, rtol=1e-4, atol=1e-5 * roomy.abs().max()), direction
    with pytest.raises(ParameterError, match="max_memory_mb"):
        tracin_scores(model, [ckpt], x_train, x_test, max_memory_mb=0)


def test_latent_hvps_forward_over_reverse_equal_the_double_backward(monkeypatch) -> None:
    """The vmapped jvp-of-grad HVPs equal one double backward per vector, in parts too, and fall back to it."""
    import lfx_engine.example_importance.influence as inf

    torch.manual_seed(11)
    model = conv_model().eval()
    data = torch.rand(10, 1, 8, 8)
    params = {n: p for n, p in model.named_parameters() if n.startswith("encoder.")}
    vectors = torch.randn(5, sum(p.numel() for p in params.values()))
    idx = torch.tensor([0, 2, 2, 5, 7, 9])
    functional = BatchHessian(model, params, data, mse_per_example, "latent")
    assert functional.forward_over_reverse
    autograd = BatchHessian(model, params, data, mse_per_example, "latent")
    autograd.forward_over_reverse = False
    functional.bind(idx)
    autograd.bind(idx)
    expected = autograd.apply(vectors)
    tol = dict(rtol=1e-4, atol=1e-6 * float(expected.abs().max()))
    assert torch.allclose(functional.apply(vectors), expected, **tol)
    split = BatchHessian(model, params, data, mse_per_example, "latent", max_graph_bytes=1)  # one example a part
    split.bind(idx)
    assert split._parts and torch.allclose(split.apply(vectors), expected, **tol)

    def unavailable(*args, **kwargs):
        raise NotImplementedError("no forward-mode rule")

    monkeypatch.setattr(inf, "jvp", unavailable)
    fallback = BatchHessian(model, params, data, mse_per_example, "latent")
    fallback.bind(idx)
    with pytest.warns(UserWarning, match="double backward"):
        got = fallback.apply(vectors)
    assert not fallback.forward_over_reverse and torch.allclose(got, expected, **tol)


def test_exact_influence_on_a_layer_the_latent_is_affine_in_runs_the_gauss_newton_solver(monkeypatch) -> None:
    """The encoder's last Linear alone: no encoder curvature, so the exact Hessian is Gauss–Newton's; same scores."""
    import lfx_engine.example_importance.influence as inf
    from lfx_engine.example_importance.influence import latent_is_affine

    torch.manual_seed(12)
    model = conv_model().eval()
    data = torch.rand(12, 1, 8, 8)
    params = {n: p for n, p in model.named_parameters() if n.startswith("encoder.")}
    last = {n: p for n, p in params.items() if n.startswith("encoder.4.")}
    assert latent_is_affine(model, last, data[:4])
    assert not latent_is_affine(model, params, data[:4])
    assert not latent_is_affine(model, {"encoder.1.weight": params["encoder.1.weight"]}, data[:4])  # BatchNorm
    kwargs = dict(param_filter=lambda n: n.startswith("encoder.4."), recursion_depth=6, minibatch_size=5,
                  damp=0.05, scale=3.0)
    calls: list[int] = []
    original = inf._gauss_newton_scores
    monkeypatch.setattr(inf, "_gauss_newton_scores", lambda *a, **k: (calls.append(1), original(*a, **k))[1])
    fast = influence_scores(model, data, data[:4], hessian="exact", **kwargs)
    assert calls == [1]
    monkeypatch.setattr(inf, "latent_is_affine", lambda *a: False)  # the double-backward recursion
    for mode in ("full", "latent"):
        exact = influence_scores(model, data, data[:4], hessian="exact", hvp_mode=mode, **kwargs)
        assert torch.allclose(fast, exact, rtol=1e-4, atol=1e-5 * float(exact.abs().max())), mode
    assert calls == [1]


def test_gauss_newton_respects_the_memory_budget() -> None:
    from lfx_engine.example_importance import resolve_hessian

    model = conv_model()
    data = torch.rand(12, 1, 8, 8)
    # Jacobian 24×36 dense + the Linear(48, 2) as factors 12×(49 + 2·2) + Gram 24×24 + 18 gradient rows × 134 ≈ 18 kB
    with pytest.raises(ParameterError, match="max_memory_mb"):
        influence_scores(model, data, data[:6], hessian="gauss_newton", recursion_depth=3, max_memory_mb=0.01)
    assert influence_scores(model, data, data[:6], hessian="gauss_newton", recursion_depth=3,
                            max_memory_mb=0.05).shape == (6, 12)
    assert resolve_hessian(model, data, "auto", 6, 100, n_gradient_rows=18, max_memory_mb=0.05) == "gauss_newton"
    assert resolve_hessian(model, data, "auto", 6, 100, n_gradient_rows=18, max_memory_mb=0.01) == "exact"


class MixedEncoderAE(nn.Module):
    """Linear layers of every kind: factorable (with and without bias), reused, and on 3-D inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.ModuleDict({
            "conv": nn.Conv2d(1, 2, 3, 2, 1), "seq": nn.Linear(4, 4), "a": nn.Linear(32, 6, bias=False),
            "b": nn.Linear(6, 6), "twice": nn.Linear(6, 6), "out": nn.Linear(6, 3),
        })
        self.decoder = nn.Sequential(nn.Linear(3, 64), nn.Sigmoid(), nn.Unflatten(1, (1, 8, 8)))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        e = self.encoder
        h = torch.tanh(e["conv"](x))  # (B, 2, 4, 4)
        h = e["seq"](h.reshape(len(x), 8, 4)).reshape(len(x), 32)  # a Linear on a 3-D input
        h = torch.tanh(e["b"](torch.tanh(e["a"](h))))
        h = torch.tanh(e["twice"](torch.tanh(e["twice"](h))))
        return e["out"](h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encode(x))


class _MixedEncoder(nn.Module):
    """MixedEncoderAE's encoder as a module of its own (Gauss–Newton needs ``model.encoder(x)``)."""

    def __init__(self, layers: nn.ModuleDict) -> None:
        super().__init__()
        self.layers = layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return MixedEncoderAE.encode(SimpleNamespace(encoder=self.layers), x)  # type: ignore[arg-type]


class MixedSplitAE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        inner = MixedEncoderAE()
        self.encoder, self.decoder = _MixedEncoder(inner.encoder), inner.decoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def test_gauss_newton_factors_only_the_linears_run_once_on_vectors(monkeypatch) -> None:
    """Reused and 3-D-input Linears stay dense; the scores equal those of a fully dense Jacobian."""
    import lfx_engine.example_importance.influence as inf
    from lfx_engine.example_importance.gauss_newton import jacobian_layout

    torch.manual_seed(10)
    model = MixedSplitAE().eval()
    data = torch.rand(10, 1, 8, 8)
    params = {n[len("encoder."):]: p for n, p in model.named_parameters() if n.startswith("encoder.")}
    layout = jacobian_layout(model.encoder, params, data[:2])
    assert sorted(layout) == ["layers.a", "layers.b", "layers.out"] and not layout["layers.a"].with_bias
    kwargs = dict(hessian="gauss_newton", recursion_depth=4, minibatch_size=5)
    factored = influence_scores(model, data, data[:3], **kwargs)
    monkeypatch.setattr(inf, "jacobian_layout", lambda *a: {})
    dense = influence_scores(model, data, data[:3], **kwargs)
    assert torch.allclose(factored, dense, rtol=1e-4, atol=1e-5 * float(dense.abs().max()))


def test_factored_gradients_give_the_exact_dot_products() -> None:
    from lfx_engine.example_importance.factored import factorable_linears, factored_grads, pairwise

    torch.manual_seed(9)
    model = MixedEncoderAE().eval()
    x_a, x_b = torch.rand(7, 1, 8, 8), torch.rand(5, 1, 8, 8)
    names = {n for n, _ in model.named_parameters() if n.startswith("encoder.")}
    layers = factorable_linears(model, names, x_a[:2])
    assert set(layers) == {"encoder.a", "encoder.b", "encoder.out"}  # not the reused one nor the 3-D one
    rows_a = factored_grads(model, x_a, mse_per_example, lambda n: n in names, layers, 3, torch.device("cpu"))
    rows_b = factored_grads(model, x_b, mse_per_example, lambda n: n in names, layers, 4, torch.device("cpu"))
    n_dense = sum(p.numel() for n, p in model.named_parameters()
                  if n in names and not n.startswith(("encoder.a.", "encoder.b.", "encoder.out.")))
    assert rows_a.dense.shape == (7, n_dense)
    expected = autograd_grads(model, x_a) @ autograd_grads(model, x_b).T
    assert torch.allclose(pairwise(rows_a, rows_b), expected, rtol=1e-4, atol=1e-6 * expected.abs().max())
    # TracIn on this model equals the explicit dot products, with a roomy and a tight budget
    state = copy.deepcopy(model.state_dict())
    for budget in (None, 0.002):
        got = tracin_scores(model, [state], x_b, x_a, batch_size=3, max_memory_mb=budget)
        assert torch.allclose(got, expected, rtol=1e-4, atol=1e-6 * expected.abs().max()), budget


def test_weight_only_layers_stay_factored_and_exact() -> None:
    """Explaining a layer's weight without its bias (TracInCPFast's final-layer weights) keeps the factored form,
    without the bias's column of ones, and gives the explicit weight-gradient dot products."""
    from lfx_engine.example_importance.factored import factorable_linears, factored_grads, pairwise, row_width

    torch.manual_seed(10)
    model = MixedEncoderAE().eval()
    x_a, x_b = torch.rand(6, 1, 8, 8), torch.rand(4, 1, 8, 8)
    names = {"encoder.out.weight", "encoder.b.weight", "encoder.b.bias"}
    layers = factorable_linears(model, names, x_a[:2])
    assert {n: with_bias for n, (_, with_bias) in layers.items()} == {"encoder.out": False, "encoder.b": True}
    out, b = model.encoder["out"], model.encoder["b"]
    assert row_width(0, list(layers.values())) == out.in_features + out.out_features + b.in_features + 1 \
        + b.out_features
    rows_a = factored_grads(model, x_a, mse_per_example, lambda n: n in names, layers, 4, torch.device("cpu"))
    rows_b = factored_grads(model, x_b, mse_per_example, lambda n: n in names, layers, 4, torch.device("cpu"))
    assert rows_a.dense.shape == (6, 0)

    def explicit(x: torch.Tensor) -> torch.Tensor:
        params = [p for n, p in model.named_parameters() if n in names]
        return torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(
            mse_per_example(model(x[i:i + 1]), x[i:i + 1]).sum(), params)]) for i in range(len(x))])

    expected = explicit(x_a) @ explicit(x_b).T
    assert torch.allclose(pairwise(rows_a, rows_b), expected, rtol=1e-4, atol=1e-6 * expected.abs().max())
    got = tracin_scores(model, [copy.deepcopy(model.state_dict())], x_b, x_a, batch_size=3,
                        param_filter=lambda n: n in names)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-6 * expected.abs().max())


@pytest.mark.parametrize("mode", ["full", "latent"])
def test_batch_hessian_split_into_parts_gives_the_same_products(mode: str) -> None:
    model = conv_model().eval()
    data = torch.rand(10, 1, 8, 8)
    params = {n: p for n, p in model.named_parameters() if n.startswith("encoder.")}
    vectors = torch.randn(3, sum(p.numel() for p in params.values()))
    idx = torch.tensor([0, 1, 1, 2, 4, 5, 7, 7, 7, 9])
    whole = BatchHessian(model, params, data, mse_per_example, mode)
    per_example = whole.graph_bytes_per_example()
    assert per_example > 0
    split = BatchHessian(model, params, data, mse_per_example, mode, max_graph_bytes=5 * per_example)
    assert split.graph_examples == 2  # half for the graph, half for the HVP's own allocations
    whole.bind(idx)
    split.bind(idx)
    assert len(split._parts) == 4  # seven distinct examples, two per part
    expected = whole.apply(vectors)
    assert torch.allclose(split.apply(vectors), expected, rtol=1e-4, atol=1e-6 * expected.abs().max())


def test_gauss_newton_through_influence_scores_reports_progress_and_picks_the_cheaper_route(monkeypatch) -> None:
    import lfx_engine.example_importance.gauss_newton as gn

    model = conv_model()
    data = torch.rand(6, 1, 8, 8)
    taken: list[str] = []
    for name in ("_solve_in_jacobian_span", "_solve_in_parameter_space"):
        original = getattr(gn, name)
        monkeypatch.setattr(gn, name, lambda *a, _f=original, _n=name, **k: (taken.append(_n), _f(*a, **k))[1])
    seen: list[tuple[int, int]] = []
    # many right-hand sides and iterations against 6×2 Jacobian rows: the Gram-matrix route is cheaper
    influence_scores(model, data, data, hessian="gauss_newton", recursion_depth=40, minibatch_size=4,
                     progress=lambda done, total: seen.append((done, total)))
    assert taken == ["_solve_in_jacobian_span"]
    assert seen and seen[-1] == (40, 40)
    with pytest.raises(ParameterError, match="route"):
        gn.gauss_newton_lissa(torch.zeros(2, 3), torch.zeros(1, 2, 2), torch.zeros(1, 3), torch.zeros(1, 3),
                              [torch.tensor([0])], 0.1, 1.0, 1, route="fast")
