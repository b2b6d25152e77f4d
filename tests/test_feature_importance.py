"""Correctness tests of label-free feature importance (METHOD.md §1.3, §2, §7.6)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import GradientShap, InputXGradient
from torch import nn

from lfx_engine.errors import ParameterError
from lfx_engine.feature_importance import (
    LabelFreeModule,
    aggregate_channels,
    encoder_vs_full_attribution,
    get_method,
    label_free_attribution,
    list_methods,
    unit_attribution,
)

pytestmark = pytest.mark.filterwarnings("ignore:Setting forward, backward hooks:UserWarning")

CPU = "cpu"
DETERMINISTIC = [m for m in list_methods() if not get_method(m).stochastic]
LINEAR = [m for m in list_methods() if get_method(m).linear]


class LinearEncoder(nn.Module):
    """f(x) = W vec(x) + c."""

    def __init__(self, shape: tuple[int, ...], d: int = 3) -> None:
        super().__init__()
        self.lin = nn.Linear(int(np.prod(shape)), d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x.flatten(1))


def conv_bn_encoder(c: int = 1, d: int = 3) -> nn.Module:
    """Small conv net with BatchNorm (non-trivial running stats), in eval mode; 16×16 inputs."""
    net = nn.Sequential(
        nn.Conv2d(c, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Flatten(), nn.Linear(4 * 8 * 8, 8), nn.ReLU(), nn.Linear(8, d),
    )
    bn = net[1]
    bn.running_mean.uniform_(-0.2, 0.2)
    bn.running_var.uniform_(0.5, 2.0)
    return net.eval()


def smooth_encoder(c: int = 1, d: int = 3) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(c, 4, 3, stride=2, padding=1), nn.Tanh(), nn.Flatten(),
        nn.Linear(4 * 8 * 8, 8), nn.Softplus(), nn.Linear(8, d),
    ).eval()


def closed_form(enc: LinearEncoder, x: torch.Tensor, x_bar: torch.Tensor) -> torch.Tensor:
    """(x − x̄) ⊙ Wᵀ f(x): the exact IG/GradientShap of g_x for a linear encoder."""
    with torch.no_grad():
        fx = enc(x)
        grad = (fx @ enc.lin.weight).reshape(x.shape)
    return (x - x_bar) * grad


def hooks_of(module: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in module.modules())


# --------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize("baseline_kind", ["zero", "shared", "per_sample"])
def test_ig_linear_encoder_equals_closed_form(baseline_kind: str) -> None:
    x = torch.rand(5, 2, 4, 4)
    enc = LinearEncoder((2, 4, 4)).eval()
    x_bar = {"zero": torch.zeros(1, 2, 4, 4), "shared": torch.rand(1, 2, 4, 4),
             "per_sample": torch.rand(5, 2, 4, 4)}[baseline_kind]
    attr = label_free_attribution(enc, x, "integrated_gradients", baselines=x_bar, batch_size=2, device=CPU)
    torch.testing.assert_close(attr, closed_form(enc, x, x_bar), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("baseline_kind", ["zero", "per_sample"])
def test_gradient_shap_pairs_each_sample_with_its_own_representation(baseline_kind: str) -> None:
    n = 6
    x = torch.rand(n, 1, 4, 4)
    enc = LinearEncoder((1, 4, 4), d=4).eval()
    x_bar = torch.zeros(1, 1, 4, 4) if baseline_kind == "zero" else torch.rand(n, 1, 4, 4)
    attr = label_free_attribution(enc, x, "gradient_shap", baselines=x_bar, batch_size=n, device=CPU)
    torch.testing.assert_close(attr, closed_form(enc, x, x_bar), atol=1e-5, rtol=1e-4)


def test_noise_tunnel_keeps_pairing() -> None:
    """NoiseTunnel repeat_interleaves inputs; with zero noise the closed forms must hold per sample."""
    n = 5
    x = torch.rand(n, 1, 4, 4)
    enc = LinearEncoder((1, 4, 4), d=4).eval()
    x_bar = torch.rand(n, 1, 4, 4)
    sg_ig = label_free_attribution(enc, x, "smoothgrad_ig", baselines=x_bar, stdevs=0.0, nt_samples=3, device=CPU)
    torch.testing.assert_close(sg_ig, closed_form(enc, x, x_bar), atol=1e-5, rtol=1e-4)
    sg = label_free_attribution(enc, x, "smoothgrad", stdevs=0.0, nt_samples=3, device=CPU)
    torch.testing.assert_close(sg, closed_form(enc, x, torch.zeros_like(x)).abs() / x, atol=1e-4, rtol=1e-4)


class _BlockTiledAux(nn.Module):
    """The earlier code's wrapper: stores f(x) for the batch and tiles it block-wise."""

    def __init__(self, enc: nn.Module, fx: torch.Tensor) -> None:
        super().__init__()
        self.enc, self.fx = enc, fx

    def forward(self, x_tilde: torch.Tensor) -> torch.Tensor:
        reps = x_tilde.shape[0] // self.fx.shape[0]
        return (self.enc(x_tilde) * self.fx.repeat(reps, 1)).sum(dim=1)


def test_closed_form_check_detects_block_tiling_bug() -> None:
    """The same assertion fails for the block-tiled wrapper, so the test above has teeth."""
    n = 6
    x = torch.rand(n, 1, 4, 4)
    enc = LinearEncoder((1, 4, 4), d=4).eval()
    x_bar = torch.zeros(1, 1, 4, 4)
    with torch.no_grad():
        fx = enc(x)
    buggy = GradientShap(_BlockTiledAux(enc, fx)).attribute(x, baselines=x_bar, n_samples=5, stdevs=0.0)
    err = (buggy - closed_form(enc, x, x_bar)).abs().max()
    assert err > 1e-2


def test_full_model_attribution_goes_through_auxiliary_function() -> None:
    x = torch.rand(4, 1, 4, 4)

    class Classifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = LinearEncoder((1, 4, 4), d=3)
            self.head = nn.Linear(3, 5)

        def forward(self, inp: torch.Tensor) -> torch.Tensor:
            return self.head(self.encoder(inp))

    model = Classifier().eval()
    enc_attr, full_attr = encoder_vs_full_attribution(model, x, "integrated_gradients", device=CPU)
    torch.testing.assert_close(enc_attr, closed_form(model.encoder, x, torch.zeros_like(x)), atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        logits = model(x)
        w_full = model.head.weight @ model.encoder.lin.weight  # (5, P)
        expected = x * (logits @ w_full).reshape(x.shape)
    torch.testing.assert_close(full_attr, expected, atol=1e-5, rtol=1e-4)


# --------------------------------------------------------------------------- completeness


@pytest.mark.parametrize("n_steps,tol", [(10, 5e-3), (50, 2e-4)])
def test_ig_completeness_nonlinear(n_steps: int, tol: float) -> None:
    enc = smooth_encoder()
    x = torch.rand(4, 1, 16, 16)
    x_bar = torch.rand(1, 1, 16, 16) * 0.2
    attr = label_free_attribution(enc, x, "integrated_gradients", baselines=x_bar, device=CPU, n_steps=n_steps)
    with torch.no_grad():
        fx = enc(x).double()
        expected = (fx * fx).sum(1) - (fx * enc(x_bar).double()).sum(1)
    got = attr.double().flatten(1).sum(1)
    rel = ((got - expected).abs() / expected.abs().clamp_min(1e-6)).max().item()
    assert rel < tol, rel


# --------------------------------------------------------------------------- batching


@pytest.mark.parametrize("method", DETERMINISTIC)
def test_batch_equals_stacked_batch_of_one(method: str) -> None:
    enc = conv_bn_encoder(c=2)
    state = {k: v.clone() for k, v in enc.state_dict().items()}
    x = torch.rand(5, 2, 16, 16)
    x_bar = torch.rand(5, 2, 16, 16) * 0.1
    batched = label_free_attribution(enc, x, method, baselines=x_bar, batch_size=3, device=CPU)
    single = torch.cat([
        label_free_attribution(enc, x[i:i + 1], method, baselines=x_bar[i:i + 1], batch_size=1, device=CPU)
        for i in range(5)
    ])
    assert batched.shape == x.shape and torch.isfinite(batched).all()
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)
    assert not enc.training and hooks_of(enc) == 0
    for k, v in enc.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_batch_equals_single_on_sequences() -> None:
    enc = nn.Sequential(nn.Flatten(), nn.Linear(20 * 2, 6), nn.Tanh(), nn.Linear(6, 3)).eval()
    x = torch.rand(4, 20, 2)
    for method in ("integrated_gradients", "occlusion", "saliency", "deeplift"):
        batched = label_free_attribution(enc, x, method, batch_size=4, device=CPU)
        single = torch.cat([label_free_attribution(enc, x[i:i + 1], method, device=CPU) for i in range(4)])
        torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)
    assert aggregate_channels(batched, "sum_abs").shape == (4, 20)
    assert aggregate_channels(batched, "mean").shape == (4, 20)


# --------------------------------------------------------------------------- per-unit (§2)


@pytest.mark.parametrize("method", ["integrated_gradients", "input_x_gradient", "gradient_shap"])
def test_unit_attributions_sum_to_label_free_linear_encoder(method: str) -> None:
    c = 3
    x = torch.rand(4, c, 4, 4)
    enc = LinearEncoder((c, 4, 4), d=5).eval()
    units = unit_attribution(enc, x, method, batch_size=7, device=CPU, signed=True)
    assert units.shape == (4, 5, 4, 4)
    lf = label_free_attribution(enc, x, method, device=CPU)
    # units hold z_j · mean_c A_j, so Σ_j units · C = Σ_c b (plain channel sum)
    torch.testing.assert_close(units.sum(1) * c, lf.sum(1), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(units.sum(1, keepdim=True), aggregate_channels(lf, "mean"), atol=1e-5, rtol=1e-4)
    unsigned = unit_attribution(enc, x, method, batch_size=7, device=CPU)
    if method != "gradient_shap":
        torch.testing.assert_close(unsigned, units.abs())
    assert (unsigned >= 0).all()


@pytest.mark.parametrize("method", ["integrated_gradients", "input_x_gradient", "deeplift", "occlusion"])
def test_unit_attributions_sum_to_label_free_nonlinear(method: str) -> None:
    """Linearity in the explained function holds for any encoder (§1.1)."""
    enc = conv_bn_encoder(c=2, d=3)
    x = torch.rand(3, 2, 16, 16)
    units = unit_attribution(enc, x, method, batch_size=4, device=CPU, signed=True)
    lf = label_free_attribution(enc, x, method, device=CPU)
    torch.testing.assert_close(units.sum(1, keepdim=True), aggregate_channels(lf, "mean"), atol=1e-5, rtol=1e-4)


# --------------------------------------------------------------------------- model handling


def test_training_mode_model_is_explained_in_eval_without_being_switched() -> None:
    enc = conv_bn_encoder()
    x = torch.rand(3, 1, 16, 16)
    expected = label_free_attribution(enc, x, "saliency", device=CPU)
    enc.train()
    stats_before = enc[1].running_mean.clone()
    got = label_free_attribution(enc, x, "saliency", device=CPU)
    torch.testing.assert_close(got, expected)
    assert enc.training and enc[1].training
    assert torch.equal(enc[1].running_mean, stats_before)


def test_deeplift_leaves_no_hooks_or_state_even_on_error() -> None:
    class Boom(nn.Module):
        calls = 0

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            Boom.calls += 1
            if Boom.calls > 1:
                raise RuntimeError("boom")
            return z

    enc = nn.Sequential(nn.Flatten(), nn.Linear(16, 4), nn.ReLU(), Boom(), nn.Linear(4, 2)).eval()
    with pytest.raises(RuntimeError, match="boom"):
        label_free_attribution(enc, torch.rand(2, 1, 4, 4), "deeplift", device=CPU)
    assert hooks_of(enc) == 0
    for m in enc.modules():
        assert not {"input", "output"} & set(m.__dict__)


def test_seeded_methods_are_reproducible_and_leave_global_rng_alone() -> None:
    enc = conv_bn_encoder()
    x = torch.rand(3, 1, 16, 16)
    np_state, torch_state = np.random.get_state()[1].copy(), torch.get_rng_state().clone()
    a = label_free_attribution(enc, x, "gradient_shap", seed=1, device=CPU)
    b = label_free_attribution(enc, x, "gradient_shap", seed=1, device=CPU)
    c = label_free_attribution(enc, x, "gradient_shap", seed=2, device=CPU)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)
    assert np.array_equal(np.random.get_state()[1], np_state)
    assert torch.equal(torch.get_rng_state(), torch_state)
    r1 = label_free_attribution(enc, x, "random", seed=3)
    r2 = label_free_attribution(enc, x, "random", seed=3)
    assert r1.shape == x.shape and torch.equal(r1, r2)


def test_progress_custom_class_and_inference_mode() -> None:
    enc = conv_bn_encoder()
    x = torch.rand(5, 1, 16, 16)
    calls: list[tuple[int, int]] = []
    ref = label_free_attribution(enc, x, "input_x_gradient", batch_size=3, device=CPU,
                                 progress=lambda d, t: calls.append((d, t)))
    assert calls == [(3, 5), (5, 5)]
    with torch.inference_mode():
        custom = label_free_attribution(enc, x, InputXGradient, device=CPU)
    torch.testing.assert_close(custom, ref)


def test_bad_arguments_raise_parameter_error() -> None:
    enc = LinearEncoder((1, 4, 4))
    x = torch.rand(2, 1, 4, 4)
    with pytest.raises(ParameterError):
        label_free_attribution(enc, x, "no_such_method", device=CPU)
    with pytest.raises(ParameterError):
        label_free_attribution(enc, x, baselines=torch.zeros(3, 1, 4, 4), device=CPU)
    with pytest.raises(ParameterError):
        aggregate_channels(x, "median")


def test_label_free_module_rows_and_linear_flags() -> None:
    enc = LinearEncoder((1, 4, 4))
    x = torch.rand(3, 1, 4, 4)
    with torch.no_grad():
        fx = enc(x)
        out = LabelFreeModule(enc)(x, fx)
    torch.testing.assert_close(out, (fx * fx).sum(1))
    assert "saliency" not in LINEAR and {"integrated_gradients", "gradient_shap"} <= set(LINEAR)
    assert {"saliency", "integrated_gradients", "gradient_shap", "deeplift", "input_x_gradient",
            "occlusion", "smoothgrad", "random"} <= set(list_methods())


# --------------------------------------------------------------------------- the earlier code, emulated (§1.3, §9)


@pytest.mark.parametrize("method", ["gradient_shap", "integrated_gradients", "saliency"])
def test_earlier_code_in_eval_mode_with_pairing_equals_the_engine(method: str) -> None:
    from lfx_engine.feature_importance.earlier_code import earlier_code_attribution

    x = torch.rand(7, 1, 16, 16)
    enc = conv_bn_encoder()
    ours = label_free_attribution(enc, x, method, batch_size=4, device=CPU, seed=3)
    emulated = earlier_code_attribution(enc, x, method, batch_norm="eval", pairing="paired", batch_size=4,
                                        device=CPU, seed=3)
    torch.testing.assert_close(emulated, ours, atol=1e-6, rtol=1e-5)


def test_tiled_pairing_reproduces_the_gradient_shap_defect_exactly() -> None:
    """Linear f: GradientShap row i·5+k is scored against f(x_{(i·5+k) mod B}), so the map is
    (x_i − x̄) ⊙ Wᵀ mean_k f(x_{(5i+k) mod B}); the correct pairing gives Wᵀ f(x_i)."""
    from lfx_engine.feature_importance.earlier_code import earlier_code_attribution

    b = 4
    x = torch.rand(b, 1, 4, 4)
    enc = LinearEncoder((1, 4, 4), d=4).eval()
    tiled = earlier_code_attribution(enc, x, "gradient_shap", batch_norm="eval", pairing="tiled", batch_size=b,
                                     device=CPU)
    with torch.no_grad():
        fx = enc(x)
        partners = torch.stack([fx[[(5 * i + k) % b for k in range(5)]].mean(0) for i in range(b)])
        expected = x * (partners @ enc.lin.weight).reshape(x.shape)
    torch.testing.assert_close(tiled, expected, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(tiled, closed_form(enc, x, torch.zeros(1, 1, 4, 4)), atol=1e-3)


@pytest.mark.parametrize("method", ["integrated_gradients", "saliency"])
def test_tiled_pairing_is_harmless_for_block_wise_methods(method: str) -> None:
    from lfx_engine.feature_importance.earlier_code import earlier_code_attribution

    x = torch.rand(6, 1, 16, 16)
    enc = conv_bn_encoder()
    kw = {"batch_norm": "train", "batch_size": 3, "device": CPU}
    torch.testing.assert_close(earlier_code_attribution(enc, x, method, pairing="tiled", **kw),
                               earlier_code_attribution(enc, x, method, pairing="paired", **kw))


def test_train_mode_batch_norm_changes_maps_and_leaves_the_model_alone() -> None:
    from lfx_engine.feature_importance.earlier_code import earlier_code_attribution

    x = torch.rand(8, 1, 16, 16)
    enc = conv_bn_encoder()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    train = earlier_code_attribution(enc, x, "saliency", batch_norm="train", pairing="paired", batch_size=8,
                                     device=CPU)
    evaluated = earlier_code_attribution(enc, x, "saliency", batch_norm="eval", pairing="paired", batch_size=8,
                                         device=CPU)
    assert (train - evaluated).abs().max() > 1e-3
    assert not enc.training and all(torch.equal(before[k], v) for k, v in enc.state_dict().items())
    # batch statistics make one example's map depend on its batch: the defect the engine avoids
    alone = earlier_code_attribution(enc, x[:4], "saliency", batch_norm="train", pairing="paired", batch_size=4,
                                     device=CPU)
    assert (alone - train[:4]).abs().max() > 1e-4


def test_earlier_code_rejects_unknown_factors() -> None:
    from lfx_engine.feature_importance.earlier_code import earlier_code_attribution

    x = torch.rand(2, 1, 16, 16)
    with pytest.raises(ParameterError, match="batch_norm"):
        earlier_code_attribution(conv_bn_encoder(), x, "saliency", batch_norm="frozen")
    with pytest.raises(ParameterError, match="pairing"):
        earlier_code_attribution(conv_bn_encoder(), x, "saliency", pairing="shuffled")
