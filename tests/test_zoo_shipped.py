"""The shipped checkpoints: manifest and files agree, every model loads and encodes real data."""
from __future__ import annotations

import json

import pytest
import torch

from lfx_engine.config import REPO_ROOT
from lfx_engine.data import load_split, resize_to_32
from lfx_engine.training.io import file_sha256
from lfx_engine.training.zoo import ZOO, load_entry, read_manifest

# The shipped folder itself: other suites point LFX_CHECKPOINT_DIR at tiny test zoos.
SHIPPED_DIR = REPO_ROOT / "checkpoints"
MANIFEST = read_manifest(SHIPPED_DIR)["entries"]
SHIPPED = sorted(MANIFEST)


def test_manifest_is_valid_json_with_entries():
    path = SHIPPED_DIR / "manifest.json"
    if not path.is_file():
        pytest.skip("no shipped checkpoints yet")
    data = json.loads(path.read_text())
    assert data["entries"], "the manifest lists no checkpoint"


@pytest.mark.parametrize("name", SHIPPED)
def test_manifest_matches_file(name):
    record = MANIFEST[name]
    path = SHIPPED_DIR / record["file"]
    assert path.is_file(), f"{name}: {path} is missing"
    assert path.stat().st_size == record["size_bytes"]
    assert file_sha256(path) == record["sha256"]
    assert path.stat().st_size <= 10 * 1024 * 1024, "each shipped file must stay under 10 MB"
    for item in record.get("tracin_checkpoints", []):
        tracin = SHIPPED_DIR / item["file"]
        assert tracin.is_file() and file_sha256(tracin) == item["sha256"]
    if ZOO.get(name) and ZOO[name].tracin:
        assert len(record["tracin_checkpoints"]) >= 2, "TracIn needs several saved checkpoints"


def test_checkpoint_budget():
    total = sum(p.stat().st_size for p in SHIPPED_DIR.rglob("*") if p.is_file())
    assert total <= 120 * 1024 * 1024


@pytest.mark.parametrize("name", SHIPPED)
def test_quality_floor(name):
    record = MANIFEST[name]
    if record["task"] == "classification":
        floor = {"mnist": 0.90, "cifar10": 0.55}.get(record["dataset"], 0.0)
        assert record["test_accuracy"] >= floor
    elif "baseline_test_loss" in record:
        # clearly below the trivial mean-image predictor
        assert record["test_loss"] < 0.8 * record["baseline_test_loss"]
    else:
        assert record.get("rec") is not None and record.get("kl") is not None


@pytest.mark.parametrize("name", SHIPPED)
def test_loads_and_encodes_real_samples(name, shared_data):
    record = MANIFEST[name]
    model = load_entry(name, root=SHIPPED_DIR)
    assert not model.training
    split = ZOO[name].test_split if name in ZOO else "test"
    x = load_split(record["dataset"], split).x[:8]
    if ZOO.get(name) and ZOO[name].resize32:
        x = resize_to_32(x)
    with torch.inference_mode():
        z = model.encoder(x)
    assert z.shape == (8, record["latent_dim"])
    assert torch.isfinite(z).all()


# --------------------------------------------------------------------------- VAE quality floors
VAES = [n for n in SHIPPED if MANIFEST[n]["task"] in ("betavae", "btcvae")]


@pytest.mark.parametrize("name", VAES)
def test_vae_quality_record_is_true(name, shared_data):
    """Every shipped VAE carries its measured quality, and the record matches a fresh measurement."""
    from lfx_engine.training.quality import measure_quality

    recorded = MANIFEST[name].get("quality")
    assert recorded, f"{name}: no quality record; run `lfx zoo quality --write`"
    fresh = measure_quality(MANIFEST[name], SHIPPED_DIR, n_test=recorded["n_test"])
    assert fresh["verdict"] == recorded["verdict"]
    assert fresh["active_units"] == recorded["active_units"]
    assert fresh["rec_ratio"] == pytest.approx(recorded["rec_ratio"], abs=2e-3)
    if recorded["verdict"] == "ok":
        assert recorded["active_units"] >= 2 and recorded["rec_ratio"] < 0.9


def test_every_shipped_vae_passes_the_floors():
    """Nothing collapsed or dead ships (issue 11): a VAE below the floors is retrained or left out of the zoo
    (then listed as untrained, with its train command)."""
    below = {n: MANIFEST[n]["quality"]["verdict"] for n in VAES if MANIFEST[n]["quality"]["verdict"] != "ok"}
    assert not below, f"VAEs below the quality floors must not ship: {below}"
    assert {MANIFEST[n]["dataset"] for n in VAES} == {"mnist", "dsprites", "cifar10"}
