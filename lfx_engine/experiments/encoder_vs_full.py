"""encoder_vs_full (METHOD.md §7.6, the reproduction study's extension): does explaining the encoder
differ from explaining the whole classifier?

For every pretext-run classifier (eval mode) and each of GradientShap,
Integrated Gradients and Saliency, label-free attributions (zero baseline) of
the **encoder** (latent) and of the **full classifier** (logits, through the
same auxiliary function ``⟨logits(x), logits(x̃)⟩``) are compared per test
image: ``|·|`` divided by the model array's global std, Pearson over the pixels
whose input is non-zero. Per model the mean over images; over models the mean
± 1.96·SEM. Also reported, because aggregation matters (§8): pooled Pearson over
all pixels, Pearson of the dataset-averaged maps and the mean of r².
"""
from __future__ import annotations

import time
from typing import Any, Sequence, cast

import altair as alt
import numpy as np
import pandas as pd
import torch
from torch import nn

from lfx_engine.data import get_spec, load_split
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
    data_fingerprint,
    require_dataset,
    require_models,
    take_first,
    to_device,
)
from lfx_engine.feature_importance import encoder_vs_full_attribution
from lfx_engine.feature_importance.earlier_code import BATCH_NORM_MODES, PAIRINGS, earlier_code_attribution
from lfx_engine.metrics import masked_pixel_correlation

EXPERIMENT = "encoder_vs_full"
METHODS = ("gradient_shap", "integrated_gradients", "saliency")
TITLES = {"gradient_shap": "GradientShap", "integrated_gradients": "Integrated Gradients", "saliency": "Saliency"}
#: Reproduction-study values for MNIST (METHOD §8): method -> (per-run means, mean, 1.96·SEM).
REFERENCE = {
    "integrated_gradients": ((0.391, 0.474, 0.459, 0.425, 0.420), 0.434, 0.029),
    "gradient_shap": ((0.350, 0.326, 0.328, 0.361, 0.323), 0.337, 0.015),
    "saliency": ((0.215, 0.135, 0.162, 0.163, 0.207), 0.176, 0.030),
}
#: Smaller run for a CPU (``--quick``): the first 1000 test images.
QUICK: dict[str, Any] = {"n_test": 1000}
#: The designs ``run_encoder_vs_full`` runs: METHOD's comparison, or the factorial search for the study's numbers.
DESIGNS = ("method", "factorial")
#: Methods whose enlarged batch is whole-batch blocks (IG) or none (Saliency): tiling f(x) pairs them correctly,
#: so the pairing factor only applies to GradientShap (``tests`` check the identity).
PAIRING_SENSITIVE = ("gradient_shap",)


#: What the full model's auxiliary function compares: METHOD's logits, or softmax probabilities (the earlier
#: code's classifier ended in a Softmax, so its "full model" maps went through it).
FULL_OUTPUTS = ("logits", "softmax")


class _SoftmaxOutput(nn.Module):
    """The classifier followed by a softmax over classes (keeps ``encoder`` reachable)."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier
        self.encoder = classifier.encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.classifier(x), dim=1)


#: The study's two sets of MNIST classifiers: its repository at HEAD, and the files as first committed
#: (2023-01-19, trained with a final Softmax) that its encoder-vs-full figure was made from.
STUDY_CLASSIFIERS = ("head", "2023-01-19")
#: ``study_classifiers`` of the factorial design may also be both sets.
STUDY_CLASSIFIER_CHOICES = (*STUDY_CLASSIFIERS, "both")


def classifier_names(hub: ModelHub, dataset: str, model_source: str = "zoo",
                     study_classifiers: str = "head") -> list[str]:
    """Trained classifiers of ``dataset``, by run: our pretext ones, or one of the study's two sets."""
    if model_source != "study":
        return [r["name"] for r in hub.find(dataset, experiment="pretext", task="classification")]
    if study_classifiers not in STUDY_CLASSIFIERS:
        raise ParameterError(f"study_classifiers must be one of {', '.join(STUDY_CLASSIFIERS)}, "
                             f"got {study_classifiers!r}")
    variant = "" if study_classifiers == "head" else study_classifiers
    return [r["name"] for r in hub.find(dataset, experiment="encoder_vs_full", source="study")
            if (r.get("study") or {}).get("variant", "") == variant]


def pair_statistics(result: ExperimentResult | None, hub: ModelHub, name: str, dataset: str, x: torch.Tensor,
                    method: str, *, seed: int, batch_size: int, device: torch.device,
                    use_cache: bool = True, full_output: str = "logits") -> dict[str, np.ndarray]:
    """Per-image masked Pearson ``r`` (N,) and the pooled / mean-map correlations of one model; disk-cached."""
    parts = {"experiment": EXPERIMENT, "model": name, "sha256": hub.record(name)["sha256"],
             "data": data_fingerprint(dataset), "n": int(len(x)), "method": method, "seed": seed,
             "baseline": "zeros", **({"full_output": full_output} if full_output != "logits" else {})}

    def compute() -> dict[str, np.ndarray]:
        model = hub.load(name)
        model = _SoftmaxOutput(model).eval() if full_output == "softmax" else model
        enc, full = encoder_vs_full_attribution(model, x, method, baselines=None, seed=seed,
                                                batch_size=batch_size, device=device)
        r = masked_pixel_correlation(enc, full, x)
        a = enc.abs().double().numpy()
        b = full.abs().double().numpy()
        pooled = np.corrcoef(a.ravel() / (a.std() or 1.0), b.ravel() / (b.std() or 1.0))[0, 1]
        mean_map = np.corrcoef(a.mean(axis=0).ravel(), b.mean(axis=0).ravel())[0, 1]
        return {"r": r.astype(np.float64), "pooled": np.array(pooled), "mean_map": np.array(mean_map)}

    return cached_arrays(result, "exp_encoder_vs_full", parts, compute, use_cache)


def run_encoder_vs_full(
    dataset: str = "mnist",
    *,
    models: ModelHub | None = None,
    model_source: str = "zoo",
    study_classifiers: str | None = None,
    n_test: int | None = None,
    methods: Sequence[str] = METHODS,
    seed: int = 0,
    batch_size: int = 128,
    full_output: str = "logits",
    design: str = "method",
    device: torch.device | str | None = None,
    use_cache: bool = True,
    progress: ProgressFn | None = None,
    log: LogFn | None = None,
) -> ExperimentResult:
    """Encoder-vs-full-classifier agreement of label-free attributions, per method and classifier.

    ``design="factorial"`` runs :func:`run_factorial` instead (output × BatchNorm
    mode × pairing, to find which combination gives the study's numbers).

    ``n_test``: first n test images (default all 10,000). ``full_output``:
    ``"logits"`` (METHOD) or ``"softmax"``, which explains the classifier
    through its class probabilities as the earlier code's Softmax-ended
    classifier did (a diagnostic of the gap to the reproduction study). Tables: ``per_image``
    (model, method, image, r), ``per_model`` and ``summary`` (mean ± 1.96·SEM
    over models, with the reproduction study's values for MNIST).
    """
    if design not in DESIGNS:
        raise ParameterError(f"design must be one of {', '.join(DESIGNS)}, got {design!r}")
    if design == "factorial":
        return run_factorial(dataset, models=models, model_source=model_source,
                             study_classifiers=study_classifiers or "both", n_test=n_test, methods=methods, seed=seed,
                             batch_size=batch_size, device=device, use_cache=use_cache, progress=progress, log=log)
    start = time.perf_counter()
    require_dataset(EXPERIMENT, dataset)
    study_classifiers = study_classifiers or "head"
    if study_classifiers == "both":
        raise ParameterError("study_classifiers='both' needs the factorial design (--factorial); "
                             "METHOD's comparison runs on one set")
    if full_output not in FULL_OUTPUTS:
        raise ParameterError(f"full_output must be one of {', '.join(FULL_OUTPUTS)}, got {full_output!r}")
    hub, dev = _hub_for(methods, models, device)
    names = classifier_names(hub, dataset, check_model_source(model_source), study_classifiers)
    if not names and model_source == "study":
        raise ExperimentSkipped(EXPERIMENT, dataset, f"no study classifier ({study_classifiers}); "
                                f"{study_hint(dataset)}")
    require_models(EXPERIMENT, dataset, hub, names or [f"{dataset}_pretext_classification_run1"],
                   "the pretext classifiers")
    # the softmax diagnostic gets its own results folder so it never overwrites METHOD's run
    result = ExperimentResult(EXPERIMENT if full_output == "logits" else f"{EXPERIMENT}_softmax", dataset,
                              n_runs=len(names))
    test = load_split(dataset, "test")
    x = take_first(test.x, n_test)
    report = Reporter(progress, log, total=len(names) * len(methods))
    per_image, per_model = [], []
    for name in names:
        run = int(hub.record(name).get("run") or 0)
        for method in methods:
            report.log(f"{EXPERIMENT}/{dataset}: {name}, {TITLES[method]} on {len(x)} images "
                       f"({report.done + 1}/{report.total})")
            stats = pair_statistics(result, hub, name, dataset, x, method, seed=seed, batch_size=batch_size,
                                    device=dev, use_cache=use_cache, full_output=full_output)
            r = stats["r"]
            valid = np.isfinite(r)
            per_image.append(pd.DataFrame({"model": name, "run": run, "method": method,
                                           "image": np.arange(len(r)), "r": r}))
            per_model.append({"model": name, "run": run, "method": method, "mean_r": float(np.nanmean(r)),
                              "median_r": float(np.nanmedian(r)), "mean_r2": float(np.nanmean(r ** 2)),
                              "pooled_pearson": float(stats["pooled"]), "mean_map_pearson": float(stats["mean_map"]),
                              "n_images": int(len(r)), "n_undefined": int((~valid).sum())})
            report.step()
        result.checkpoints.append(hub.describe(name))
    per_model_df = pd.DataFrame(per_model)
    summary = _summary(per_model_df, dataset)
    result.tables = {"per_image": pd.concat(per_image, ignore_index=True), "per_model": per_model_df,
                     "summary": summary}
    result.figures = {"encoder_vs_full": _figure(summary, get_spec(dataset).title)}
    result.summary = {"per_method": {row.method: {"mean": row.mean, "ci95": row.ci95, "n_models": row.n_models,
                                                  "reference_mean": row.reference_mean}
                                     for row in summary.itertuples()}}
    result.params = {"models": names, "n_test": len(x), "n_test_available": len(test), "methods": list(methods),
                     "attribution": "label-free, zero baseline; encoder: ⟨f(x), f(x̃)⟩, full: "
                                    + ("⟨logits(x), logits(x̃)⟩" if full_output == "logits"
                                       else "⟨softmax(x), softmax(x̃)⟩"),
                     "full_output": full_output,
                     "comparison": "|·| / global std of the model's array, per-image Pearson over pixels with "
                                   "input ≠ 0; mean per model; mean ± 1.96·SEM (ddof=1) over models",
                     "mode": "eval (BatchNorm running statistics)", "batch_size": batch_size, "device": str(dev)}
    result.seeds = {"attribution_seed": seed}
    if len(names) < 5:
        result.notes.append(f"{len(names)} classifier(s) used (full protocol: 5)")
    result.wall_time_s = time.perf_counter() - start
    return result


def _hub_for(methods: Sequence[str], models: ModelHub | None,
             device: torch.device | str | None) -> tuple[ModelHub, torch.device]:
    """Check the method names; the model hub and the device both designs run on."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ParameterError(f"unknown method(s) {unknown}; choose from {METHODS}")
    hub = models or ModelHub(device=device)
    return hub, to_device(device) if device is not None else hub.device


def _summary(per_model: pd.DataFrame, dataset: str) -> pd.DataFrame:
    rows = []
    for method, g in per_model.groupby("method", sort=False):
        means = g["mean_r"].to_numpy()
        n = len(means)
        std = float(means.std(ddof=1)) if n > 1 else np.nan
        sem = std / np.sqrt(n) if n > 1 else np.nan
        ref = REFERENCE.get(method) if dataset == "mnist" else None
        rows.append({"method": method, "method_title": TITLES[method], "n_models": n, "mean": float(means.mean()),
                     "std": std, "sem": sem, "ci95": 1.96 * sem if n > 1 else np.nan,
                     "pooled_pearson_mean": float(g["pooled_pearson"].mean()),
                     "mean_map_pearson_mean": float(g["mean_map_pearson"].mean()),
                     "mean_r2_mean": float(g["mean_r2"].mean()),
                     "reference_mean": ref[1] if ref else np.nan, "reference_ci95": ref[2] if ref else np.nan})
    return pd.DataFrame(rows)


def _figure(summary: pd.DataFrame, title: str) -> alt.LayerChart:
    """Bars of the mean per-image correlation with ±1.96·SEM error bars (and reference ticks)."""
    data = summary.copy()
    data["low"] = data["mean"] - data["ci95"].fillna(0)
    data["high"] = data["mean"] + data["ci95"].fillna(0)
    y_title = "per-image Pearson, encoder vs full (live pixels)"
    base = alt.Chart(data).encode(x=alt.X("method_title:N", title=None, axis=alt.Axis(labelAngle=0)))
    bars = base.mark_bar(opacity=0.8).encode(y=alt.Y("mean:Q", title=y_title))
    errors = base.mark_errorbar().encode(y=alt.Y("low:Q", title=y_title), y2="high:Q")
    layers = bars + errors
    if data["reference_mean"].notna().any():
        layers = layers + base.mark_tick(color="black", thickness=2, size=30).encode(
            y=alt.Y("reference_mean:Q", title=y_title))
    return layers.properties(title=f"encoder_vs_full: {title} (tick: reproduction study)", width=300, height=240)


def factorial_cell(result: ExperimentResult | None, hub: ModelHub, name: str, dataset: str, x: torch.Tensor,
                   method: str, batch_norm: str, pairing: str, *, seed: int, batch_size: int,
                   device: torch.device, use_cache: bool = True) -> dict[str, np.ndarray]:
    """Per-image masked Pearson ``r_logits`` and ``r_softmax`` (N,) of one model in one BatchNorm/pairing cell.

    The encoder's map is shared by both outputs; ``batch_size`` is in the key
    because it sets the train-mode statistics and the tiling period.
    """
    parts = {"experiment": EXPERIMENT, "design": "factorial", "model": name, "sha256": hub.record(name)["sha256"],
             "data": data_fingerprint(dataset), "n": int(len(x)), "method": method, "seed": seed,
             "batch_norm": batch_norm, "pairing": pairing, "batch_size": int(batch_size), "baseline": "zeros"}

    def compute() -> dict[str, np.ndarray]:
        model = hub.load(name)
        kw: dict[str, Any] = {"batch_norm": batch_norm, "pairing": pairing, "batch_size": batch_size,
                              "device": device, "seed": seed}
        enc = earlier_code_attribution(cast(nn.Module, model.encoder), x, method, **kw)
        out = {}
        for output in FULL_OUTPUTS:
            full_model = _SoftmaxOutput(model) if output == "softmax" else model
            full = earlier_code_attribution(full_model, x, method, **kw)
            out[f"r_{output}"] = masked_pixel_correlation(enc, full, x).astype(np.float64)
        return out

    return cached_arrays(result, "exp_encoder_vs_full_factorial", parts, compute, use_cache)


def factorial_sets(hub: ModelHub, dataset: str, model_source: str, study_classifiers: str) -> dict[str, list[str]]:
    """Classifier sets of the factorial design: ours (``zoo``), or one or both of the study's sets."""
    if model_source != "study":
        return {"zoo": classifier_names(hub, dataset)}
    if study_classifiers not in STUDY_CLASSIFIER_CHOICES:
        raise ParameterError(f"study_classifiers must be one of {', '.join(STUDY_CLASSIFIER_CHOICES)}, "
                             f"got {study_classifiers!r}")
    chosen = STUDY_CLASSIFIERS if study_classifiers == "both" else (study_classifiers,)
    return {s: classifier_names(hub, dataset, "study", s) for s in chosen}


def run_factorial(
    dataset: str = "mnist",
    *,
    models: ModelHub | None = None,
    model_source: str = "zoo",
    study_classifiers: str = "both",
    n_test: int | None = None,
    methods: Sequence[str] = METHODS,
    seed: int = 0,
    batch_size: int = 128,
    device: torch.device | str | None = None,
    use_cache: bool = True,
    progress: ProgressFn | None = None,
    log: LogFn | None = None,
) -> ExperimentResult:
    """Which setting gives the study's encoder-vs-full numbers? A full factorial over three factors.

    Output (logits | softmax) × BatchNorm (eval | train) × GradientShap pairing
    (paired | tiled, the earlier code's), on every classifier of each set
    (the study's HEAD files, its 2023-01-19 files, or ours), with the earlier
    code's test batch of ``batch_size`` = 128. IG and Saliency are unaffected by
    the pairing by construction; their "tiled" rows repeat the paired values
    (``computed_as``). Tables: ``per_model``, ``cells`` (mean ± 1.96·SEM over
    models beside the study's value; ``consistent`` when the difference lies
    within the two intervals combined) and ``combinations`` (one row per set and
    setting: methods consistent, RMS difference, whether the study's order
    IG > GradientShap > Saliency holds).
    """
    start = time.perf_counter()
    require_dataset(EXPERIMENT, dataset)
    hub, dev = _hub_for(methods, models, device)
    sets = factorial_sets(hub, dataset, check_model_source(model_source), study_classifiers)
    if model_source == "study" and not any(sets.values()):
        raise ExperimentSkipped(EXPERIMENT, dataset, f"no study classifier ({study_classifiers}); "
                                f"{study_hint(dataset)}")
    for names in sets.values():
        require_models(EXPERIMENT, dataset, hub, names or [f"{dataset}_pretext_classification_run1"],
                       "the classifiers", model_source)
    result = ExperimentResult(f"{EXPERIMENT}_factorial", dataset, n_runs=max(len(n) for n in sets.values()))
    test = load_split(dataset, "test")
    x = take_first(test.x, n_test)
    cells = [(m, bn, pr) for m in methods for bn in BATCH_NORM_MODES for pr in PAIRINGS
             if pr == "paired" or m in PAIRING_SENSITIVE]
    report = Reporter(progress, log, total=sum(len(n) for n in sets.values()) * len(cells))
    rows = []
    for set_name, names in sets.items():
        for name in names:
            run = int(hub.record(name).get("run") or 0)
            for method, bn, pairing in cells:
                report.log(f"{EXPERIMENT} factorial/{dataset}: {name}, {TITLES[method]}, BatchNorm {bn}, "
                           f"{pairing} ({report.done + 1}/{report.total})")
                stats = factorial_cell(result, hub, name, dataset, x, method, bn, pairing, seed=seed,
                                       batch_size=batch_size, device=dev, use_cache=use_cache)
                pairings = [pairing] if method in PAIRING_SENSITIVE else list(PAIRINGS)
                for output in FULL_OUTPUTS:
                    r = stats[f"r_{output}"]
                    for shown in pairings:
                        rows.append({"set": set_name, "model": name, "run": run, "method": method,
                                     "output": output, "batch_norm": bn, "pairing": shown,
                                     "computed_as": pairing, "mean_r": float(np.nanmean(r)),
                                     "n_images": int(len(r)), "n_undefined": int((~np.isfinite(r)).sum())})
                report.step()
            result.checkpoints.append(hub.describe(name))
    per_model = pd.DataFrame(rows)
    cell_table = _factorial_cells(per_model, dataset)
    combos = _factorial_combinations(cell_table)
    result.tables = {"per_model": per_model, "cells": cell_table, "combinations": combos}
    result.figures = {f"factorial_{s.replace('-', '')}": _factorial_figure(cell_table[cell_table["set"] == s], s)
                      for s in sets if (cell_table["set"] == s).any()}
    result.summary = _factorial_summary(combos)
    result.params = {"design": "factorial", "sets": {s: list(n) for s, n in sets.items()}, "n_test": len(x),
                     "n_test_available": len(test), "methods": list(methods),
                     "factors": {"output": list(FULL_OUTPUTS), "batch_norm": list(BATCH_NORM_MODES),
                                 "pairing": list(PAIRINGS)},
                     "batch_size": batch_size,
                     "pairing_note": "IG and Saliency give the same maps with either pairing (whole-batch α blocks / "
                                     "no enlargement); only GradientShap is computed twice",
                     "consistency": "|ours − study| ≤ √(ci95_ours² + ci95_study²), both 1.96·SEM over models",
                     "comparison": "|·| / global std of the model's array, per-image Pearson over pixels with "
                                   "input ≠ 0; mean per model", "device": str(dev)}
    result.seeds = {"attribution_seed": seed}
    if n_test is not None and len(x) < len(test):
        result.notes.append(f"subsampled: first {len(x)} of {len(test)} test images (the study used all 10,000)")
    result.wall_time_s = time.perf_counter() - start
    return result


def _factorial_cells(per_model: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Mean ± 1.96·SEM over models per (set, output, BatchNorm, pairing, method), beside the study's value."""
    keys = ["set", "output", "batch_norm", "pairing", "method"]
    rows = []
    for key, g in per_model.groupby(keys, sort=False):
        means = g["mean_r"].to_numpy()
        n = len(means)
        ci = 1.96 * float(means.std(ddof=1)) / np.sqrt(n) if n > 1 else np.nan
        ref = REFERENCE.get(key[-1]) if dataset == "mnist" else None
        diff = float(means.mean()) - ref[1] if ref else np.nan
        tol = float(np.hypot(ci, ref[2])) if ref and np.isfinite(ci) else np.nan
        rows.append({**dict(zip(keys, key)), "method_title": TITLES[key[-1]], "n_models": n,
                     "mean": float(means.mean()), "ci95": ci, "low": float(means.min()), "high": float(means.max()),
                     "reference_mean": ref[1] if ref else np.nan, "reference_ci95": ref[2] if ref else np.nan,
                     "difference": diff, "tolerance": tol,
                     "consistent": bool(abs(diff) <= tol) if np.isfinite(tol) else None})
    return pd.DataFrame(rows)


def _factorial_combinations(cells: pd.DataFrame) -> pd.DataFrame:
    """One row per (set, output, BatchNorm, pairing): how close all methods come to the study together."""
    rows = []
    for key, g in cells.groupby(["set", "output", "batch_norm", "pairing"], sort=False):
        by = g.set_index("method")["mean"]
        order = (by.get("integrated_gradients", np.nan) > by.get("gradient_shap", np.nan)
                 > by.get("saliency", np.nan)) if len(by) == 3 else None
        has_ref = g["difference"].notna().any()
        rows.append({"set": key[0], "output": key[1], "batch_norm": key[2], "pairing": key[3],
                     "setting": f"{key[1]}, BatchNorm {key[2]}, {key[3]}",
                     "methods": len(g), "consistent_methods": int(g["consistent"].fillna(False).sum()),
                     "all_consistent": bool(g["consistent"].fillna(False).all()) if has_ref else None,
                     "rms_difference": float(np.sqrt(np.nanmean(g["difference"] ** 2))) if has_ref else np.nan,
                     "study_order": None if order is None else bool(order)})
    table = pd.DataFrame(rows)
    if len(table):
        table["rank"] = table.groupby("set")["rms_difference"].rank(method="min")
    return table


def _factorial_summary(combos: pd.DataFrame) -> dict[str, Any]:
    """Per set: the closest setting and every setting consistent with the study for all methods."""
    out: dict[str, Any] = {}
    for set_name, g in combos.groupby("set", sort=False):
        if g["rms_difference"].isna().all():
            out[set_name] = {"closest": None, "consistent_settings": []}
            continue
        best = g.loc[g["rms_difference"].idxmin()]
        out[set_name] = {"closest": best["setting"], "closest_rms_difference": float(best["rms_difference"]),
                         "closest_consistent_methods": int(best["consistent_methods"]),
                         "consistent_settings": g.loc[g["all_consistent"].fillna(False).astype(bool),
                                                      "setting"].tolist()}
    return {"claim": "the study's encoder-vs-full numbers come from one identifiable setting of output, "
                     "BatchNorm mode and GradientShap pairing", "per_set": out}


def _factorial_figure(cells: pd.DataFrame, set_name: str) -> alt.LayerChart:
    """Mean r ± 1.96·SEM per setting (rows) and method (colour); black ticks: the study's values."""
    data = cells.copy()
    data["setting"] = data["output"] + ", BN " + data["batch_norm"] + ", " + data["pairing"]
    data["lo"] = data["mean"] - data["ci95"].fillna(0)
    data["hi"] = data["mean"] + data["ci95"].fillna(0)
    x_title = "per-image Pearson, encoder vs full (live pixels)"
    base = alt.Chart(data).encode(y=alt.Y("setting:N", title=None, sort=None),
                                  color=alt.Color("method_title:N", title="method"))
    layers = (base.mark_rule().encode(x=alt.X("lo:Q", title=x_title), x2="hi:Q")
              + base.mark_point(filled=True, size=50).encode(x=alt.X("mean:Q", title=x_title)))
    if data["reference_mean"].notna().any():
        layers = layers + base.mark_tick(thickness=2).encode(x=alt.X("reference_mean:Q", title=x_title))
    return layers.properties(title=f"encoder_vs_full factorial: classifiers {set_name} (ticks: the study)",
                             width=380, height=260)
