"""AppTest of the pages on the shipped zoo (``checkpoints/``) for the datasets the tiny test zoo lacks.

The page tests run on a tiny MNIST/ECG zoo trained in a fixture; these open the
real CIFAR-10 and dSprites models a user gets out of the box, one sample each,
and check that images, numbers and charts appear. Skipped without real data.
"""
from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from lfx_engine.config import REPO_ROOT

import apptest_helpers
from apptest_helpers import APP, ok, texts
from conftest import real_data_dir

TIMEOUT = 240
SHIPPED = REPO_ROOT / "checkpoints"
MANIFEST = json.loads((SHIPPED / "manifest.json").read_text())["entries"] if (SHIPPED / "manifest.json").exists() \
    else {}


def shipped(dataset: str, **match: str) -> list[str]:
    """Names of shipped entries of ``dataset`` whose records match ``match`` (sorted)."""
    return sorted(name for name, rec in MANIFEST.items()
                  if rec.get("dataset") == dataset and all(rec.get(k) == v for k, v in match.items()))


@pytest.fixture(autouse=True)
def app_env(tmp_path, monkeypatch) -> None:
    data = real_data_dir()
    if data is None:
        pytest.skip("real datasets not found (set LFX_DATA_DIR or place ../shared/data)")
    monkeypatch.setenv("LFX_DATA_DIR", str(data))
    monkeypatch.setenv("LFX_CHECKPOINT_DIR", str(SHIPPED))
    monkeypatch.setenv("LFX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("LFX_DEVICE", "cpu")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def open_page(page: str, **selection) -> AppTest:
    return apptest_helpers.open_page(page, timeout=TIMEOUT, **selection)


@pytest.mark.parametrize("dataset", ["cifar10", "dsprites"])
def test_home_lists_the_shipped_models(dataset: str) -> None:
    names = shipped(dataset)
    if not names:
        pytest.skip(f"no shipped {dataset} model")
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    ok(at.run())
    models = [d.value for d in at.dataframe][1]
    assert set(names) <= set(models["model"])


@pytest.mark.parametrize("name", (shipped("cifar10", experiment="consistency")
                                  + shipped("cifar10", task="classification"))[:2])
def test_cifar10_saliency_on_a_shipped_model(name: str) -> None:
    at = ok(open_page("saliency", dataset="cifar10", model=name, methods=["saliency", "integrated_gradients"],
                      sample=2))
    assert at.session_state["sel_model"] == name
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Methods"] == "2"
    assert len(at.image) >= 3  # gallery, then input / heat map / overlay per method
    assert "Test sample #2" in texts(at)


@pytest.mark.parametrize("name", shipped("dsprites", task="betavae")[:1] + shipped("cifar10", task="betavae")[:1])
def test_disentanglement_on_a_shipped_vae(name: str) -> None:
    dataset = MANIFEST[name]["dataset"]
    at = ok(open_page("disentanglement", dataset=dataset, model=name, sample=1))
    assert at.session_state["sel_model"] == name
    d = int(MANIFEST[name]["latent_dim"])
    captions = [c for img in at.image for c in img.captions]
    assert any(c.startswith(f"unit {d - 1} · μ = ") for c in captions)  # one map per latent unit


CIFAR_AE = "cifar10_dae_consistency"


@pytest.mark.skipif(CIFAR_AE not in MANIFEST, reason="no shipped CIFAR-10 consistency model")
def test_cifar10_saliency_every_method() -> None:
    from lfx_engine.explorer import FEATURE_METHODS

    at = ok(open_page("saliency", dataset="cifar10", model=CIFAR_AE, methods=list(FEATURE_METHODS), sample=1))
    assert {m.label: m.value for m in at.metric}["Methods"] == str(len(FEATURE_METHODS))
    assert len(at.image) >= 1 + len(FEATURE_METHODS)


@pytest.mark.skipif(CIFAR_AE not in MANIFEST, reason="no shipped CIFAR-10 consistency model")
def test_cifar10_masking_and_latent_examples() -> None:
    at = ok(open_page("masking", dataset="cifar10", model=CIFAR_AE, methods=["saliency"], sample=2))
    at.slider(key="mask_n").set_value(10)
    at.multiselect(key="mask_methods").set_value(["saliency", "integrated_gradients"]).run()
    table = ok(at).dataframe[0].value
    assert "Random (control)" in table.columns and table.shape == (7, 3)
    at = ok(open_page("examples", dataset="cifar10", model=CIFAR_AE, xmethods=["dknn", "cosine", "simplex"],
                      sample=4))
    at.selectbox(key="ex_n").set_value(100).run()
    metrics = {m.label: m.value for m in ok(at).metric}
    assert "Same class in top 8" in metrics and "Top score" in metrics
