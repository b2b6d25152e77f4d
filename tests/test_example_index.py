"""Fit once, score many (:mod:`lfx_engine.example_importance.index`): exact indices equal the subset functions,
projected ones keep the rankings, sinks agree, and the explorer caches a full-split index."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn
from test_example_importance import LSTMAE, _one_thread, conv_model  # noqa: F401 - the autouse fixture too

from lfx_engine.errors import ParameterError
from lfx_engine.example_importance import (
    cosine_scores,
    dknn_scores,
    encode,
    gradient_similarity_scores,
    influence_scores,
    l1_per_example,
    per_example_grads,
    simplex_scores,
    tracin_scores,
)
from lfx_engine.example_importance import index as ix


class WideAE(nn.Module):
    """Conv + two linear layers wide enough that a Kronecker projection really compresses them."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(1, 3, 3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(48, 40),
                                     nn.Tanh(), nn.Linear(40, 3))
        self.decoder = nn.Sequential(nn.Linear(3, 64), nn.Sigmoid(), nn.Unflatten(1, (1, 8, 8)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def _data(seed: int = 0, n_train: int = 40, n_test: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n_train, 1, 8, 8, generator=generator), torch.rand(n_test, 1, 8, 8, generator=generator)


def _checkpoints(model: nn.Module, n: int = 2) -> list[dict[str, torch.Tensor]]:
    torch.manual_seed(1)
    states = []
    for _ in range(n):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    return states


def _reference(method: str, model: nn.Module, x_train: torch.Tensor, x_test: torch.Tensor, states) -> torch.Tensor:
    h_train, h_test = encode(model.encoder, x_train), encode(model.encoder, x_test)
    if method == "dknn":
        return dknn_scores(h_test, h_train)
    if method == "cosine":
        return cosine_scores(h_test, h_train)
    if method == "simplex":
        return simplex_scores(h_test, h_train, steps=200)[0]
    if method == "tracin":
        return tracin_scores(model, states, x_train, x_test)
    if method in ("grad_dot", "grad_cos"):
        return gradient_similarity_scores(model, x_train, x_test, "dot" if method == "grad_dot" else "cosine")
    return influence_scores(model, x_train, x_test, hessian="exact", direction="test", minibatch_size=16,
                            recursion_depth=20)


# timm-style: every method of the registry, exact features, against the subset implementation
@pytest.mark.parametrize("method", ix.INDEX_METHODS)
def test_exact_index_equals_the_subset_scores(method: str) -> None:
    model = WideAE().eval()
    states = _checkpoints(WideAE()) if method == "tracin" else []
    x_train, x_test = _data()
    params = {"steps": 200} if method == "simplex" else {}
    if method in ix.GRADIENT_METHODS:
        params["projection_dim"] = None
    if method == "influence":
        params.update({"minibatch_size": 16, "recursion_depth": 20, "hessian": "exact"})
    fitted = ix.fit(method, model, x_train, checkpoints=states, params=params)
    got = torch.from_numpy(fitted.score(x_test, batch_size=2))  # blocks of rows give the same matrix
    ref = _reference(method, model, x_train, x_test, states)
    assert got.shape == (len(x_test), len(x_train))
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))
    # the arrays alone (read back from a cache) rebuild the same index
    again = ix.from_arrays(method, model, fitted.arrays, params=params, checkpoints=states,
                           hessian_data=x_train)
    torch.testing.assert_close(torch.from_numpy(again.score(x_test)), got, rtol=1e-5,
                               atol=1e-6 * float(got.abs().max()))


def _fitted_tracin(frozen: bool, projection_dim: int | None):
    """A TracIn index of the wide test model (its first encoder weight frozen or not) and its scores of the test
    rows as one block."""
    model = WideAE().eval()
    if frozen:
        model.encoder[0].weight.requires_grad_(False)
    states = _checkpoints(WideAE())
    x_train, x_test = _data()
    fitted = ix.fit("tracin", model, x_train, checkpoints=states, params={"projection_dim": projection_dim})
    return model, states, x_test, fitted, fitted.score(x_test)


@pytest.mark.parametrize("projection_dim", [None, 64])
@pytest.mark.parametrize("frozen", [False, True])
def test_a_one_row_query_takes_one_pass_vmapped_over_the_checkpoints(frozen: bool, projection_dim: int | None,
                                                                     monkeypatch) -> None:
    """A clicked sample's features at every TracIn checkpoint come from one forward and backward pass vmapped over
    the checkpoints (frozen parameters explained as well), with no per-checkpoint gradient pass; its scores are its
    row of a block's, exact or projected."""
    from lfx_engine.example_importance import factored

    model, states, x_test, fitted, block = _fitted_tracin(frozen, projection_dim)
    shapes = []
    original = ix.grads_at_weights

    def counting(*args, **kwargs):
        out = original(*args, **kwargs)
        shapes.append(None if out is None else tuple(out.shape))
        return out

    def no_pass(*args, **kwargs):
        raise AssertionError("a per-checkpoint gradient pass")

    monkeypatch.setattr(ix, "grads_at_weights", counting)
    monkeypatch.setattr(factored, "_batch_factors", no_pass)
    monkeypatch.setattr(factored, "_grads_on_device", no_pass)
    one = fitted.score(x_test[2:3])
    n_params = sum(p.numel() for n, p in model.named_parameters() if n.startswith("encoder."))
    assert shapes == [(len(states), n_params)]
    # the block multiplies float16 rows too when projected: both sides round their test rows to float16
    tol = 1e-5 if projection_dim is None else 2e-3
    np.testing.assert_allclose(one[0], block[2], rtol=tol, atol=tol * np.abs(block).max())


@pytest.mark.parametrize("frozen", [False, True])
def test_a_one_row_query_without_vmap_takes_one_pass_per_checkpoint(frozen: bool, monkeypatch) -> None:
    """Where the vmapped pass does not apply, a query's dense gradient and factors come from one forward and
    backward pass per checkpoint (frozen dense parameters take the two-pass route: per-example dense gradients,
    then the factors); either way its scores are its row of a block's."""
    from lfx_engine.example_importance import factored

    model, states, x_test, fitted, block = _fitted_tracin(frozen, None)
    monkeypatch.setattr(ix, "grads_at_weights", lambda *args, **kwargs: None)
    dense_passes = []
    original = factored._grads_on_device

    def counting(*args, **kwargs):
        dense_passes.append(len(args[1]))
        return original(*args, **kwargs)

    monkeypatch.setattr(factored, "_grads_on_device", counting)
    one = fitted.score(x_test[2:3])
    assert dense_passes == ([1] * len(states) if frozen else [])
    np.testing.assert_allclose(one[0], block[2], rtol=1e-5, atol=1e-6 * np.abs(block).max())


@pytest.mark.parametrize("method", ["tracin", "grad_dot", "influence"])
def test_projected_features_keep_the_ranking(method: str) -> None:
    model = WideAE().eval()
    states = _checkpoints(WideAE()) if method == "tracin" else []
    x_train, x_test = _data(2, n_train=120, n_test=6)
    common = {"minibatch_size": 16, "recursion_depth": 10} if method == "influence" else {}
    # for IF the reference is the exact Hessian too; the projected index solves Gauss–Newton in feature space
    gold = {"hessian": "exact"} if method == "influence" else {}
    exact = ix.fit(method, model, x_train, checkpoints=states, params={**common, **gold, "projection_dim": None})
    projected = ix.fit(method, model, x_train, checkpoints=states, params={**common, "projection_dim": 256})
    assert ("solve_0" in projected.arrays) == (method == "influence")
    width = projected.arrays["features_0"].shape[1]
    full_width = exact.arrays["features_0"].shape[1]
    assert width < full_width  # the projection is smaller than the exact gradient
    a, b = exact.score(x_test), projected.score(x_test)
    assert np.allclose(projected.score(x_test[:3]), b[:3], rtol=1e-4, atol=1e-6 * np.abs(b).max())  # same projection
    rho = np.mean([spearmanr(a[i], b[i])[0] for i in range(len(a))])
    assert rho > 0.85, rho
    # a different projection seed changes the estimate, not the ranking's quality
    other = ix.fit(method, model, x_train, checkpoints=states, params={**common, "projection_dim": 256, "seed": 7})
    assert not np.allclose(other.score(x_test), b)


def test_gauss_newton_index_solves_once_and_equals_the_subset_gauss_newton(monkeypatch) -> None:
    """With exact features the feature-space solve is the subset function's Gauss–Newton LiSSA, number for number;
    scoring then needs no Hessian data (no recursion per query)."""
    model = WideAE().eval()
    x_train, x_test = _data(5)
    params = {"projection_dim": None, "minibatch_size": 16, "recursion_depth": 20}
    fitted = ix.fit("influence", model, x_train, params=params)  # "auto": Gauss–Newton applies to decoder∘encoder
    width = fitted.arrays["features_0"].shape[1]
    assert fitted.arrays["solve_0"].shape == (width, width) and fitted.hessian_data is None
    got = torch.from_numpy(fitted.score(x_test))
    ref = influence_scores(model, x_train, x_test, hessian="gauss_newton", direction="test", minibatch_size=16,
                           recursion_depth=20)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))
    # the Jacobian rows of every drawn example computed once (they fit) or per minibatch: the same solve
    monkeypatch.setattr(ix, "SOLVE_ROWS_BYTES", 0)
    per_step = ix.fit("influence", model, x_train, params=params)
    np.testing.assert_allclose(per_step.arrays["solve_0"], fitted.arrays["solve_0"], rtol=1e-5, atol=1e-6)
    again = ix.from_arrays("influence", model, fitted.arrays, params=params)  # no training inputs needed
    torch.testing.assert_close(torch.from_numpy(again.score(x_test)), got, rtol=1e-5,
                               atol=1e-6 * float(got.abs().max()))
    # the exact Hessian is still there on request, and refuses nothing it can run
    exact = ix.fit("influence", model, x_train, params={**params, "hessian": "exact"})
    assert "solve_0" not in exact.arrays and exact.hessian_data is not None
    # the page's caption says what the full-split scores approximate
    from lfx_engine.explorer.examples import index_approximation

    assert index_approximation(fitted) == "Gauss–Newton Hessian, its recursion solved once in feature space"
    projected = ix.fit("influence", model, x_train, params={**params, "projection_dim": 64})
    assert index_approximation(projected).startswith("gradients projected: 64 dimensions per layer group; Gauss")
    assert index_approximation(exact) == "" and index_approximation(ix.fit("cosine", model, x_train)) == ""
    # wider rows than MAX_SOLVE_WIDTH make "auto" keep the exact recursion
    assert ix._index_hessian(model, x_train[:4], "auto", ix.MAX_SOLVE_WIDTH + 1) == "exact"
    assert ix._index_hessian(model, x_train[:4], "auto", width) == "gauss_newton"


def test_a_few_queries_multiply_the_float16_rows_directly_with_the_same_scores() -> None:
    """One clicked sample skips the float32 conversion of the stored rows; a batch converts them by chunks."""
    torch.manual_seed(3)
    features = torch.randn(9000, 64) * 1e-3
    arrays = ix._stored(features, 0, quantise=True)
    assert arrays["features_0"].dtype == np.float16
    few, many = torch.randn(ix.HALF_QUERY_ROWS, 64) * 40, torch.randn(ix.HALF_QUERY_ROWS + 1, 64) * 40
    for test in (few, many, few[:1]):
        got, exact = ix._products(test, arrays, 0), test @ features.T
        assert got.dtype == torch.float32 and got.shape == exact.shape
        assert (got - exact).abs().max() <= 2e-3 * exact.abs().max()
    # the two paths agree with each other on the same rows
    assert torch.allclose(ix._products(few, arrays, 0), ix._products(torch.cat([few, many[:1]]), arrays, 0)[:-1],
                          rtol=0, atol=2e-3 * float((few @ features.T).abs().max()))


def test_feature_map_of_full_vectors_matches_the_per_example_rows() -> None:
    """``vector`` (used for solved IF vectors) and ``rows`` are the same linear map of the gradient."""
    model = WideAE().eval()
    x = _data(3)[1]
    fmap = ix.GradientFeatureMap.build(model, x[:2], projection_dim=64, seed=3)
    rows = fmap.rows(model, x, ix.mse_per_example, 8,
                     torch.device("cpu"))
    full = per_example_grads(model, x)
    torch.testing.assert_close(fmap.vector(model, full, torch.device("cpu")), rows, rtol=1e-4, atol=1e-6)
    assert rows.shape[1] == fmap.width(model)


def test_recurrent_encoder_exact_tracin_index() -> None:
    model = LSTMAE().eval()
    generator = torch.Generator().manual_seed(0)
    x_train, x_test = torch.randn(12, 6, 1, generator=generator), torch.randn(3, 6, 1, generator=generator)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    fitted = ix.fit("tracin", model, x_train, loss_fn=l1_per_example, checkpoints=[state],
                    params={"projection_dim": None})
    ref = tracin_scores(model, [state], x_train, x_test, loss_fn=l1_per_example)
    torch.testing.assert_close(torch.from_numpy(fitted.score(x_test)), ref, rtol=1e-4, atol=1e-6)


def test_sinks_agree_with_the_dense_matrix(tmp_path) -> None:
    model = conv_model().eval()
    x_train, x_test = _data(4, n_train=30, n_test=7)
    fitted = ix.fit("dknn", model, x_train)
    dense = fitted.score(x_test, batch_size=3)
    top = fitted.score(x_test, ix.TopKSink(len(x_test), 4, bottom=True), batch_size=3)
    order = np.argsort(-dense, axis=1, kind="stable")
    assert np.array_equal(np.sort(top["top_indices"], axis=1), np.sort(order[:, :4], axis=1))
    assert np.allclose(top["top_scores"], np.take_along_axis(dense, top["top_indices"], axis=1))
    assert np.allclose(top["bottom_scores"], np.sort(dense, axis=1)[:, :4])
    shards = fitted.score(x_test, ix.ShardSink(tmp_path / "shards"), batch_size=3)
    assert len(shards) == 3 and all(p.suffix == ".npz" for p in shards)
    assert np.array_equal(ix.read_shards(shards), dense)


def test_bad_settings_and_budget_are_refused() -> None:
    model = WideAE().eval()
    x_train = _data()[0]
    with pytest.raises(ParameterError, match="unknown example-importance method"):
        ix.fit("telepathy", model, x_train)
    with pytest.raises(ParameterError, match="no setting"):
        ix.fit("dknn", model, x_train, params={"projection_dim": 8})
    with pytest.raises(ParameterError, match="memory budget"):
        ix.fit("grad_dot", model, x_train, params={"projection_dim": None}, max_memory_mb=0.001)
    with pytest.raises(ParameterError, match="checkpoint"):
        ix.fit("tracin", model, x_train)
    with pytest.raises(ParameterError, match="k must be"):
        ix.TopKSink(3, 0)
    with pytest.raises(ParameterError, match="hessian must be one of"):
        ix.fit("influence", model, x_train, params={"hessian": "newton"})
    lstm = LSTMAE().eval()
    series = torch.randn(6, 6, 1, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ParameterError, match="hessian='gauss_newton' needs"):
        ix.fit("influence", lstm, series, loss_fn=l1_per_example, params={"hessian": "gauss_newton"})


# ---------------------------------------------------------------------------------------- the explorer's index
def test_explorer_fits_once_on_the_full_split_and_reads_the_index_back(tiny_app_env, monkeypatch) -> None:
    from lfx_engine.explorer import Explorer

    name = "ecg5000_lstm_ae"
    explorer = Explorer(device="cpu")
    assert not explorer.index_cached(name, "cosine")
    assert explorer.example_index(name, "cosine", compute=False) is None and explorer.index_ranking(
        name, "cosine", 3) is None
    fitted = explorer.example_index(name, "cosine")
    n_train = len(explorer.train_data(name)[1])
    assert fitted.n_train == n_train and explorer.index_cached(name, "cosine")
    ranking = explorer.index_ranking(name, "cosine", 3, k=5)
    assert list(ranking["part"]) == ["top"] * 5 + ["bottom"] * 5
    assert ranking["score"].is_monotonic_decreasing and set(ranking["role"]) <= {"near", "far"}
    assert list(ranking["rank"][:5]) == [1, 2, 3, 4, 5] and ranking["rank"].iloc[-1] == n_train
    dataset = explorer.choice(name).dataset
    assert list(ranking["class"]) == [explorer.class_names(dataset)[int(c)] for c in ranking["label"]]
    # roles are counted over every training example, not only the rows shown
    assert ranking.attrs["n_ranked"] == n_train and sum(ranking.attrs["role_counts"].values()) == n_train
    assert abs(ranking.attrs["role_counts"]["near"] - n_train / 2) <= 1  # near = at or above the median
    # a new process (a new explorer) reads the fitted arrays from the disk cache: nothing is fitted again
    monkeypatch.setattr(ix, "fit", lambda *a, **k: pytest.fail("fitted again"))
    again = Explorer(device="cpu")
    assert again.index_cached(name, "cosine")
    assert again.index_ranking(name, "cosine", 3, k=5)["train_index"].tolist() == ranking["train_index"].tolist()
    with pytest.raises(ParameterError, match="autoencoder"):
        again.example_index("mnist_betavae_b1_run1", "tracin")


def test_explorer_projection_fits_the_budget_and_indices_leave_memory_first(tiny_app_env, monkeypatch) -> None:
    from lfx_engine.explorer import Explorer

    explorer = Explorer(device="cpu")
    name = "mnist_dae_consistency"
    dim = explorer.index_params(name, "tracin")["projection_dim"]
    assert dim in explorer.PROJECTIONS
    model, x = explorer.model(name), explorer.train_data(name)[0]
    n_ckpt = len(explorer.entry(name).record["tracin_checkpoints"])
    width = ix.GradientFeatureMap.build(model, x[:2], dim).width(model)
    assert n_ckpt * len(x) * ix.feature_bytes(width, True) <= explorer.INDEX_BUDGET_MB * 2**20
    assert explorer.index_params(name, "simplex")["k_nearest"] == explorer.FULL_SIMPLEX_CORPUS
    assert explorer.index_params(name, "influence", {"damp": 0.01, "hessian": "exact"})["damp"] == 0.01
    explorer.example_index(name, "dknn")
    explorer.example_index("ecg5000_lstm_ae", "dknn")
    assert len(explorer._indices) == 2
    monkeypatch.setenv("LFX_MEMORY_MB", "1")  # a tiny budget: the older index goes before the model in use
    explorer.example_index(name, "cosine")
    assert len(explorer._indices) == 1  # only the index just fitted stays in memory
    assert explorer.index_cached(name, "dknn")  # the evicted one is still on disk


def test_the_one_dispatch_refuses_unknown_methods_and_settings_and_keeps_the_model() -> None:
    from lfx_engine.example_importance.dispatch import METHODS, score_matrix

    assert set(METHODS) == set(ix.INDEX_METHODS)  # the index and the subset views speak of the same methods
    model = WideAE().eval()
    x_train, x_test = _data()
    with pytest.raises(ParameterError, match="unknown example-importance method"):
        score_matrix("telepathy", model, x_train, x_test)
    with pytest.raises(ParameterError, match="no setting damp"):
        score_matrix("tracin", model, x_train, x_test, params={"damp": 0.1})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = score_matrix("tracin", model, x_train, x_test, checkpoints=_checkpoints(WideAE()))
    assert out["scores"].shape == (len(x_test), len(x_train))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # checkpoints went to a copy
    simplex = score_matrix("simplex", model, x_train, x_test, params={"steps": 50})
    assert set(simplex) == {"scores", "residuals", "latent_norms"}
