"""consistency_examples (METHOD.md §7.2): important training examples share the test example's label.

On the class-balanced 1000 × 1000 subsets (ECG: 500 normal + 500 abnormal
training beats, a seeded permutation of the test split), Influence Functions
(LiSSA), TracIn (saved checkpoints), SimplEx, DKNN and cosine NN each give an
``n_test × n_train`` score matrix of the consistency model. The similarity rate
of the top-n (most important) and bottom-n (least important) training examples
is measured for n = 5..100% of the training subset. Expected reading: most
above the class prior, least below, both equal to it at 100%.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

import altair as alt
import numpy as np
import pandas as pd
import torch

from lfx_engine.data import Split, balanced_subset_indices, get_spec, load_split
from lfx_engine.data.subsets import ECG_SUBSET_SEED
from lfx_engine.errors import ParameterError
from lfx_engine.example_importance import (
    HESSIANS,
    resolve_hessian,
    l1_per_example,
    mse_per_example,
)
from lfx_engine.example_importance.dispatch import score_matrix
from lfx_engine.experiments.common import (
    ExperimentResult,
    LogFn,
    ModelHub,
    ProgressFn,
    Reporter,
    cached_arrays,
    check_positive_int,
    data_fingerprint,
    require_dataset,
    check_model_source,
    require_models,
    subset_digest,
    to_device,
)
from lfx_engine.experiments.consistency_features import model_name
from lfx_engine.metrics import DEFAULT_FRACTIONS, similarity_rates

EXPERIMENT = "consistency_examples"
EXPLAINERS = ("influence", "tracin", "simplex", "dknn", "cosine", "grad_dot", "grad_cos")
#: Baselines of the loss-gradient explainers: gradient dot product and cosine at the final weights.
GRADIENT_BASELINES = {"grad_dot": "dot", "grad_cos": "cosine"}
TITLES = {"influence": "Influence Functions", "tracin": "TracIn", "simplex": "SimplEx", "dknn": "DKNN",
          "cosine": "Cosine NN", "grad_dot": "Gradient dot product (baseline)",
          "grad_cos": "Gradient cosine (baseline)"}
#: Smaller run for a CPU (``--quick``): 200 × 200 subsets, LiSSA depth 10 (IF costs n_test × depth HVPs
#: on 300-example minibatches: about 1 minute here instead of ~1.5 hours for 1000 × 100).
QUICK: dict[str, Any] = {"n_train": 200, "n_test": 200, "if_depth": 10}
#: Per-dataset changes to ``QUICK``: an HVP through the ECG LSTM costs about a second on a CPU.
QUICK_BY_DATASET: dict[str, dict[str, Any]] = {"ecg5000": {"n_train": 100, "n_test": 100, "if_depth": 3}}


def example_subsets(dataset: str, n_train: int, n_test: int) -> tuple[Split, Split, dict[str, Any]]:
    """Training and test subsets of METHOD §6 and a description of how they were drawn."""
    if dataset == "ecg5000":
        train = load_split(dataset, "examples_train")
        test = load_split(dataset, "examples_test")
        if n_test > len(test):
            raise ParameterError(f"--n-test must lie in 1..{len(test)} for ecg5000, got {n_test}")
        order = torch.randperm(len(test), generator=torch.Generator().manual_seed(ECG_SUBSET_SEED))[:n_test]
        train_sub = train.subset(balanced_subset_indices(train.y, n_train, 2))
        rule = {"train": f"{n_train} beats of examples_train alternating normal/abnormal",
                "test": f"first {n_test} of a permutation (seed {ECG_SUBSET_SEED}) of examples_test",
                "seed": ECG_SUBSET_SEED}
        return train_sub, test.subset(order), rule
    k = get_spec(dataset).n_classes
    train = load_split(dataset, "train")
    test = load_split(dataset, "test")
    rule = {"train": f"class-balanced {n_train} of train (example k = (k // {k})-th occurrence of class k mod {k})",
            "test": f"class-balanced {n_test} of test (same rule)"}
    return (train.subset(balanced_subset_indices(train.y, n_train, k)),
            test.subset(balanced_subset_indices(test.y, n_test, k)), rule)


def explainer_scores(result: ExperimentResult | None, hub: ModelHub, name: str, dataset: str, explainer: str,
                     train: Split, test: Split, params: dict[str, Any], *, device: torch.device,
                     use_cache: bool = True, progress: ProgressFn | None = None,
                     max_memory_mb: float | None = None) -> dict[str, np.ndarray]:
    """Score matrix ``(n_test, n_train)`` (and SimplEx residuals) of one explainer; disk-cached.

    The model is reset to its final weights for every explainer (each works on
    a fresh copy in eval mode); IF and TracIn differentiate the encoder only.
    ``max_memory_mb`` bounds their gradient buffers; it changes the scores only
    through the Hessian ``"auto"`` picks, which is part of the cache key.
    """
    record = hub.record(name)
    parts = {"experiment": EXPERIMENT, "model": name, "sha256": record["sha256"], "data": data_fingerprint(dataset),
             "train": subset_digest(train.extra["indices"]), "test": subset_digest(test.extra["indices"]),
             "explainer": explainer, "params": params}
    if explainer == "tracin":
        parts["tracin"] = [t["sha256"] for t in record.get("tracin_checkpoints", [])]
    loss_fn = l1_per_example if dataset == "ecg5000" else mse_per_example
    if explainer == "influence":
        parts["hessian_resolved"] = resolve_hessian(
            hub.load(name), train.x.to(device), params["hessian"], min(len(train), len(test)),
            params["recursion_depth"], n_gradient_rows=len(train) + len(test), max_memory_mb=max_memory_mb)

    def compute() -> dict[str, np.ndarray]:
        settings: dict[str, Any] = {}
        checkpoints: list[Any] = []
        if explainer == "simplex":
            settings = {"steps": params["steps"], "lr": params["lr"]}
        elif explainer in ("tracin", *GRADIENT_BASELINES):
            settings = {"max_memory_mb": max_memory_mb}
            checkpoints = [state for _, state, _ in hub.tracin_states(name)] if explainer == "tracin" else []
        elif explainer == "influence":
            settings = {key: params[key] for key in ("damp", "scale", "recursion_depth", "minibatch_size", "seed")}
            settings.update(n_train_for_scaling=len(train), hessian=parts["hessian_resolved"],
                            max_memory_mb=max_memory_mb)
        arrays = score_matrix(explainer, hub.load(name), train.x, test.x, loss_fn=loss_fn, checkpoints=checkpoints,
                              params=settings, device=device, progress=progress)
        out = {key: value.numpy() for key, value in arrays.items()}
        if explainer == "influence":
            out["hessian"] = np.array(parts["hessian_resolved"])
        return out

    return cached_arrays(result, "exp_example_scores", parts, compute, use_cache)


def run_consistency_examples(
    dataset: str,
    *,
    models: ModelHub | None = None,
    model_source: str = "zoo",
    n_train: int = 1000,
    n_test: int | None = None,
    explainers: Sequence[str] = EXPLAINERS,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    if_depth: int = 100,
    if_damp: float = 1e-3,
    if_scale: float = 1000.0,
    if_minibatch: int | None = None,
    if_hessian: str = "auto",
    simplex_steps: int = 1000,
    simplex_lr: float = 0.1,
    seed: int = 0,
    max_memory_mb: float | None = None,
    device: torch.device | str | None = None,
    use_cache: bool = True,
    progress: ProgressFn | None = None,
    log: LogFn | None = None,
) -> ExperimentResult:
    """Similarity rates of the most/least important training examples for each explainer on ``dataset``.

    ``n_test`` defaults to 1000 (METHOD §6). ``if_minibatch`` defaults to the
    training batch size (300 images, 20 ECG beats), capped at ``n_train``.
    ``if_hessian`` is :func:`influence_scores`' ``hessian``: ``"auto"`` takes the
    encoder-Gauss–Newton Hessian where it applies (image AEs; minutes instead of
    hours on a CPU, scores within 0.3% of the exact LiSSA on MNIST) and the
    exact Hessian elsewhere (the ECG LSTM); ``"exact"`` forces METHOD's estimator.
    ``max_memory_mb`` bounds the per-example gradients TracIn and IF hold at once
    (default 2048; they stream in blocks below that, with the same scores).
    Explainers whose inputs are missing (TracIn without saved checkpoints) are
    left out with a note. Tables: ``similarity`` (explainer, fraction, n, most,
    least, prior), ``timings``, ``simplex_residuals``.
    """
    start = time.perf_counter()
    require_dataset(EXPERIMENT, dataset)
    n_test = 1000 if n_test is None else n_test
    check_positive_int("n_train", n_train)
    check_positive_int("n_test", n_test)
    check_positive_int("if_depth", if_depth)
    if if_hessian not in HESSIANS:
        raise ParameterError(f"if_hessian must be one of {', '.join(HESSIANS)}, got {if_hessian!r}")
    unknown = [e for e in explainers if e not in EXPLAINERS]
    if unknown:
        raise ParameterError(f"unknown explainer(s) {unknown}; choose from {EXPLAINERS}")
    hub = models or ModelHub(device=device)
    dev = to_device(device) if device is not None else hub.device
    name = model_name(dataset, check_model_source(model_source), EXPERIMENT)
    require_models(EXPERIMENT, dataset, hub, [name], "the consistency model", model_source)
    result = ExperimentResult(EXPERIMENT, dataset, n_runs=1)
    train, test, rule = example_subsets(dataset, n_train, n_test)
    minibatch = min(if_minibatch or (20 if dataset == "ecg5000" else 300), len(train))
    settings: dict[str, dict[str, Any]] = {
        "influence": {"damp": if_damp, "scale": if_scale, "recursion_depth": if_depth, "minibatch_size": minibatch,
                      "seed": seed, "n_train_for_scaling": len(train), "hessian": if_hessian, "loss": _loss_name(dataset),
                      "parameters": "encoder only"},
        "tracin": {"lr_factor": 1.0, "loss": _loss_name(dataset), "parameters": "encoder only"},
        "simplex": {"steps": simplex_steps, "lr": simplex_lr},
        "dknn": {"eps": 1e-8},
        "cosine": {},
        "grad_dot": {"weights": "final", "loss": _loss_name(dataset), "parameters": "encoder only"},
        "grad_cos": {"weights": "final", "loss": _loss_name(dataset), "parameters": "encoder only"},
    }
    chosen = list(explainers)
    if "tracin" in chosen and not hub.record(name).get("tracin_checkpoints"):
        chosen.remove("tracin")
        result.notes.append(f"TracIn left out: {name} has no saved TracIn checkpoints "
                            f"(retrain it with `python -m lfx_engine train {name}`)")
    report = Reporter(progress, log, total=len(chosen))

    rates, timings, residual_rows = [], [], []
    all_scores: dict[str, np.ndarray] = {}
    for i, explainer in enumerate(chosen):
        report.log(f"{EXPERIMENT}/{dataset}: {TITLES[explainer]} on {len(test)} × {len(train)} "
                   f"({i + 1}/{len(chosen)})")
        misses = result.cache_stats["misses"]
        t0 = time.perf_counter()
        arrays = explainer_scores(result, hub, name, dataset, explainer, train, test, settings[explainer],
                                  device=dev, use_cache=use_cache, max_memory_mb=max_memory_mb)
        seconds = time.perf_counter() - t0
        timings.append({"explainer": explainer, "seconds": round(seconds, 3),
                        "from_cache": result.cache_stats["misses"] == misses and use_cache})
        if "hessian" in arrays:
            settings["influence"]["hessian_used"] = str(arrays["hessian"])
        scores = arrays["scores"]
        if scores.shape != (len(test), len(train)) or not np.isfinite(scores).all():
            raise RuntimeError(f"{explainer} returned scores of shape {scores.shape} with non-finite values")
        all_scores[explainer] = scores
        table = similarity_rates(scores, test.y, train.y, fractions)
        table.insert(0, "explainer", explainer)
        rates.append(table)
        if explainer == "simplex":
            res = arrays["residuals"]
            rel = res / np.maximum(arrays["latent_norms"], 1e-12)
            residual_rows.append({"mean": float(res.mean()), "median": float(np.median(res)), "max": float(res.max()),
                                  "mean_relative": float(rel.mean()), "max_relative": float(rel.max())})
        report.step()

    similarity = pd.concat(rates, ignore_index=True)
    similarity["percent"] = similarity["fraction"] * 100
    similarity["explainer_title"] = similarity["explainer"].map(TITLES)
    result.tables = {"similarity": similarity, "timings": pd.DataFrame(timings)}
    agreement = rank_agreement(all_scores)
    if len(agreement):
        result.tables["agreement"] = agreement
    if residual_rows:
        result.tables["simplex_residuals"] = pd.DataFrame(residual_rows)
    result.figures = {"similarity_rates": _figure(similarity, dataset)}
    prior = float(similarity["prior"].iloc[0])
    verdicts = {}
    for explainer, g in similarity.groupby("explainer"):
        part = g[g["fraction"] < 1.0]
        verdicts[explainer] = {"most_above_prior": bool((part["most"] > part["prior"]).all()),
                               "least_below_prior": bool((part["least"] < part["prior"]).all()),
                               "most_above_prior_at_95pct": bool((part["most_vs_prior"] == "above").all()),
                               "least_below_prior_at_95pct": bool((part["least_vs_prior"] == "below").all()),
                               "most_at_5pct": float(g.iloc[0]["most"]), "least_at_5pct": float(g.iloc[0]["least"]),
                               "most_verdicts": dict(zip(part["fraction"], part["most_vs_prior"])),
                               "least_verdicts": dict(zip(part["fraction"], part["least_vs_prior"]))}
    result.summary = {"claim": "most-important examples share the label above the prior, least-important below",
                      "prior": prior, "per_explainer": verdicts,
                      "holds_for_every_explainer": all(v["most_above_prior"] and v["least_below_prior"]
                                                       for e, v in verdicts.items() if e not in GRADIENT_BASELINES),
                      "holds_for_every_explainer_at_95pct": all(
                          v["most_above_prior_at_95pct"] and v["least_below_prior_at_95pct"]
                          for e, v in verdicts.items() if e not in GRADIENT_BASELINES),
                      "agreement": {f"{r.explainer_a}~{r.explainer_b}": {"spearman_mean": r.spearman_mean,
                                                                          "top_k_overlap": r.top_k_overlap}
                                    for r in agreement.itertuples()}}
    result.params = {"model": name, "n_train": len(train), "n_test": len(test), "subsets": rule,
                     "explainers": chosen, "fractions": list(fractions), "settings": settings, "device": str(dev)}
    result.seeds = {"lissa_minibatch_seed": seed, **({"ecg_test_permutation_seed": ECG_SUBSET_SEED}
                                                    if dataset == "ecg5000" else {})}
    result.checkpoints = [hub.describe(name)]
    if if_depth != 100 or len(train) != 1000 or len(test) != 1000:
        result.notes.append(f"reduced run: {len(train)} × {len(test)} subsets, LiSSA depth {if_depth} "
                            f"(full protocol: 1000 × 1000, depth 100)")
    result.wall_time_s = time.perf_counter() - start
    return result


#: Pairs whose rank agreement is reported: how far the Hessian and the checkpoints move the gradient explainers.
AGREEMENT_PAIRS = (("influence", "grad_dot"), ("influence", "grad_cos"), ("tracin", "grad_dot"),
                   ("influence", "tracin"), ("grad_cos", "cosine"))


def rank_agreement(scores: dict[str, np.ndarray], top_k: int = 10) -> pd.DataFrame:
    """Per test row, Spearman between two explainers' scores and the overlap of their top-k; mean and median.

    ``influence`` against ``grad_dot`` says how far the inverse Hessian moves
    Influence Functions from a plain gradient product at these settings.
    """
    from scipy import stats

    rows = []
    for a, b in AGREEMENT_PAIRS:
        if a not in scores or b not in scores:
            continue
        sa, sb = scores[a], scores[b]
        rho = np.array([stats.spearmanr(ra, rb)[0] for ra, rb in zip(sa, sb)])
        k = min(top_k, sa.shape[1])
        top_a = np.argsort(-sa, axis=1)[:, :k]
        top_b = np.argsort(-sb, axis=1)[:, :k]
        overlap = np.array([len(set(x) & set(y)) / k for x, y in zip(top_a, top_b)])
        rows.append({"explainer_a": a, "explainer_b": b, "spearman_mean": float(np.nanmean(rho)),
                     "spearman_median": float(np.nanmedian(rho)), "spearman_min": float(np.nanmin(rho)),
                     "top_k": k, "top_k_overlap": float(overlap.mean()), "n_test": int(len(rho))})
    return pd.DataFrame(rows)


def _loss_name(dataset: str) -> str:
    return "mean L1 (ECG pretext loss)" if dataset == "ecg5000" else "per-example mean MSE (pretext loss)"


def _figure(similarity: pd.DataFrame, dataset: str) -> alt.LayerChart:
    """Similarity rate vs % examples selected (colour = explainer, dash = most/least), prior as a rule."""
    frames = []
    for side in ("most", "least"):
        part = similarity[["explainer_title", "percent", side, f"{side}_ci_low", f"{side}_ci_high"]].copy()
        part.columns = ["explainer_title", "percent", "rate", "ci_low", "ci_high"]
        frames.append(part.assign(selection=side))
    long = pd.concat(frames, ignore_index=True)
    band = alt.Chart(long).mark_area(opacity=0.15).encode(
        x="percent:Q", y="ci_low:Q", y2="ci_high:Q", color=alt.Color("explainer_title:N", title="explainer"),
        detail="selection:N")
    lines = alt.Chart(long).mark_line(point=True).encode(
        x=alt.X("percent:Q", title="% examples selected"),
        y=alt.Y("rate:Q", title="similarity rate", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("explainer_title:N", title="explainer"),
        strokeDash=alt.StrokeDash("selection:N", title="examples", sort=["most", "least"],
                                  legend=alt.Legend(symbolType="stroke", symbolStrokeWidth=2)),
    )
    prior = alt.Chart(pd.DataFrame({"prior": [float(similarity["prior"].iloc[0])]})).mark_rule(
        color="gray", strokeDash=[2, 2]).encode(y="prior:Q")
    return (band + lines + prior).properties(title=f"consistency_examples: {get_spec(dataset).title} "
                                                  "(bands: 95% intervals over test examples)", width=360,
                                      height=260)
