"""AppTest of the Explore pages (and Lucent) on users' own models from a project file (``LFX_PROJECT``).

The worked example (``tests/project_fixture.py``) gives a conv autoencoder from user
code on a labelled image folder, the same weights on an unlabelled folder, and a
``torch.export`` archive; each page is opened on each, next to the shipped zoo.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

import pytest

import apptest_helpers
from apptest_helpers import ok, texts
from conftest import real_data_dir
from lfx_engine.config import REPO_ROOT
from project_fixture import build_example_project

TIMEOUT = 120
MODELS = {"small_ae": "digits", "small_ae_unlabelled": "unlabelled", "exported_encoder": "digits"}
#: the example's VAE (kind = "vae", mu = "tuple:0") meets the Disentanglement page


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    data = real_data_dir()
    assert data is not None, "the real datasets are missing: set LFX_DATA_DIR or place ../shared/data"
    return build_example_project(tmp_path_factory.mktemp("own_encoder_app"), data)


@pytest.fixture(autouse=True)
def app_env(project, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LFX_DATA_DIR", str(real_data_dir()))
    monkeypatch.setenv("LFX_CHECKPOINT_DIR", str(REPO_ROOT / "checkpoints"))
    monkeypatch.setenv("LFX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("LFX_PROJECT", str(project))
    monkeypatch.setenv("LFX_DEVICE", "cpu")


def open_page(page: str, **selection):
    return apptest_helpers.open_page(page, timeout=TIMEOUT, **selection)


def test_home_lists_the_users_models_next_to_the_zoo() -> None:
    at = ok(open_page("home"))
    frames = [d.value for d in at.dataframe]
    datasets = frames[0]
    assert {"digits", "unlabelled", "MNIST"} <= set(datasets["dataset"])
    yours = next(f for f in frames if "title" in f.columns)
    assert set(yours["model"]) == {*MODELS, "small_vae"}
    assert any("mnist_dae_consistency" in set(f.get("model", [])) for f in frames)


@pytest.mark.parametrize("name", list(MODELS))
def test_saliency_on_user_models(name: str) -> None:
    at = ok(open_page("saliency", dataset=MODELS[name], model=name, methods=["saliency", "integrated_gradients"],
                      sample=2))
    assert at.session_state["sel_model"] == name
    assert "Test sample #2" in texts(at)
    gallery = 12 if name == "small_ae_unlabelled" else 24  # its test split holds 12 images
    assert len(at.image) == gallery + 12  # the gallery, then per method: input, |attr| + bar, signed + bar, overlay
    labels = [b.label for b in at.button if b.key and b.key.startswith("sal_pick_")]
    if name == "small_ae_unlabelled":
        assert labels and all(label.startswith("#") and "·" not in label for label in labels)
        assert "(class unlabelled)" in texts(at)
    else:
        assert labels and all(label.split("· ")[-1] in [str(d) for d in range(10)] for label in labels)


@pytest.mark.parametrize("name", list(MODELS))
def test_masking_on_user_models(name: str) -> None:
    at = open_page("masking", dataset=MODELS[name], model=name, methods=["saliency"], sample=1)
    at.slider(key="mask_n").set_value(10).run()
    ok(at)
    assert "Representation shift over 10 test inputs" in texts(at)
    assert len(list(at.get("vega_lite_chart"))) >= 2  # dataset-wide curves and the sample's curve


@pytest.mark.parametrize("name", list(MODELS))
def test_top_examples_on_user_models(name: str) -> None:
    at = ok(open_page("examples", dataset=MODELS[name], model=name, xmethods=["dknn", "tracin"], sample=0))
    assert len(at.image) == 3  # the sample tile, DKNN's top-k and bottom-k galleries
    if name == "small_ae_unlabelled":
        assert any(m.label == "Labels" for m in at.metric)
    else:
        assert any(m.label.startswith("Same class in top") for m in at.metric)
    if name == "exported_encoder":
        at.session_state["ex_tab"] = "TracIn"
        ok(at.run())
        assert "TracIn needs a decoder" in texts(at)
    at.session_state["ex_tab"] = "Similarity rates"
    ok(at.run())
    if name == "small_ae_unlabelled":
        assert "has no labels" in texts(at)
    else:
        assert "Compute the full score matrices" in texts(at) or len(list(at.get("vega_lite_chart")))


def test_tracin_on_the_user_autoencoder() -> None:
    at = ok(open_page("examples", dataset="digits", model="small_ae", xmethods=["tracin"], sample=0))
    at.selectbox(key="ex_n").select(100).run()
    next(b for b in at.button if b.label.startswith("Compute TracIn")).click().run()
    ok(at)
    assert len(at.image) == 3
    assert any(m.label == "Top score" for m in at.metric)


def test_lucent_on_a_user_image_encoder() -> None:
    at = ok(open_page("lucent", dataset="digits", model="small_ae"))
    assert at.session_state["sel_model"] == "small_ae"
    assert "Every unit of the latent layer" in texts(at) and "Expected time" in texts(at)


def test_disentanglement_on_a_user_vae() -> None:
    at = ok(open_page("disentanglement", dataset="digits", model="small_vae", sample=3))
    assert at.session_state["sel_model"] == "small_vae"
    assert "Small VAE (your vae)" in texts(at)  # one row of unit maps: the user's VAE alone
    assert len(at.image) >= 2  # the sample tile and the unit-map row, then the traversal rows
    next(b for b in at.button if b.label.startswith("Compute the five metrics")).click().run()
    ok(at)
    metrics = {m.label: float(m.value) for m in at.metric if m.label in ("Pearson", "cosine", "entropy")}
    assert set(metrics) == {"Pearson", "cosine", "entropy"}
    assert -1 <= metrics["Pearson"] <= 1
    assert 0 <= metrics["entropy"] <= np.log(4) + 1e-6
    assert "Disentanglement metrics vs β" not in texts(at)
