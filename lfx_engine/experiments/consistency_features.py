"""consistency_features (METHOD.md §7.1): masking the most important features moves the representation.

For the consistency model of a dataset (denoising AE for MNIST/CIFAR, LSTM-AE
for ECG5000), label-free GradientShap, Integrated Gradients and Saliency are
computed over the test set (ECG: the 2,081 abnormal beats) with the dataset's
baseline; each example's own top-M pixels/time steps are set to the baseline
for M = 5..100% and the representation shift ``‖f(x) − f(x̃)‖²`` is measured
per example. Controls (:mod:`lfx_engine.metrics.masking_controls`): a seeded
random ranking, a random ranking of the informative features only, the
model-free ``|x − x̄|`` ranking, and each method on a randomly re-initialised
encoder (the model-randomisation check). Expected reading: attribution methods
shift the representation more than every control, judged by the area between
the curves with a paired 95% interval.
"""
from __future__ import annotations

import time
from typing import Any, Sequence, cast

import altair as alt
import numpy as np
import pandas as pd
import torch
from torch import nn

from lfx_engine.catalogue import STUDY_PREFIX
from lfx_engine.data import baseline, get_spec, load_split
from lfx_engine.errors import ParameterError
from lfx_engine.experiments.common import (
    ExperimentResult,
    LogFn,
    ModelHub,
    ProgressFn,
    Reporter,
    cached_arrays,
    data_fingerprint,
    require_dataset,
    check_model_source,
    require_models,
    take_first,
    to_device,
)
from lfx_engine.feature_importance import aggregate_channels, label_free_attribution, randomised_copy
from lfx_engine.metrics import feature_count, shift_curve
from lfx_engine.metrics.masking_controls import (
    CONTROLS,
    INPUT_CONTROLS,
    RANDOM_INIT,
    control_areas,
    control_scores,
    random_init_key,
)

EXPERIMENT = "consistency_features"
METHODS = ("gradient_shap", "integrated_gradients", "saliency")
PERCENTS = (0, 5, 10, 20, 50, 80, 100)
TITLES = {"gradient_shap": "GradientShap", "integrated_gradients": "Integrated Gradients",
          "saliency": "Saliency", "random": "Random", "random_informative": "Random (informative features)",
          "model_free": "|x − x̄| (model-free)"}


def curve_title(key: str) -> str:
    """Display name of a curve: a method, a control, or ``<method>_random_init``."""
    if key.endswith(RANDOM_INIT):
        return f"{TITLES[key[:-len(RANDOM_INIT)]]}, random encoder"
    return TITLES[key]
#: Smaller run for a CPU (``--quick``): the first 500 test examples.
QUICK: dict[str, Any] = {"n_test": 500}


def model_name(dataset: str, model_source: str = "zoo", experiment: str = EXPERIMENT) -> str:
    """The model explained on ``dataset``: our one consistency model, or the study's model for ``experiment``."""
    if model_source == "study":
        part = "features" if experiment == EXPERIMENT else "examples"
        return f"{STUDY_PREFIX}{dataset}_{'lstm_ae' if dataset == 'ecg5000' else 'dae'}_consistency_{part}"
    return "ecg5000_lstm_ae" if dataset == "ecg5000" else f"{dataset}_dae_consistency"


#: Our ECG model trained on normal beats only, as the paper's consistency_features model (METHOD §7.1).
ECG_FEATURES_MODEL = "ecg5000_lstm_ae_features"


def features_model(hub: ModelHub, dataset: str, model_source: str = "zoo") -> str:
    """The model this experiment explains: on ECG5000 our normal-beats model when it is trained, else
    :func:`model_name`'s (the examples model, trained on all beats; the result says so)."""
    if dataset == "ecg5000" and model_source == "zoo" and hub.has(ECG_FEATURES_MODEL):
        return ECG_FEATURES_MODEL
    return model_name(dataset, model_source)


def test_split(dataset: str) -> str:
    """Split the masking is measured on (ECG: all abnormal beats, METHOD §6)."""
    return "features_test" if dataset == "ecg5000" else "test"


def feature_scores(result: ExperimentResult | None, hub: ModelHub, name: str, dataset: str, x: torch.Tensor,
                   x_bar: torch.Tensor, method: str, *, seed: int, batch_size: int, device: torch.device,
                   use_cache: bool = True, progress: ProgressFn | None = None,
                   random_init: bool = False) -> torch.Tensor:
    """Channel-aggregated ``Σ_c |attr|`` of the model's encoder: ``(N,1,H,W)`` or ``(N,T)``; disk-cached.

    The cache key holds the checkpoint sha256, the data files' sha256, the split,
    the number of examples and the method's seed, so the app reuses it.
    ``random_init``: explain the same architecture re-initialised with ``seed``
    (the model-randomisation control) instead of the trained encoder.
    """
    parts = {"experiment": EXPERIMENT, "model": name, "sha256": hub.record(name)["sha256"],
             "data": data_fingerprint(dataset), "split": test_split(dataset), "n": int(len(x)),
             "method": method, "seed": seed, "aggregation": "sum_abs",
             **({"encoder": "random_init", "init_seed": seed} if random_init else {})}

    def compute() -> dict[str, np.ndarray]:
        encoder = cast(nn.Module, hub.load(name).encoder)
        if random_init:
            encoder = randomised_copy(encoder, seed)
        attr = label_free_attribution(encoder, x, method, baselines=x_bar, batch_size=batch_size,
                                      device=device, seed=seed, progress=progress)
        return {"scores": aggregate_channels(attr, "sum_abs").numpy().astype(np.float32)}

    return torch.from_numpy(cached_arrays(result, "exp_feature_scores", parts, compute, use_cache)["scores"])


def run_consistency_features(
    dataset: str,
    *,
    models: ModelHub | None = None,
    model_source: str = "zoo",
    n_test: int | None = None,
    methods: Sequence[str] = METHODS,
    controls: Sequence[str] = CONTROLS,
    percents: Sequence[float] = PERCENTS,
    seed: int = 0,
    batch_size: int = 128,
    device: torch.device | str | None = None,
    use_cache: bool = True,
    progress: ProgressFn | None = None,
    log: LogFn | None = None,
) -> ExperimentResult:
    """Representation shift vs % masked features per attribution method (and Random) on ``dataset``.

    ``n_test``: the first n test examples (default: all, as in METHOD). Tables:
    ``shift`` (method, percent, M, mean, 95% CI, n; controls included),
    ``shift_per_example``, ``comparison`` (each method against Random at every
    M) and ``areas`` (area between each method's curve and each control's, with
    a paired 95% interval and a verdict).
    """
    start = time.perf_counter()
    require_dataset(EXPERIMENT, dataset)
    hub = models or ModelHub(device=device)
    dev = to_device(device) if device is not None else hub.device
    name = features_model(hub, dataset, check_model_source(model_source))
    require_models(EXPERIMENT, dataset, hub, [name], "the consistency model", model_source)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ParameterError(f"unknown attribution method(s) {unknown}; choose from {METHODS}")
    bad = [c for c in controls if c not in CONTROLS]
    if bad or "random" not in controls:
        raise ParameterError(f"controls must include random and come from {', '.join(CONTROLS)}; got "
                             f"{list(controls)}")
    random_init = "random_init" in controls
    report = Reporter(progress, log, total=len(methods) * (2 if random_init else 1) + 1)
    result = ExperimentResult(EXPERIMENT, dataset, n_runs=1)

    split = load_split(dataset, test_split(dataset))
    x = take_first(split.x, n_test)
    x_bar = baseline(dataset)
    zero_baseline = get_spec(dataset).baseline_kind == "zeros"
    model = hub.load(name)
    scores = {}
    for i, method in enumerate(methods):
        report.log(f"{EXPERIMENT}/{dataset}: label-free {TITLES[method]} on {len(x)} examples "
                   f"({i + 1}/{len(methods)})")
        scores[method] = feature_scores(result, hub, name, dataset, x, x_bar, method, seed=seed,
                                        batch_size=batch_size, device=dev, use_cache=use_cache)
        report.step()
    if random_init:
        for method in methods:
            report.log(f"{EXPERIMENT}/{dataset}: {TITLES[method]} on a randomly re-initialised encoder "
                       "(control)")
            scores[random_init_key(method)] = feature_scores(result, hub, name, dataset, x, x_bar, method, seed=seed,
                                                          batch_size=batch_size, device=dev, use_cache=use_cache,
                                                          random_init=True)
            report.step()
    for control in INPUT_CONTROLS:
        if control in controls:
            scores[control] = control_scores(control, x, x_bar, seed=seed)
    report.log(f"{EXPERIMENT}/{dataset}: masking and representation shift")
    summary, per_example = shift_curve(cast(nn.Module, model.encoder), x, scores,
                                       baseline=None if zero_baseline else x_bar,
                                       percents=percents, seed=seed, device=dev, return_per_example=True)
    report.step()
    areas = _areas(per_example, methods, controls)

    p_total = feature_count(x)
    unit = "time steps" if x.dim() == 3 else "pixels"
    summary.insert(0, "dataset", dataset)
    summary["P"] = p_total
    summary["method_title"] = summary["method"].map(curve_title)
    summary["kind"] = np.where(summary["method"].isin(methods), "method", "control")
    per_example.insert(0, "dataset", dataset)
    comparison = _compare_to_random(summary)
    areas.insert(0, "dataset", dataset)
    result.tables = {"shift": summary, "shift_per_example": per_example, "comparison": comparison,
                     "areas": areas}
    result.figures = {"shift_curve": _figure(summary, dataset, unit)}
    beats = comparison["beats_random"]
    result.summary = {
        "claim": "attribution methods shift the representation more than random masking at every M "
                 "(0 < M < P; at M = P every method masks everything)",
        "holds_for_every_method_and_M": bool(beats.all()) if len(beats) else None,
        "per_method": {m: bool(g["beats_random"].all()) for m, g in comparison.groupby("method")},
        "mean_shift_at_20pct": {row.method: float(row.mean) for row in summary.itertuples() if row.percent == 20},
        "area_verdicts": {m: {row.control: row.verdict for row in g.itertuples()}
                          for m, g in areas.groupby("method", sort=False)},
        "above_every_control": {m: bool((g["verdict"] == "above").all())
                                for m, g in areas.groupby("method", sort=False)},
    }
    result.params = {"model": name, "split": test_split(dataset), "n_test": int(len(x)),
                     "n_test_available": int(len(split)), "methods": list(methods), "controls": list(controls),
                     "control_settings": {"random": "i.i.d. N(0,1) scores, seeded",
                                          "random_informative": "random order among features that differ from "
                                                                "the baseline, then the rest",
                                          "model_free": "Σ_c |x − x̄|, largest first",
                                          "random_init": "the same method on the encoder re-initialised by its "
                                                         "layers' own initialisers (seeded); shift measured on "
                                                         "the trained encoder"},
                     "area": "trapezoid of the shift over the masked share 0..1; paired difference per example, "
                             "95% Student-t interval; 'above'/'below' when it excludes 0, else 'not resolved'",
                     "percents": list(percents), "P": p_total, "M": summary.drop_duplicates("percent")["M"].tolist(),
                     "baseline": get_spec(dataset).baseline_description,
                     "masked_value": "0 (mask·x)" if zero_baseline else "baseline (mask·x + (1−mask)·x̄)",
                     "aggregation": "sum over channels of |attr| (one score per pixel / time step)",
                     "method_settings": {"gradient_shap": "n_samples=5, stdevs=0, zero/ECG-mean baseline",
                                         "integrated_gradients": "n_steps=50, gausslegendre",
                                         "saliency": "abs=True"},
                     "ci": "95% Student-t interval of the per-example shifts",
                     "batch_size": batch_size, "device": str(dev)}
    result.seeds = {"attribution_seed": seed, "random_control_seed": seed, "random_init_seed": seed}
    result.checkpoints = [hub.describe(name)]
    if name == model_name("ecg5000"):
        result.notes.append("the ECG model was trained on examples_train (normal and abnormal beats); the paper's "
                            f"features model saw normal beats only (train {ECG_FEATURES_MODEL} for that)")
    if n_test is not None and len(x) < len(split):
        result.notes.append(f"subsampled: first {len(x)} of {len(split)} test examples (--n-test)")
    result.wall_time_s = time.perf_counter() - start
    return result


def _areas(per_example: pd.DataFrame, methods: Sequence[str], controls: Sequence[str]) -> pd.DataFrame:
    """:func:`control_areas` with display titles."""
    table = control_areas(per_example, methods, controls)
    table.insert(2, "control_title", [TITLES.get(c, "same method, random encoder") for c in table["control"]])
    table.insert(1, "method_title", table["method"].map(TITLES))
    return table


def _compare_to_random(summary: pd.DataFrame) -> pd.DataFrame:
    """Each method's mean shift against the Random control at every 0 < M < P.

    M = 0 and M = P (everything masked: the same all-baseline input for every
    method) cannot separate methods and are left out.
    """
    rand = summary[summary["method"] == "random"].set_index("percent")
    rows = []
    informative = (summary["kind"] == "method") & (summary["M"] > 0) & (summary["M"] < summary["P"])
    for row in summary[informative].itertuples():
        r = rand.loc[row.percent]
        rows.append({"method": row.method, "percent": row.percent, "M": row.M, "mean": row.mean,
                     "random_mean": float(r["mean"]), "difference": row.mean - float(r["mean"]),
                     "ratio": row.mean / float(r["mean"]) if float(r["mean"]) > 0 else np.nan,
                     "beats_random": bool(row.mean > float(r["mean"])),
                     "ci_separated": bool(row.ci_low > float(r["ci_high"]))})
    return pd.DataFrame(rows, columns=["method", "percent", "M", "mean", "random_mean", "difference", "ratio",
                                       "beats_random", "ci_separated"])


def _figure(summary: pd.DataFrame, dataset: str, unit: str) -> alt.LayerChart:
    """Shift vs % perturbed features, one line per method, with the 95% CI band."""
    data = summary[["method_title", "kind", "percent", "mean", "ci_low", "ci_high"]].copy()
    data["ci_low"] = data["ci_low"].fillna(data["mean"])
    data["ci_high"] = data["ci_high"].fillna(data["mean"])
    base = alt.Chart(data).encode(
        x=alt.X("percent:Q", title=f"% perturbed {unit}"),
        color=alt.Color("method_title:N", title="method or control"),
        strokeDash=alt.StrokeDash("kind:N", title=None, sort=["method", "control"]),
    )
    band = base.mark_area(opacity=0.2).encode(y="ci_low:Q", y2="ci_high:Q")
    line = base.mark_line(point=True).encode(y=alt.Y("mean:Q", title="representation shift ‖f(x) − f(x̃)‖²"))
    return (band + line).properties(title=f"consistency_features: {get_spec(dataset).title}", width=360, height=260)
