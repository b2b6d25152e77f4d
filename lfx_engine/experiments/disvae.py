"""disvae (METHOD.md §7.4): are VAE units sensitive to different features?

For every trained β-VAE / β-TC-VAE of a dataset, the per-unit saliency
``S_j = |μ_j · GradientShap_j|`` (signed channel mean before the weighting,
zero baseline) is streamed over the test set in chunks into the five
disentanglement metrics of §4 (pooled Pearson, Spearman, cosine, entropy,
salient units), so ``N×d×H×W`` is never materialised. One row per model; box
plots of each metric vs β, and per-model heat maps of 20 test images (10 for
dSprites). Reference values of the reproduction study (§8) are listed next to ours.
"""
from __future__ import annotations

import functools
import math
import time
from typing import Any, Callable, Sequence, cast

import altair as alt
import numpy as np
import pandas as pd
import torch
from torch import nn

from lfx_engine.data import get_spec, load_split, resize_to_32
from lfx_engine.errors import ParameterError
from lfx_engine.experiments.common import (
    ExperimentResult,
    ExperimentSkipped,
    LogFn,
    ModelHub,
    check_model_source,
    study_hint,
    ProgressFn,
    Reporter,
    cached_arrays,
    check_positive_int,
    data_fingerprint,
    image_for_display,
    new_figure,
    require_dataset,
    take_first,
    to_device,
)
from lfx_engine.feature_importance import randomised_copy, unit_attribution
from lfx_engine.metrics import METRICS, DisentanglementAccumulator
from lfx_engine.metrics.correlation import MIN_RUNS_FOR_STD
from lfx_engine.training.quality import MEAN_IMAGE_N, measure, train_mean_image

#: Verdicts of :func:`lfx_engine.metrics.vae_quality.vae_quality`, stored as codes in the cache.
VERDICTS = ("ok", "undertrained", "collapsed", "dead")

EXPERIMENT = "disvae"
LOSS_TITLES = {"betavae": "β-VAE", "btcvae": "β-TC-VAE"}
SPEARMAN_MAX_PIXELS = 200_000
#: Smaller run for a CPU (``--quick``): 500 test images, heat maps of run 1 only.
QUICK: dict[str, Any] = {"n_test": 500, "maps_for_runs": (1,)}

#: Reference values of the reproduction study's result files (METHOD §8): metric -> dataset -> (loss, β) -> (mean, std).
REFERENCE: dict[str, dict[str, dict[tuple[str, int], tuple[float, float | None]]]] = {
    "pearson": {
        "mnist": {("betavae", 1): (0.241, 0.031), ("betavae", 5): (0.254, 0.030), ("betavae", 10): (0.240, 0.051),
                  ("btcvae", 1): (0.228, 0.026), ("btcvae", 5): (0.241, 0.031), ("btcvae", 10): (0.227, 0.050)},
        "dsprites": {("betavae", 1): (0.239, 0.059), ("betavae", 5): (0.233, 0.062), ("betavae", 10): (0.289, 0.076),
                     ("btcvae", 1): (0.217, 0.054), ("btcvae", 5): (0.297, 0.032), ("btcvae", 10): (0.369, 0.065)},
        "cifar100": {("betavae", 1): (0.189, 0.020), ("betavae", 5): (0.252, 0.098), ("betavae", 10): (0.249, 0.015),
                     ("btcvae", 1): (0.198, 0.012), ("btcvae", 5): (0.281, 0.082), ("btcvae", 10): (0.228, 0.009)},
    },
    "spearman": {
        "mnist": {(loss, b): (0.983, None) for loss in LOSS_TITLES for b in (1, 5, 10)},
        "cifar100": {("betavae", 1): (0.226, None), ("betavae", 5): (0.274, None), ("betavae", 10): (0.279, None),
                     ("btcvae", 1): (0.230, None), ("btcvae", 5): (0.301, None), ("btcvae", 10): (0.262, None)},
    },
    "cosine": {
        "mnist": {("betavae", 1): (0.614, None), ("betavae", 5): (0.642, None), ("betavae", 10): (0.656, None),
                  ("btcvae", 1): (0.610, None), ("btcvae", 5): (0.621, None), ("btcvae", 10): (0.662, None)},
    },
    "entropy": {
        "mnist": {("betavae", 1): (0.699, None), ("betavae", 5): (0.697, None), ("betavae", 10): (0.557, None),
                  ("btcvae", 1): (0.696, None), ("btcvae", 5): (0.692, None), ("btcvae", 10): (0.404, None)},
        "cifar100": {("betavae", 1): (1.867, None), ("betavae", 5): (1.378, None), ("betavae", 10): (0.964, None),
                     ("btcvae", 1): (1.740, None), ("btcvae", 5): (1.388, None), ("btcvae", 10): (1.098, None)},
    },
    "salient_units": {
        "mnist": {("betavae", 1): (1.261, None), ("betavae", 5): (1.264, None), ("betavae", 10): (1.238, None),
                  ("btcvae", 1): (1.259, None), ("btcvae", 5): (1.259, None), ("btcvae", 10): (1.205, None)},
        "cifar100": {("betavae", 1): (5.04, None), ("betavae", 5): (3.86, None), ("betavae", 10): (2.92, None),
                     ("btcvae", 1): (4.79, None), ("btcvae", 5): (3.80, None), ("btcvae", 10): (3.22, None)},
    },
}


def test_inputs(dataset: str, n_test: int | None) -> torch.Tensor:
    """Test images the VAEs take (MNIST resized to 32×32)."""
    x = take_first(load_split(dataset, "test").x, n_test)
    return resize_to_32(x) if dataset == "mnist" else x


def unit_metrics_parts(name: str, n: int, identity: dict[str, Any], *, seed: int, chunk: int, n_maps: int,
                       spearman_max_pixels: int, null_seed: int | None = None) -> dict[str, Any]:
    """The cache key of :func:`unit_metrics` (also used to ask whether a result is on disk)."""
    return {"experiment": EXPERIMENT, "model": name, "sha256": identity["sha256"], "data": identity["data"],
            "n": int(n), "method": "gradient_shap", "seed": seed, "chunk": chunk, "n_maps": n_maps,
            "spearman_max_pixels": spearman_max_pixels, "baseline": "zeros",
            **({"null_seed": int(null_seed)} if null_seed is not None else {})}


def unit_metrics(result: ExperimentResult | None, hub: ModelHub, name: str, dataset: str, x: torch.Tensor, *,
                 seed: int, chunk: int, n_maps: int, spearman_max_pixels: int, batch_size: int,
                 device: torch.device, use_cache: bool = True,
                 identity: dict[str, Any] | None = None, null_seed: int | None = None) -> dict[str, np.ndarray]:
    """Streamed disentanglement metrics of one VAE (+ the first ``n_maps`` unit maps); disk-cached.

    Chunk ``k`` of ``chunk`` images uses GradientShap seed ``seed + k``, so the
    result depends on (seed, chunk), both in the cache key. ``identity`` gives
    the weights' ``sha256`` and the ``data`` fingerprint of a model that is not
    in the zoo (a user's VAE); by default both come from the hub and the data folder.
    ``null_seed``: measure the null model instead, the same architecture with
    its weights re-initialised from that seed (:func:`randomised_copy`).
    """
    identity = identity or {"sha256": hub.record(name)["sha256"], "data": data_fingerprint(dataset)}
    parts = unit_metrics_parts(name, len(x), identity, seed=seed, chunk=chunk, n_maps=n_maps,
                               spearman_max_pixels=spearman_max_pixels, null_seed=null_seed)

    def compute() -> dict[str, np.ndarray]:
        encoder = cast(nn.Module, hub.load(name).encoder)
        if null_seed is not None:
            encoder = randomised_copy(encoder, null_seed)
        acc = DisentanglementAccumulator(spearman_max_pixels=spearman_max_pixels, seed=seed)
        maps: list[np.ndarray] = []
        for k, a in enumerate(range(0, len(x), chunk)):
            s = unit_attribution(encoder, x[a:a + chunk], "gradient_shap", baselines=None, batch_size=batch_size,
                                 device=device, seed=seed + k)
            acc.update(s)
            if sum(len(m) for m in maps) < n_maps:
                maps.append(s[: n_maps - sum(len(m) for m in maps)].numpy())
            del s
        values = acc.compute()
        return {"metrics": np.array([values[m] for m in METRICS], dtype=np.float64),
                "pearson_matrix": acc.pearson_matrix(), "cosine_matrix": acc.cosine_matrix(),
                "spearman_exact": np.array(acc.spearman_exact),
                "maps": (np.concatenate(maps) if maps else np.zeros((0,), dtype=np.float32)).astype(np.float32)}

    return cached_arrays(result, "exp_disvae_metrics", parts, compute, use_cache)


def model_quality(result: ExperimentResult | None, hub: ModelHub, name: str, dataset: str, x: torch.Tensor,
                  mean_image: Callable[[], torch.Tensor], *, device: torch.device,
                  use_cache: bool = True) -> dict[str, Any]:
    """Active units, reconstruction ratio, KL and verdict of one VAE on ``x``; disk-cached.

    ``mean_image`` is called only on a cache miss (it reads the training split).
    """
    parts = {"experiment": EXPERIMENT, "what": "quality", "model": name, "sha256": hub.record(name)["sha256"],
             "data": data_fingerprint(dataset), "n": int(len(x)), "mean_image_n": MEAN_IMAGE_N}

    def compute() -> dict[str, np.ndarray]:
        q = measure(hub.load(name), x, mean_image(), device)
        return {"active_units": np.array(q["active_units"]), "rec_ratio": np.array(q["rec_ratio"]),
                "kl": np.array(q["kl"]), "unit_variance": np.array(q["unit_variance"]),
                "verdict": np.array(VERDICTS.index(q["verdict"]))}

    arrays = cached_arrays(result, "exp_disvae_quality", parts, compute, use_cache)
    return {"active_units": int(arrays["active_units"]), "rec_ratio": float(arrays["rec_ratio"]),
            "kl": float(arrays["kl"]), "verdict": VERDICTS[int(arrays["verdict"])],
            "unit_variance": [float(v) for v in arrays["unit_variance"]]}


def run_disvae(
    dataset: str,
    *,
    models: ModelHub | None = None,
    model_source: str = "zoo",
    n_test: int | None = None,
    losses: Sequence[str] = ("betavae", "btcvae"),
    seed: int = 0,
    chunk: int = 500,
    n_maps: int | None = None,
    maps_for_runs: Sequence[int] | None = None,
    spearman_max_pixels: int = SPEARMAN_MAX_PIXELS,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    use_cache: bool = True,
    include_unfit: bool = False,
    n_null: int = 5,
    progress: ProgressFn | None = None,
    log: LogFn | None = None,
) -> ExperimentResult:
    """The five disentanglement metrics of every trained VAE of ``dataset`` (one row per model).

    Every model is first checked against the quality floors of
    :mod:`lfx_engine.metrics.vae_quality` (≥ 2 active units, reconstruction
    clearly better than the mean image, not dead). Its row keeps the verdict;
    models that fail are left out of ``summary`` and ``comparison`` unless
    ``include_unfit`` (then they are flagged, never silently averaged in).

    ``n_test``: first n test images (default all). ``n_maps``: images in the
    per-model heat-map figures (20; 10 for dSprites). ``maps_for_runs``: runs
    whose models get a heat-map figure (default all). ``n_null``: randomly
    initialised copies of the architecture measured the same way, the null model
    every metric is read against (0 turns it off). Tables: ``metrics``,
    ``summary`` (mean, std over runs per loss × β, with the null model's mean
    and range), ``comparison`` (with §8), ``null`` (one row per null model).
    """
    start = time.perf_counter()
    require_dataset(EXPERIMENT, dataset)
    check_positive_int("chunk", chunk)
    hub = models or ModelHub(device=device)
    dev = to_device(device) if device is not None else hub.device
    records = [r for r in hub.find(dataset, experiment="disvae", source=check_model_source(model_source))
               if r.get("task") in losses]
    if not records and model_source == "study":
        raise ExperimentSkipped(EXPERIMENT, dataset, f"no study VAE of {dataset}; {study_hint(dataset)}")
    if not records:
        raise ExperimentSkipped(EXPERIMENT, dataset, f"no trained VAE of {dataset} in {hub.root}; train with "
                                f"`python -m lfx_engine train '{dataset}_betavae_*'` and "
                                f"`python -m lfx_engine train '{dataset}_btcvae_*'`")
    n_maps = n_maps if n_maps is not None else (10 if dataset == "dsprites" else 20)
    result = ExperimentResult(EXPERIMENT, dataset)
    spec = get_spec(dataset)
    x = test_inputs(dataset, n_test)
    if not isinstance(n_null, int) or n_null < 0:
        raise ParameterError(f"n_null must be a non-negative integer, got {n_null!r}")
    report = Reporter(progress, log, total=len(records) + n_null)
    rows = []
    mean_image = functools.cache(lambda: train_mean_image(dataset, resize32=dataset == "mnist"))
    for i, rec in enumerate(records):
        name = rec["name"]
        report.log(f"{EXPERIMENT}/{dataset}: {name} on {len(x)} images ({i + 1}/{len(records)})")
        quality = model_quality(result, hub, name, dataset, x, mean_image, device=dev, use_cache=use_cache)
        arrays = unit_metrics(result, hub, name, dataset, x, seed=seed, chunk=chunk, n_maps=n_maps,
                              spearman_max_pixels=spearman_max_pixels, batch_size=batch_size, device=dev,
                              use_cache=use_cache)
        d = int(rec.get("latent_dim") or arrays["maps"].shape[1])
        row = {"model": name, "loss": rec["task"], "loss_title": LOSS_TITLES.get(rec["task"], rec["task"]),
               "beta": float(rec["beta"]), "run": int(rec["run"]), "d": d, "n_test": len(x),
               **{m: float(v) for m, v in zip(METRICS, arrays["metrics"])},
               "spearman_exact": bool(arrays["spearman_exact"]), "max_entropy": math.log(d),
               "active_units": quality["active_units"], "rec_ratio": quality["rec_ratio"], "kl": quality["kl"],
               "verdict": quality["verdict"], "source": rec.get("source", "zoo")}
        rows.append(row)
        if maps_for_runs is None or int(rec["run"]) in set(maps_for_runs):
            result.figures[f"maps_{name}"] = _maps_figure(x, arrays["maps"], name, spec.title)
        result.checkpoints.append(hub.describe(name))
        report.step()

    null_rows = []
    template = records[0]["name"]
    for k in range(n_null):
        report.log(f"{EXPERIMENT}/{dataset}: null model {k + 1}/{n_null} (the architecture of {template}, "
                   f"randomly initialised)")
        arrays = unit_metrics(result, hub, template, dataset, x, seed=seed, chunk=chunk, n_maps=0,
                              spearman_max_pixels=spearman_max_pixels, batch_size=batch_size, device=dev,
                              use_cache=use_cache, null_seed=k)
        null_rows.append({"template": template, "null_seed": k, "n_test": len(x),
                          **{m: float(v) for m, v in zip(METRICS, arrays["metrics"])}})
        report.step()
    null = pd.DataFrame(null_rows, columns=["template", "null_seed", "n_test", *METRICS])
    metrics = pd.DataFrame(rows)
    unfit = metrics[metrics["verdict"] != "ok"]
    used = metrics if include_unfit else metrics[metrics["verdict"] == "ok"]
    if len(unfit):
        counts = unfit["verdict"].value_counts().to_dict()
        result.warnings.append(
            f"{len(unfit)} of {len(metrics)} VAE(s) fail the quality floors (≥ 2 units with Var μ_j > 0.01, "
            f"reconstruction < 0.9× the mean image's): " + ", ".join(f"{n} {v}" for v, n in counts.items())
            + ("; they are flagged and included in the summary (include_unfit)" if include_unfit
               else "; they are left out of the summary and the comparison"))
    if used.empty:
        result.warnings.append("no VAE passes the quality floors: no disentanglement verdict can be drawn")
    long = used.melt(id_vars=["model", "loss", "loss_title", "beta", "run"], value_vars=list(METRICS),
                        var_name="metric", value_name="value")
    summary = (long.groupby(["loss", "beta", "metric"], sort=True)["value"]
               .agg(mean="mean", std=lambda v: v.std(ddof=1) if len(v) >= MIN_RUNS_FOR_STD else np.nan, low="min", high="max",
                    n_runs="count")
               .reset_index())
    if len(null):
        null_stats = pd.DataFrame({"metric": list(METRICS),
                                   "null_mean": [float(null[m].mean()) for m in METRICS],
                                   "null_low": [float(null[m].min()) for m in METRICS],
                                   "null_high": [float(null[m].max()) for m in METRICS]})
        summary = summary.merge(null_stats, on="metric", how="left")
    comparison = _comparison(summary, dataset)
    trends = trend_tests(long)
    result.tables = {"metrics": metrics, "summary": summary, "comparison": comparison, "trends": trends,
                     "null": null}
    result.figures = {"boxplots": _boxplots(long, spec.title), **result.figures}
    result.n_runs = int(metrics.groupby(["loss", "beta"])["run"].nunique().max())
    pearson = summary[summary["metric"] == "pearson"]
    result.summary = {
        "question": "does a higher β make the unit maps less correlated (pooled Pearson)?",
        "quality": {"verdicts": metrics["verdict"].value_counts().to_dict(), "included_unfit": include_unfit,
                    "models_in_summary": int(len(used))},
        "pearson_by_loss_beta": {f"{r.loss}_b{r.beta:g}": [r.mean, r.std] for r in pearson.itertuples()},
        "null_model": {m: {"mean": float(null[m].mean()), "low": float(null[m].min()), "high": float(null[m].max())}
                       for m in METRICS} if len(null) else None,
        "trend_tests": {f"{r.loss}/{r.metric}": {"spearman_rho": r.rho, "p": r.p, "n_models": r.n_models,
                                                 "verdict": r.verdict} for r in trends.itertuples()},
        "pearson_trend": {loss: _trend(g) for loss, g in pearson.groupby("loss")},
        "entropy_trend": {loss: _trend(g) for loss, g in summary[summary["metric"] == "entropy"].groupby("loss")},
        "salient_units_trend": {loss: _trend(g) for loss, g in
                                summary[summary["metric"] == "salient_units"].groupby("loss")},
    }
    result.params = {"models": [r["name"] for r in records], "n_test": len(x),
                     "n_test_available": len(load_split(dataset, "test")),
                     "input": "MNIST bilinearly resized to 32×32" if dataset == "mnist" else "test images as stored",
                     "saliency": "|μ_j · mean_c GradientShap_j| (n_samples=5, zero baseline, target=j)",
                     "streaming": f"chunks of {chunk} images into DisentanglementAccumulator (float64 running sums)",
                     "spearman_max_pixels": spearman_max_pixels, "n_maps": n_maps, "device": str(dev),
                     "null_model": {"n": n_null, "template": template,
                                    "what": "the template's architecture with every layer re-initialised by its own "
                                            "initialiser (seeds 0..n−1), measured like the trained VAEs"}}
    result.seeds = {"gradient_shap_seed": f"{seed} + chunk index", "spearman_sketch_seed": seed,
                    "null_model_seeds": list(range(n_null))}
    if not metrics["spearman_exact"].all():
        result.notes.append(f"Spearman on a deterministic sample of {spearman_max_pixels:,} (image, pixel) columns "
                            f"(bottom-k hash sketch); Pearson, cosine, entropy, salient units are exact")
    if result.n_runs < 5:
        result.notes.append(f"at most {result.n_runs} run(s) per (loss, β) (full protocol: 5)")
    result.wall_time_s = time.perf_counter() - start
    return result


#: Significance level of the trend tests.
TREND_ALPHA = 0.05


def trend_tests(long: pd.DataFrame) -> pd.DataFrame:
    """Spearman rank correlation of each metric with β over the individual models, per loss.

    A trend is claimed only when p < :data:`TREND_ALPHA` (two-sided); otherwise
    the verdict is ``not resolved`` (no trend shown at this confidence).
    """
    from scipy import stats

    rows = []
    for (loss, metric), g in long.groupby(["loss", "metric"], sort=True):
        g = g.dropna(subset=["value"])
        if g["beta"].nunique() < 2 or len(g) < 3:
            rows.append({"loss": loss, "metric": metric, "rho": np.nan, "p": np.nan, "n_models": len(g),
                         "verdict": "not resolved (too few models)"})
            continue
        with np.errstate(invalid="ignore"):
            test = stats.spearmanr(g["beta"], g["value"])
        rho, p = float(test.statistic), float(test.pvalue)
        verdict = ("rising" if rho > 0 else "falling") if np.isfinite(p) and p < TREND_ALPHA else "not resolved"
        rows.append({"loss": loss, "metric": metric, "rho": rho, "p": p, "n_models": len(g), "verdict": verdict})
    return pd.DataFrame(rows, columns=["loss", "metric", "rho", "p", "n_models", "verdict"])


def _trend(group: pd.DataFrame) -> str:
    """'rising', 'falling' or 'flat/mixed' across increasing β (means)."""
    means = group.sort_values("beta")["mean"].to_numpy()
    if len(means) < 2:
        return "single β"
    diffs = np.diff(means)
    if (diffs > 0).all():
        return "rising"
    if (diffs < 0).all():
        return "falling"
    return "flat/mixed"


def _comparison(summary: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Our mean ± std next to the reproduction study's values where §8 lists them."""
    rows = []
    for r in summary.itertuples():
        key = (r.loss, int(r.beta)) if float(r.beta).is_integer() else None
        ref = REFERENCE.get(r.metric, {}).get(dataset, {}).get(key) if key is not None else None
        rows.append({"loss": r.loss, "beta": r.beta, "metric": r.metric, "mean": r.mean, "std": r.std,
                     "n_runs": r.n_runs, "reference_mean": ref[0] if ref else np.nan,
                     "reference_std": ref[1] if ref and ref[1] is not None else np.nan,
                     "null_mean": getattr(r, "null_mean", np.nan), "null_low": getattr(r, "null_low", np.nan),
                     "null_high": getattr(r, "null_high", np.nan)})
    return pd.DataFrame(rows, columns=["loss", "beta", "metric", "mean", "std", "n_runs", "reference_mean",
                                       "reference_std", "null_mean", "null_low", "null_high"])


def _boxplots(long: pd.DataFrame, title: str) -> alt.HConcatChart:
    """One box plot per metric: value vs β, colour = loss."""
    charts = []
    for metric in METRICS:
        part = long[long["metric"] == metric]
        charts.append(alt.Chart(part).mark_boxplot(extent="min-max", size=14).encode(
            x=alt.X("beta:O", title="β"),
            xOffset=alt.XOffset("loss_title:N"),
            y=alt.Y("value:Q", title=metric, scale=alt.Scale(zero=False)),
            color=alt.Color("loss_title:N", title="loss"),
        ).properties(width=150, height=200, title=metric))
    return alt.hconcat(*charts).properties(title=f"disvae: {title}")


def _maps_figure(x: torch.Tensor, maps: np.ndarray, name: str, title: str) -> Any:
    """Rows = test images; columns = the image and one heat map per unit (shared colour scale per row)."""
    n, d = maps.shape[:2]
    fig, axes = new_figure(n, d + 1, cell=1.0)
    for i in range(n):
        axes[i, 0].imshow(image_for_display(x[i]), cmap="gray", vmin=0, vmax=1)
        vmax = float(maps[i].max()) or 1.0
        for j in range(d):
            axes[i, j + 1].imshow(maps[i, j], cmap="viridis", vmin=0, vmax=vmax)
            if i == 0:
                axes[0, j + 1].set_title(f"unit {j}", fontsize=7)
    axes[0, 0].set_title("input", fontsize=7)
    fig.suptitle(f"{title} {name}: |μ_j · GradientShap_j|", fontsize=9)
    return fig
