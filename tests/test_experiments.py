"""``python -m lfx_engine reproduce``: every experiment end to end on tiny generated data and tiny models.

A session fixture writes a small MNIST-shaped bundle (200 train / 100 test
images) and a small ECG5000 pair of tables into a temporary data folder, trains
the needed zoo entries for one or two epochs on 64 examples into a temporary
checkpoint folder, and points LFX_* at temporary cache/results folders. Each
test then calls the CLI and checks the written files: CSV columns and value
ranges, run.json, the one-copy rule on re-runs and skipped pairs.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lfx_engine.cli import main
from lfx_engine.data import clear_cache
from lfx_engine.errors import ParameterError

N_TRAIN, N_TEST = 200, 100


def _mnist_like(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Noisy 28×28 images with a class-dependent bright bar; labels cycle 0..9."""
    y = (np.arange(n) % 10).astype(np.uint8)
    x = (rng.random((n, 28, 28)) * 60).astype(np.uint8)
    for i, c in enumerate(y):
        r, col = 2 + (c // 5) * 13, 2 + (c % 5) * 5
        x[i, r:r + 11, col:col + 4] = 255
    return x, y


def _ecg_table(n: int, rng: np.random.Generator) -> np.ndarray:
    """UCR-style rows: class 1 (normal) or 2..5, then 140 samples of a noisy sine."""
    cls = np.where(np.arange(n) % 2 == 0, 1, 2 + (np.arange(n) // 2) % 4)
    t = np.linspace(0, 2 * np.pi, 140)
    signal = np.sin(t[None, :] * (1 + (cls[:, None] > 1))) + 0.1 * rng.standard_normal((n, 140))
    return np.column_stack([cls, signal])


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory):
    """Generated data + tiny trained zoo entries; LFX_* point at temporary folders for this module only."""
    root = tmp_path_factory.mktemp("lfx_experiments")
    data, ckpt = root / "data", root / "ckpt"
    data.mkdir()
    rng = np.random.default_rng(0)
    x_train, y_train = _mnist_like(N_TRAIN, rng)
    x_test, y_test = _mnist_like(N_TEST, rng)
    np.savez(data / "mnist.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    for name, n in (("ECG5000_TRAIN.tsv", 60), ("ECG5000_TEST.tsv", 60)):
        np.savetxt(data / name, _ecg_table(n, rng), delimiter="\t", fmt=["%d"] + ["%.5f"] * 140)
    env = {"LFX_DATA_DIR": str(data), "LFX_CHECKPOINT_DIR": str(ckpt), "LFX_CACHE_DIR": str(root / "cache"),
           "LFX_RESULTS_DIR": str(root / "results"), "LFX_DEVICE": "cpu"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is faster, and the CI box is shared
    clear_cache()
    from lfx_engine.training.zoo import train_entry

    def train(name: str, epochs: int = 1, tracin_every: int = 10) -> None:
        train_entry(name, epochs=epochs, max_train=64, out_dir=ckpt, device="cpu", tracin_every=tracin_every)

    torch.manual_seed(0)
    train("mnist_dae_consistency", epochs=2, tracin_every=1)
    train("ecg5000_lstm_ae", epochs=1, tracin_every=1)
    for run in (1, 2):
        for task in ("reconstruction", "denoising", "inpainting", "classification"):
            train(f"mnist_pretext_{task}_run{run}")
    for loss in ("betavae", "btcvae"):
        for beta in (1, 5, 10):
            train(f"mnist_{loss}_b{beta}_run1")
    yield root
    torch.set_num_threads(threads)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    clear_cache()


def _folder(root: Path, experiment: str, dataset: str) -> Path:
    return root / "results" / experiment / dataset


def _run_json(folder: Path) -> dict:
    run = json.loads((folder / "run.json").read_text())
    assert run["status"] == "ok" and run["wall_time_s"] >= 0
    assert run["library_versions"]["torch"] and run["library_versions"]["captum"]
    assert all(c["sha256"] and len(c["sha256"]) == 64 for c in run["checkpoints"])
    assert set(run["files"]) == {p.name for p in folder.iterdir()}
    return run


def test_consistency_features_mnist_and_rerun_leaves_one_copy(tiny_zoo, capsys):
    argv = ["reproduce", "consistency_features", "--data", "mnist", "--n-test", "24"]
    assert main(argv) == 0
    folder = _folder(tiny_zoo, "consistency_features", "mnist")
    shift = pd.read_csv(folder / "shift.csv")
    assert list(shift.columns) == ["dataset", "method", "percent", "M", "mean", "ci_low", "ci_high", "n", "P",
                                   "method_title", "kind"]
    methods = {"gradient_shap", "integrated_gradients", "saliency"}
    controls = {"random", "random_informative", "model_free"} | {m + "_random_init" for m in methods}
    assert set(shift["method"]) == methods | controls
    assert set(shift.loc[shift["kind"] == "control", "method"]) == controls
    assert sorted(shift["M"].unique()) == [0, 39, 78, 156, 392, 627, 784]
    assert (shift["mean"] >= 0).all() and (shift.loc[shift["percent"] == 0, "mean"] == 0).all()
    assert (shift["n"] == 24).all()
    per_ex = pd.read_csv(folder / "shift_per_example.csv")
    assert len(per_ex) == 9 * 7 * 24 and (per_ex["shift"] >= 0).all()
    comparison = pd.read_csv(folder / "comparison.csv")
    assert len(comparison) == 3 * 5 and comparison["beats_random"].dtype == bool
    assert comparison["M"].max() < 784
    areas = pd.read_csv(folder / "areas.csv")
    assert len(areas) == 3 * 4 and set(areas["control"]) == {"random", "random_informative", "model_free",
                                                             "random_init"}
    assert set(areas["verdict"]) <= {"above", "below", "not resolved"}
    assert ((areas["ci_low"] <= areas["difference"]) & (areas["difference"] <= areas["ci_high"])).all()
    # the area between curves is the mean of the per-example areas (trapezoid over the share masked)
    wide = per_ex.pivot_table(index=["method", "example"], columns="percent", values="shift")
    share = np.array(sorted(per_ex["percent"].unique())) / 100
    y = wide.to_numpy()
    area = pd.Series((0.5 * (y[:, 1:] + y[:, :-1]) * np.diff(share)).sum(axis=1),
                     index=wide.index).groupby("method").mean()
    row = areas[(areas["method"] == "saliency") & (areas["control"] == "model_free")].iloc[0]
    assert row["difference"] == pytest.approx(area["saliency"] - area["model_free"], rel=1e-6, abs=1e-9)
    twin = areas[(areas["method"] == "saliency") & (areas["control"] == "random_init")].iloc[0]
    assert twin["control_area"] == pytest.approx(area["saliency_random_init"], rel=1e-6)
    run = _run_json(folder)
    assert run["parameters"]["n_test"] == 24 and run["n_runs"] == 1
    assert run["checkpoints"][0]["name"] == "mnist_dae_consistency"
    assert set(run["summary"]["area_verdicts"]["saliency"]) == {"random", "random_informative", "model_free",
                                                                "random_init"}
    assert run["cache"]["misses"] == 6 and (folder / "shift_curve.png").stat().st_size > 1000
    first = sorted(p.name for p in folder.iterdir())
    # a re-run replaces the folder: same files, no duplicated rows, no leftovers, attributions from the cache
    assert main(argv) == 0
    assert sorted(p.name for p in folder.iterdir()) == first
    assert len(pd.read_csv(folder / "shift.csv")) == len(shift)
    assert [p.name for p in folder.parent.iterdir()] == ["mnist"]
    assert json.loads((folder / "run.json").read_text())["cache"]["hits"] == 6
    assert "wrote" in capsys.readouterr().out


def test_consistency_examples_mnist_includes_if_and_tracin(tiny_zoo):
    assert main(["reproduce", "consistency_examples", "--data", "mnist", "--quick", "--n-train", "40",
                 "--n-test", "40"]) == 0
    folder = _folder(tiny_zoo, "consistency_examples", "mnist")
    sim = pd.read_csv(folder / "similarity.csv")
    assert list(sim.columns) == ["explainer", "fraction", "n", "most", "least", "prior", "most_ci_low",
                                 "most_ci_high", "most_vs_prior", "least_ci_low", "least_ci_high", "least_vs_prior",
                                 "percent", "explainer_title"]
    assert set(sim["most_vs_prior"]) <= {"above", "below", "not resolved"}
    assert (sim["most_ci_low"] <= sim["most"] + 1e-12).all() and (sim["least"] <= sim["least_ci_high"] + 1e-12).all()
    assert set(sim["explainer"]) == {"influence", "tracin", "simplex", "dknn", "cosine", "grad_dot", "grad_cos"}
    agreement = pd.read_csv(folder / "agreement.csv").set_index(["explainer_a", "explainer_b"])
    assert len(agreement) == 5 and agreement["spearman_mean"].between(-1, 1).all()
    assert agreement["top_k_overlap"].between(0, 1).all() and (agreement["top_k"] == 10).all()
    assert sim[["most", "least", "prior"]].apply(lambda c: c.between(0, 1).all()).all()
    full = sim[sim["fraction"] == 1.0]
    assert np.allclose(full["most"], full["prior"]) and np.allclose(full["least"], full["prior"])
    assert np.allclose(sim["prior"], 0.1)  # balanced subsets of 10 classes
    assert sorted(sim["n"].unique()) == [2, 4, 8, 20, 28, 40]
    run = _run_json(folder)
    assert run["parameters"]["settings"]["influence"]["recursion_depth"] == 10  # the --quick preset
    assert run["parameters"]["n_train"] == 40 and run["parameters"]["quick"] is True
    assert len(run["checkpoints"][0]["tracin_checkpoints"]) == 2
    assert run["parameters"]["settings"]["influence"]["hessian_used"] == "gauss_newton"  # auto, conv AE
    residuals = pd.read_csv(folder / "simplex_residuals.csv")
    assert (residuals["mean"] >= 0).all()


def test_consistency_examples_exact_hessian_flag(tiny_zoo):
    assert main(["reproduce", "consistency_examples", "--data", "mnist", "--quick", "--n-train", "20",
                 "--n-test", "10", "--if-hessian", "exact"]) == 0
    run = _run_json(_folder(tiny_zoo, "consistency_examples", "mnist"))
    assert run["parameters"]["settings"]["influence"]["hessian_used"] == "exact"
    assert "--if-hessian exact" in run["command"]


def test_consistency_examples_memory_budget_flag(tiny_zoo, capsys):
    args = ["reproduce", "consistency_examples", "--data", "mnist", "--quick", "--n-train", "40", "--n-test", "40"]
    assert main(args) == 0
    folder = _folder(tiny_zoo, "consistency_examples", "mnist")
    roomy = pd.read_csv(folder / "similarity.csv")
    assert _run_json(folder)["parameters"]["settings"]["influence"]["hessian_used"] == "gauss_newton"
    assert main([*args, "--max-memory-mb", "0.01"]) == 0
    run = _run_json(folder)
    # the Jacobian no longer fits, so auto takes the exact Hessian; TracIn streams to the same scores
    assert run["parameters"]["settings"]["influence"]["hessian_used"] == "exact"
    assert "--max-memory-mb 0.01" in run["command"]
    tight = pd.read_csv(folder / "similarity.csv")
    pd.testing.assert_frame_equal(tight[tight["explainer"] == "tracin"].reset_index(drop=True),
                                  roomy[roomy["explainer"] == "tracin"].reset_index(drop=True))
    assert main([*args, "--max-memory-mb", "0"]) == 2
    assert "--max-memory-mb must be a positive number" in capsys.readouterr().err


def test_consistency_on_ecg(tiny_zoo):
    assert main(["reproduce", "consistency_features", "--data", "ecg5000", "--n-test", "8"]) == 0
    shift = pd.read_csv(_folder(tiny_zoo, "consistency_features", "ecg5000") / "shift.csv")
    assert sorted(shift["M"].unique()) == [0, 7, 14, 28, 70, 112, 140] and (shift["mean"] >= 0).all()
    # LiSSA through the LSTM costs about a second per HVP on a CPU: the API runs the other four here
    from lfx_engine.experiments import run_consistency_examples, write_result

    result = run_consistency_examples("ecg5000", n_train=20, n_test=10,
                                      explainers=("tracin", "simplex", "dknn", "cosine"), simplex_steps=200)
    folder = write_result(result)
    sim = pd.read_csv(folder / "similarity.csv")
    assert folder == _folder(tiny_zoo, "consistency_examples", "ecg5000")
    assert np.allclose(sim["prior"], 0.5) and sim[["most", "least"]].apply(lambda c: c.between(0, 1).all()).all()
    assert result.params["settings"]["influence"]["minibatch_size"] == 20  # the ECG training batch


def test_pretext_correlations_and_latex(tiny_zoo):
    assert main(["reproduce", "pretext", "--data", "mnist", "--n-test", "30", "--n-train", "40"]) == 0
    folder = _folder(tiny_zoo, "pretext", "mnist")
    corr = pd.read_csv(folder / "correlations.csv")
    assert set(corr["run"]) == {1, 2} and set(corr["kind"]) == {"features", "examples"}
    assert corr["value"].between(-1, 1).all()
    diag = corr[corr["task_a"] == corr["task_b"]]
    assert np.allclose(diag["value"], 1.0)
    assert (corr.loc[corr["kind"] == "features", "n_elements"] == 30 * 784).all()
    summary = pd.read_csv(folder / "summary.csv")
    assert (summary["n_runs"] == 2).all() and summary["std"].isna().all()  # two runs: the range, no std
    assert (summary["low"] <= summary["mean"]).all() and (summary["mean"] <= summary["high"]).all()
    tex = (folder / "features_pearson.tex").read_text()
    assert "mean [range] over 2 run(s)" in tex and "\\begin{tabular}" in tex
    assert r"$\pm$" not in tex and " [" in tex and "--" in tex
    header = next(line for line in tex.splitlines() if "Reconstruction" in line)
    assert header.index("Reconstruction") < header.index("Denoising") < header.index("Inpainting") \
        < header.index("Classification")
    assert {"examples_spearman.tex", "correlations.png", "overlays.png", "top_examples.csv"} <= \
        {p.name for p in folder.iterdir()}
    assert _run_json(folder)["n_runs"] == 2
    # the noise ceiling: each task against itself across the 2 runs (one pair), from the cached arrays
    ceiling = pd.read_csv(folder / "noise_ceiling.csv")
    assert len(ceiling) == 2 * 2 * 4 and set(zip(ceiling["run_a"], ceiling["run_b"])) == {(1, 2)}
    assert ceiling["value"].between(-1, 1).all() and (ceiling["value"] < 1 - 1e-6).all()
    from lfx_engine.metrics import pooled_correlation_matrix
    from lfx_engine.experiments.pretext import abs_gradient_shap
    from lfx_engine.experiments import ModelHub
    from lfx_engine.data import load_split

    hub = ModelHub(device="cpu")
    x = load_split("mnist", "test").x[:30]
    maps = [abs_gradient_shap(None, hub, f"mnist_pretext_denoising_run{r}", "mnist", x, seed=0, batch_size=128,
                              device=torch.device("cpu")) for r in (1, 2)]
    expected = pooled_correlation_matrix(maps, "pearson")[0, 1]
    got = ceiling[(ceiling["kind"] == "features") & (ceiling["correlation"] == "pearson")
                  & (ceiling["task"] == "Denoising")]["value"].iloc[0]
    assert got == pytest.approx(expected)
    versus = pd.read_csv(folder / "against_ceiling.csv")
    assert len(versus) == 2 * 2 * 6
    assert set(versus["verdict"]) <= {"below the noise ceiling", "within the noise", "not resolved"}
    assert (versus["cross_low"] <= versus["cross_high"]).all()


def test_against_ceiling_verdicts():
    from lfx_engine.experiments.pretext import against_ceiling

    corr = pd.DataFrame([{"kind": "features", "correlation": "pearson", "task_a": "A", "task_b": "B", "run": r,
                          "value": v} for r, v in ((1, 0.30), (2, 0.35))])
    high = pd.DataFrame([{"kind": "features", "correlation": "pearson", "task": t, "run_a": 1, "run_b": 2,
                          "value": v} for t, v in (("A", 0.9), ("B", 0.8))])
    assert against_ceiling(corr, high)["verdict"].iloc[0] == "below the noise ceiling"
    low = high.assign(value=[0.32, 0.2])
    assert against_ceiling(corr, low)["verdict"].iloc[0] == "not resolved"
    assert against_ceiling(corr, high.assign(value=[0.1, 0.2]))["verdict"].iloc[0] == "within the noise"
    assert against_ceiling(corr, high.iloc[:0])["verdict"].iloc[0] == "not resolved"


def test_disvae_metrics(tiny_zoo):
    # the tiny zoo's VAEs are barely trained: flagged by the quality floors and left out of the summary
    assert main(["reproduce", "disvae", "--data", "mnist", "--n-test", "12"]) == 0
    folder = _folder(tiny_zoo, "disvae", "mnist")
    metrics = pd.read_csv(folder / "metrics.csv")
    assert len(metrics) == 6 and (metrics["verdict"] != "ok").all()
    assert {"active_units", "rec_ratio", "kl"} <= set(metrics.columns)
    assert pd.read_csv(folder / "comparison.csv").empty
    assert any("fail the quality floors" in n for n in _run_json(folder)["notes"])
    assert _run_json(folder)["summary"]["quality"]["models_in_summary"] == 0
    assert main(["reproduce", "disvae", "--data", "mnist", "--n-test", "12", "--include-unfit"]) == 0
    metrics = pd.read_csv(folder / "metrics.csv")
    assert len(metrics) == 6 and set(metrics["loss"]) == {"betavae", "btcvae"}
    for col in ("pearson", "spearman", "cosine"):
        assert metrics[col].dropna().between(-1, 1).all()
    assert metrics["entropy"].between(0, math.log(3) + 1e-9).all()
    assert metrics["salient_units"].between(0, 3).all()
    assert (metrics["d"] == 3).all() and (metrics["n_test"] == 12).all()
    comparison = pd.read_csv(folder / "comparison.csv")
    # the null model: 5 randomly initialised copies of the architecture, beside every metric
    null = pd.read_csv(folder / "null.csv")
    assert list(null["null_seed"]) == [0, 1, 2, 3, 4] and null["pearson"].between(-1, 1).all()
    assert null["pearson"].nunique() == 5  # distinct initialisations, not one model five times
    assert comparison["null_mean"].notna().all()
    pearson_null = comparison.loc[comparison["metric"] == "pearson", "null_mean"].iloc[0]
    assert pearson_null == pytest.approx(null["pearson"].mean())
    template = metrics.loc[metrics["model"] == null["template"].iloc[0], "pearson"].iloc[0]
    assert not np.isclose(template, null["pearson"]).any()  # the trained weights are not what is measured
    ref = comparison[(comparison["metric"] == "pearson") & (comparison["loss"] == "betavae")
                     & (comparison["beta"] == 1)]
    assert float(ref["reference_mean"].iloc[0]) == pytest.approx(0.241)
    assert (folder / "boxplots.png").is_file() and (folder / "maps_mnist_betavae_b1_run1.png").is_file()


def test_lucid_renders_are_finite_images(tiny_zoo):
    assert main(["reproduce", "lucid", "--data", "mnist", "--steps", "16"]) == 0
    folder = _folder(tiny_zoo, "lucid", "mnist")
    with np.load(folder / "arrays.npz") as arrays:
        assert sorted(arrays.files) == ["renders_b1", "renders_b10", "renders_b5"]
        for key in arrays.files:
            img = arrays[key]
            assert img.shape == (3, 32, 32, 1) and np.isfinite(img).all()
            assert img.min() >= 0 and img.max() <= 1
    table = pd.read_csv(folder / "renders.csv")
    assert len(table) == 9 and (table["steps"] == 16).all() and np.isfinite(table["activation"]).all()
    run = _run_json(folder)
    assert run["parameters"]["render_vis"]["fixed_image_size"] == 32 and run["parameters"]["steps"] == 16


def test_lucid_render_leaves_model_untouched(tiny_zoo):
    from lfx_engine.experiments import ModelHub, render_unit

    model = ModelHub().load("mnist_betavae_b1_run1")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    img = render_unit(model.encoder, 0, channels=1, size=32, steps=4, leaky_relu=True)
    assert img.shape == (32, 32, 1)
    assert not any(m._forward_hooks for m in model.modules())
    assert all(isinstance(m, torch.nn.ReLU) for m in model.encoder.modules() if "ReLU" in type(m).__name__)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_encoder_vs_full(tiny_zoo):
    assert main(["reproduce", "encoder_vs_full", "--data", "mnist", "--n-test", "10"]) == 0
    folder = _folder(tiny_zoo, "encoder_vs_full", "mnist")
    per_image = pd.read_csv(folder / "per_image.csv")
    assert len(per_image) == 2 * 3 * 10 and per_image["r"].dropna().between(-1, 1).all()
    summary = pd.read_csv(folder / "summary.csv")
    assert set(summary["method"]) == {"gradient_shap", "integrated_gradients", "saliency"}
    assert (summary["n_models"] == 2).all() and summary["ci95"].notna().all()
    assert summary["reference_mean"].notna().all()
    # the diagnostic variant explains the classifier through softmax probabilities: different maps
    assert main(["reproduce", "encoder_vs_full", "--data", "mnist", "--n-test", "10", "--full-output",
                 "softmax"]) == 0
    softmax_folder = _folder(tiny_zoo, "encoder_vs_full_softmax", "mnist")
    run = _run_json(softmax_folder)
    assert run["parameters"]["full_output"] == "softmax" and "--full-output softmax" in run["command"]
    assert len(pd.read_csv(folder / "per_image.csv")) == len(per_image)  # METHOD's run is left alone
    softmax_image = pd.read_csv(softmax_folder / "per_image.csv")
    assert not np.allclose(softmax_image["r"].fillna(0), per_image["r"].fillna(0))


def test_encoder_vs_full_factorial(tiny_zoo):
    assert main(["reproduce", "encoder_vs_full", "--data", "mnist", "--n-test", "10", "--factorial"]) == 0
    folder = _folder(tiny_zoo, "encoder_vs_full_factorial", "mnist")
    run = _run_json(folder)
    assert "--factorial" in run["command"] and run["parameters"]["design"] == "factorial"
    cells = pd.read_csv(folder / "cells.csv")
    # 2 outputs x 2 BatchNorm modes x 2 pairings, 3 methods each, over our 2 classifiers
    assert len(cells) == 8 * 3 and (cells["n_models"] == 2).all() and cells["reference_mean"].notna().all()
    assert (cells["set"] == "zoo").all()
    key = ["output", "batch_norm", "method"]
    for method in ("integrated_gradients", "saliency"):  # pairing cannot change these: the same numbers
        g = cells[cells["method"] == method].pivot_table(index=key[:2], columns="pairing", values="mean")
        assert np.allclose(g["paired"], g["tiled"])
    gs = cells[cells["method"] == "gradient_shap"].pivot_table(index=key[:2], columns="pairing", values="mean")
    assert not np.allclose(gs["paired"], gs["tiled"])  # GradientShap's pairing is computed, not copied
    combos = pd.read_csv(folder / "combinations.csv")
    assert len(combos) == 8 and combos["rms_difference"].notna().all() and combos["rank"].min() == 1
    closest = combos.loc[combos["rms_difference"].idxmin(), "setting"]
    assert run["summary"]["per_set"]["zoo"]["closest"] == closest
    assert (folder / "factorial_zoo.png").stat().st_size > 0
    with pytest.raises(ParameterError, match="factorial"):
        from lfx_engine.experiments import run_encoder_vs_full

        run_encoder_vs_full("mnist", study_classifiers="both", n_test=4)


def test_unavailable_dataset_is_skipped_with_reason(tiny_zoo, capsys):
    assert main(["reproduce", "consistency_features", "--data", "cifar100"]) == 0
    out = capsys.readouterr().out
    assert "skipped consistency_features on cifar100" in out and "cifar100" in out
    folder = _folder(tiny_zoo, "consistency_features", "cifar100")
    assert [p.name for p in folder.iterdir()] == ["skipped.json"]
    record = json.loads((folder / "skipped.json").read_text())
    assert record["status"] == "skipped" and "fetch" in record["reason"]
    assert main(["reproduce", "all", "--data", "cifar100"]) == 0
    assert "0 done" in capsys.readouterr().out


def test_missing_checkpoints_are_skipped(tiny_zoo, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("LFX_CHECKPOINT_DIR", str(tmp_path / "empty"))
    assert main(["reproduce", "consistency_features", "--data", "mnist", "--results", str(tmp_path / "r")]) == 0
    record = json.loads((tmp_path / "r" / "consistency_features" / "mnist" / "skipped.json").read_text())
    assert "python -m lfx_engine train mnist_dae_consistency" in record["reason"]
    from lfx_engine.experiments import ExperimentSkipped, run_disvae, run_pretext

    with pytest.raises(ExperimentSkipped, match="all four pretext models"):
        run_pretext("mnist")
    with pytest.raises(ExperimentSkipped, match="no trained VAE"):
        run_disvae("mnist")


@pytest.mark.parametrize("argv,message", [
    (["reproduce", "pretext", "--data", "ecg5000"], "pretext runs on"),
    (["reproduce", "disvae"], "--data is required"),
    (["reproduce", "consistency_features", "--data", "mnist", "--n-test", "0"], "--n-test must be"),
])
def test_bad_requests_are_refused(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_figures_of_a_run_are_not_pyplot_windows(tmp_path) -> None:
    """A run builds one figure per model before saving them: they must not pile up as pyplot windows (pyplot
    warns past 20, as disvae on 24 dSprites models did), and each still saves as a PNG."""
    import warnings

    import matplotlib.pyplot as plt

    from lfx_engine.experiments.common import new_figure, save_figure

    before = plt.get_fignums()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pyplot's "More than 20 figures" is a RuntimeWarning
        figures = [new_figure(2, 3)[0] for _ in range(25)]
    assert plt.get_fignums() == before
    save_figure(figures[0], tmp_path / "one.png")
    assert (tmp_path / "one.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
