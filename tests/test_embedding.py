"""Engine side of the Embedding page: projections (PCA, t-SNE, UMAP), their disk cache, attribution statistics,
a group's summary and a test point's nearest training examples, each checked against a direct computation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from browser.tiny_zoo import build_tiny_zoo, find_real_data
from lfx_engine import cache
from lfx_engine.errors import ParameterError
from lfx_engine.example_importance import encode
from lfx_engine.explorer import Explorer
from lfx_engine.explorer.embedding import attribution_stats, project_2d, umap_available

NAME = "mnist_dae_consistency"


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> dict[str, str]:
    data = find_real_data()
    if data is None:
        pytest.skip("real datasets not found (set LFX_DATA_DIR or place ../shared/data)")
    return build_tiny_zoo(tmp_path_factory.mktemp("emb_zoo"), data, entries=[(NAME, 1, 1)])


@pytest.fixture
def explorer(zoo, monkeypatch, tmp_path) -> Explorer:
    for key, value in zoo.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LFX_CACHE_DIR", str(tmp_path / "cache"))
    return Explorer("cpu")


def test_pca_matches_svd_and_fixes_signs() -> None:
    z = np.random.default_rng(0).normal(size=(50, 5)) * [5, 3, 1, 1, 1]
    xy = project_2d(z, "pca")
    centred = z - z.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    assert np.allclose(np.abs(xy), np.abs(centred @ vt[:2].T))
    assert np.allclose(project_2d(-z, "pca"), xy)  # sign of the axes fixed: the map does not flip


@pytest.mark.parametrize("method", ["tsne", "umap"])
def test_nonlinear_projections_are_seeded(method: str) -> None:
    if method == "umap" and umap_available():
        pytest.skip(umap_available())
    z = np.random.default_rng(1).normal(size=(200, 6))
    a, b = project_2d(z, method, seed=0), project_2d(z, method, seed=0)
    assert a.shape == (200, 2) and np.isfinite(a).all()
    assert np.allclose(a, b)


def test_bad_projection_and_point_count(explorer) -> None:
    with pytest.raises(ParameterError, match="unknown projection"):
        explorer.embedding(NAME, "isomap", 100)
    with pytest.raises(ParameterError, match="number of points"):
        explorer.embedding(NAME, "pca", 10 ** 6)


def test_embedding_shape_labels_and_cache_hit(explorer, monkeypatch) -> None:
    assert not explorer.embedding_cached(NAME, "tsne", 300)
    frame = explorer.embedding(NAME, "tsne", 300)
    assert list(frame.columns) == ["idx", "x", "y", "label", "class"] and len(frame) == 300
    y = explorer.test_data(NAME)[1][:300].numpy()
    assert (frame["label"].to_numpy() == y).all()
    assert explorer.embedding_cached(NAME, "tsne", 300)
    calls = []
    monkeypatch.setattr("lfx_engine.explorer.embedding.project_2d", lambda *a, **k: calls.append(a))
    again = explorer.embedding(NAME, "tsne", 300)  # served from disk: the projection is not recomputed
    assert not calls and np.allclose(again[["x", "y"]], frame[["x", "y"]])
    assert len(list((cache.cache_path("embedding", {}).parent).glob("*.npz"))) == 1


def test_embedding_of_all_points_is_pca_of_latents(explorer) -> None:
    frame = explorer.embedding(NAME, "pca")
    assert len(frame) == explorer.test_size(NAME) == 10_000
    z = explorer.test_latents(NAME)
    assert np.allclose(frame[["x", "y"]].to_numpy(), project_2d(z, "pca"))


def test_attribution_stats_match_direct_computation(explorer) -> None:
    stats = explorer.point_attribution_stats(NAME, "saliency", 70)  # two batches
    assert len(stats) == 70 and explorer.stats_cached(NAME, "saliency", 70)
    x = explorer.test_data(NAME)[0][:70]
    maps = np.abs(explorer.display_map(explorer.attribute(NAME, x, "saliency"))).reshape(70, -1)
    p = maps / maps.sum(axis=1, keepdims=True)
    entropy = -(p * np.log(np.where(p > 0, p, 1))).sum(axis=1)
    assert np.allclose(stats["total"], maps.sum(axis=1), rtol=1e-4)
    assert np.allclose(stats["entropy"], entropy, rtol=1e-4)


def test_attribution_stats_of_a_uniform_map() -> None:
    out = attribution_stats(np.ones((2, 4, 4)))
    assert np.allclose(out["total"], 16) and np.allclose(out["entropy"], np.log(16))


def test_group_summary_matches_direct_computation(explorer) -> None:
    members = [40, 3, 7, 3, 12, 99]
    summary = explorer.group_summary(NAME, members, "saliency", max_attributed=3)
    x, y = explorer.test_data(NAME)
    idx = np.array([3, 7, 12, 40, 99])
    assert summary.size == 5 and (summary.indices == idx).all()
    assert (summary.attributed == idx[:3]).all()
    assert np.allclose(summary.mean_input, x[torch.as_tensor(idx)].mean(dim=0).numpy())
    direct = explorer.display_map(explorer.attribute(NAME, x[torch.as_tensor(idx[:3])], "saliency")).mean(axis=0)
    assert np.allclose(summary.mean_saliency, direct, rtol=1e-4, atol=1e-7)
    counts = dict(zip(summary.classes["class"], summary.classes["count"]))
    expected = {}
    for i in idx:
        expected[str(int(y[i]))] = expected.get(str(int(y[i])), 0) + 1
    assert counts == expected
    with pytest.raises(ParameterError, match="empty"):
        explorer.group_summary(NAME, [], "saliency")


def test_nearest_train_matches_direct_distances(explorer) -> None:
    near = explorer.nearest_train(NAME, 5, k=4, n=200)
    train_idx, _ = explorer.example_subsets(NAME, 200)
    encoder = explorer.model(NAME).encoder
    h_train = encode(encoder, explorer.train_data(NAME)[0][torch.as_tensor(train_idx)])
    h_test = encode(encoder, explorer.test_data(NAME)[0][5:6])
    dist = torch.cdist(h_test, h_train)[0].numpy()
    order = np.argsort(dist, kind="stable")[:4]
    assert list(near["train_index"]) == list(train_idx[order])
    assert np.allclose(near["distance"], dist[order], rtol=1e-3, atol=1e-4)
    assert (np.diff(near["distance"]) >= 0).all()
