"""The reproduction study's own models: importer, key mapping, provenance, quality, selection in reproduce.

Runs on the real subset of the study's files in ``../shared/fact`` (CI fails, not
skips, when it is missing) and on crafted bad files.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lfx_engine.catalogue import Catalogue
from lfx_engine.config import REPO_ROOT
from lfx_engine.data import load_split, resize_to_32
from lfx_engine.errors import CheckpointError, ParameterError
from lfx_engine.metrics.vae_quality import vae_quality
from lfx_engine.study import convert_state, expected_files, import_study
from lfx_engine.training.zoo import load_entry
from tests.conftest import SHARED_FACT

FACT_COMMIT = "070fcc5f2014d5e0a55e56197f425ab6404b4a7a"


def require_fact() -> Path:
    assert SHARED_FACT.is_dir() and (SHARED_FACT / "results").is_dir(), \
        f"the study's checkpoint subset is missing: {SHARED_FACT} (CI expects ../shared/fact)"
    return SHARED_FACT


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    report = import_study(require_fact(), out, commit=FACT_COMMIT)
    return report


def test_import_of_the_shared_subset(imported):
    # 73 files in ../shared/fact: 60 model files (the rest are JSON/CSV/README); the full layout has 198
    assert len(imported.imported) == 60
    assert not imported.refused, imported.refused
    assert len(imported.missing) == len(expected_files()) - 60
    assert "results/mnist/vae/Beta-vae_beta1_run3.pt" in imported.missing
    manifest = json.loads((imported.out / "manifest.json").read_text())["entries"]
    assert set(manifest) == {r["name"] for r in imported.imported}
    for rec in manifest.values():
        assert rec["source"] == "study" and rec["name"].startswith("study_")
        original = SHARED_FACT / rec["study"]["path"]
        assert hashlib.sha256(original.read_bytes()).hexdigest() == rec["study"]["sha256"]
        assert rec["study"]["commit"] == FACT_COMMIT
        assert (imported.out / rec["file"]).is_file()
    # nothing written into the repository
    assert REPO_ROOT.resolve() not in imported.out.resolve().parents


def test_vae_mapping_splits_the_interleaved_layer(imported):
    original = torch.load(SHARED_FACT / "results/dsprites/vae/Beta-vae_beta1_run1.pt", weights_only=True)
    model = load_entry("study_dsprites_betavae_b1_run1", imported.out)
    joint = original["encoder.mu_logvar_gen.weight"]
    assert torch.equal(model.encoder.mu.weight, joint[0::2])
    assert torch.equal(model.logvar_head.weight, joint[1::2])
    assert torch.equal(model.decoder.conv[0].weight, original["decoder.convT_64.weight"])
    assert torch.equal(model.encoder.trunk.conv[6].weight, original["encoder.conv_64.weight"])


def test_study_vae_passes_the_floors_and_a_wrong_mapping_does_not(imported, shared_data):
    x = load_split("dsprites", "test").x[:300].float()
    mean = load_split("dsprites", "train").x[:3000].float().mean(0)
    model = load_entry("study_dsprites_betavae_b1_run1", imported.out)
    good = vae_quality(model, x, mean_image=mean)
    assert good.verdict() == "ok" and good.active_units >= 3 and good.rec_ratio < 0.2
    # control: reading μ as the first half of the joint layer (not interleaved) breaks the model
    original = torch.load(SHARED_FACT / "results/dsprites/vae/Beta-vae_beta1_run1.pt", weights_only=True)
    with torch.no_grad():
        for part in ("weight", "bias"):
            joint = original[f"encoder.mu_logvar_gen.{part}"]
            getattr(model.encoder.mu, part).copy_(joint[:6])
            getattr(model.logvar_head, part).copy_(joint[6:])
    wrong = vae_quality(model, x, mean_image=mean)
    assert wrong.rec_ratio > 2 * good.rec_ratio


def test_the_floors_pass_our_retrained_dsprites_vae_and_fail_an_untrained_one(shared_data):
    """The floors separate a trained dSprites VAE from the same architecture at initialisation (or after the
    first zoo's 80 steps, whose models no longer ship)."""
    from lfx_engine.models import build_model
    from lfx_engine.training.zoo import ZOO

    x = load_split("dsprites", "test").x[:300].float()
    mean = load_split("dsprites", "train").x[:3000].float().mean(0)
    trained = vae_quality(load_entry("dsprites_betavae_b1_run1", REPO_ROOT / "checkpoints"), x, mean_image=mean)
    assert trained.verdict() == "ok" and trained.active_units >= 2 and trained.rec_ratio < 0.9
    entry = ZOO["dsprites_betavae_b1_run1"]
    torch.manual_seed(0)
    untrained = vae_quality(build_model(entry.arch, **entry.arch_kwargs()), x, mean_image=mean)
    assert untrained.verdict() != "ok" and untrained.rec_ratio > 0.9


def test_study_autoencoder_and_classifiers_work_on_real_data(imported, shared_data):
    test = load_split("mnist", "test")
    x, y = test.x[:1000].float(), test.y[:1000]
    dae = load_entry("study_mnist_dae_consistency_features", imported.out)
    with torch.no_grad():
        mse = torch.mean((dae(x) - x) ** 2).item()
    assert mse < 0.8 * torch.mean((x - load_split("mnist", "train").x[:5000].float().mean(0)) ** 2).item()
    for name in ("study_mnist_pretext_classification_run0", "study_mnist_evf_classifier_run0",
                 "study_mnist_evf_classifier_20230119_run0"):
        with torch.no_grad():
            accuracy = (load_entry(name, imported.out)(x).argmax(1) == y).float().mean().item()
        assert accuracy > 0.9, name
    x32 = resize_to_32(x[:300])
    q = vae_quality(load_entry("study_mnist_betavae_b1_run1", imported.out), x32,
                    mean_image=resize_to_32(load_split("mnist", "train").x[:3000].float()).mean(0))
    assert q.verdict() == "ok" and q.active_units == 3


class _Marker:
    """Unpickling this would create a file: weights-only loading must refuse it first."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_missing_foreign_corrupt_and_malicious_files_are_skipped(tmp_path):
    clone = tmp_path / "FACT"
    for rel in ("results/mnist/pretext/Denoising-ae_run0.pt", "results/mnist/pretext/Denoising-ae_run1.pt",
                "results/mnist/vae/Beta-vae_beta1_run1.pt"):
        (clone / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(require_fact() / rel, clone / rel)
    bad = clone / "results/mnist/pretext"
    (bad / "Reconstruction-ae_run0.pt").write_text("not a model")                      # foreign
    data = (SHARED_FACT / "results/mnist/pretext/Inpainting-ae_run0.pt").read_bytes()
    (bad / "Inpainting-ae_run0.pt").write_bytes(data[: len(data) // 2])                 # truncated
    marker = tmp_path / "pwned"
    torch.save({"encoder.x": _Marker(str(marker))}, bad / "Classifier_run0.pt")         # pickled object
    state = torch.load(SHARED_FACT / "results/mnist/pretext/Denoising-ae_run0.pt", weights_only=True)
    state["encoder.encoder_lin.2.weight"] = torch.zeros(5, 128)
    torch.save(state, bad / "Denoising-ae_run2.pt")                                     # wrong shape
    report = import_study(clone, tmp_path / "out", commit="abc1234")
    assert sorted(r["name"] for r in report.imported) == ["study_mnist_betavae_b1_run1",
                                                          "study_mnist_pretext_denoising_run0",
                                                          "study_mnist_pretext_denoising_run1"]
    refused = dict(report.refused)
    assert "not a PyTorch file" in refused["results/mnist/pretext/Reconstruction-ae_run0.pt"]
    assert "corrupt" in refused["results/mnist/pretext/Inpainting-ae_run0.pt"]
    assert "weights-only load refuses" in refused["results/mnist/pretext/Classifier_run0.pt"]
    assert "shape mismatch" in refused["results/mnist/pretext/Denoising-ae_run2.pt"]
    assert not marker.exists(), "a pickled object was executed"
    assert "results/dsprites/vae/TC-vae_beta5_run3.pt" in report.missing


def test_converted_weights_never_go_into_the_repository(tmp_path):
    with pytest.raises(ParameterError, match="inside the project's repository"):
        import_study(require_fact(), REPO_ROOT / "checkpoints" / "study")
    with pytest.raises(ParameterError, match="not a clone"):
        import_study(tmp_path)


def test_convert_refuses_other_architectures_and_non_tensors():
    with pytest.raises(CheckpointError, match="not a state dict"):
        convert_state("mnist_ae", {"latent_dim": 4, "pretext": "denoising"}, {"a": 1})
    with pytest.raises(CheckpointError, match="missing"):
        convert_state("mnist_ae", {"latent_dim": 4, "pretext": "denoising"}, {})


def test_cli_import_and_catalogue(tmp_path):
    env = {**os.environ, "LFX_STUDY_DIR": str(tmp_path / "study")}
    done = subprocess.run([sys.executable, "-m", "lfx_engine", "zoo", "import-study", str(require_fact()),
                           "--commit", FACT_COMMIT], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "imported 60 model(s)" in done.stdout and "missing (138)" in done.stderr
    assert "Traceback" not in done.stderr
    catalogue = Catalogue(study_root=tmp_path / "study")
    sources = {m.source for m in catalogue.models()}
    assert {"zoo", "study"} <= sources
    entry = catalogue.model_entry("study_mnist_dae_consistency_examples")
    assert entry.source == "study" and "published none" in entry.unsupported["tracin"]
    assert catalogue.model_entry("study_ecg5000_lstm_ae_consistency_features").train_split == "features_train"
    bad = subprocess.run([sys.executable, "-m", "lfx_engine", "zoo", "import-study", str(tmp_path / "nope")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr


def test_reproduce_disvae_on_the_study_models_all_above_the_floors(imported, shared_data, tmp_path, monkeypatch):
    from lfx_engine.experiments.cli import reproduce

    monkeypatch.setenv("LFX_STUDY_DIR", str(imported.out))
    monkeypatch.setenv("LFX_CACHE_DIR", str(tmp_path / "cache"))
    results = tmp_path / "results"
    assert reproduce("disvae", "mnist", results=str(results), model_source="study", n_test=40, verbose=False,
                     maps_for_runs=()) == "ok"
    folder = results / "disvae" / "mnist-study"
    run = json.loads((folder / "run.json").read_text())
    assert run["model_source"] == "study"
    assert all(c["source"] == "study" and c["study"]["path"].startswith("results/mnist/vae/")
               for c in run["checkpoints"])
    import pandas as pd

    metrics = pd.read_csv(folder / "metrics.csv")
    assert len(metrics) == 12 and (metrics["verdict"] == "ok").all() and (metrics["active_units"] >= 2).all()
    assert set(pd.read_csv(folder / "summary.csv")["n_runs"]) == {2}


def test_factorial_finds_the_setting_of_the_studys_encoder_vs_full_figure(imported, shared_data, tmp_path,
                                                                          monkeypatch):
    """On the study's 2023-01-19 classifiers only softmax outputs with train-mode BatchNorm come near its
    numbers (METHOD §8); METHOD's logits in eval mode give near-identical maps (r > 0.9)."""
    import pandas as pd

    from lfx_engine.experiments.cli import reproduce

    monkeypatch.setenv("LFX_STUDY_DIR", str(imported.out))
    monkeypatch.setenv("LFX_CACHE_DIR", str(tmp_path / "cache"))
    results = tmp_path / "results"
    assert reproduce("encoder_vs_full", "mnist", results=str(results), model_source="study", design="factorial",
                     study_classifiers="2023-01-19", n_test=200, methods=("integrated_gradients", "saliency"),
                     verbose=False) == "ok"
    folder = results / "encoder_vs_full_factorial" / "mnist-study"
    combos = pd.read_csv(folder / "combinations.csv")
    cells = pd.read_csv(folder / "cells.csv")
    assert (cells["n_models"] == 5).all() and (combos["set"] == "2023-01-19").all()
    best = combos.sort_values("rms_difference").iloc[0]
    assert best["output"] == "softmax" and best["batch_norm"] == "train" and best["rms_difference"] < 0.06
    logits_eval = cells[(cells["output"] == "logits") & (cells["batch_norm"] == "eval")]
    assert (logits_eval["mean"] > 0.9).all()
    saliency = cells[(cells["method"] == "saliency") & (cells["output"] == "softmax")].set_index("batch_norm")
    assert saliency.loc["train", "mean"].min() < 0.3 < saliency.loc["eval", "mean"].min()


def test_reproduce_rejects_an_unknown_model_source(shared_data):
    from lfx_engine.experiments.disvae import run_disvae

    with pytest.raises(ParameterError, match="models must be one of"):
        run_disvae("mnist", model_source="theirs")


def test_trend_tests_claim_a_trend_only_when_significant():
    import numpy as np
    import pandas as pd

    from lfx_engine.experiments.disvae import trend_tests

    beta = np.repeat([1.0, 5.0, 10.0], 5)
    rng = np.random.default_rng(0)
    long = pd.concat([
        pd.DataFrame({"loss": "betavae", "metric": "entropy", "beta": beta, "value": -beta + rng.normal(0, .1, 15)}),
        pd.DataFrame({"loss": "betavae", "metric": "pearson", "beta": beta, "value": rng.normal(0, 1, 15)}),
        pd.DataFrame({"loss": "btcvae", "metric": "pearson", "beta": [1.0, 5.0], "value": [0.1, 0.2]}),
    ])
    out = trend_tests(long).set_index(["loss", "metric"])
    assert out.loc[("betavae", "entropy"), "verdict"] == "falling" and out.loc[("betavae", "entropy"), "p"] < 0.01
    assert out.loc[("betavae", "pearson"), "verdict"] == "not resolved"
    assert out.loc[("btcvae", "pearson"), "verdict"].startswith("not resolved (too few")
