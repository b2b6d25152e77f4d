"""pretext (METHOD.md §7.3): do encoders trained on different pretext tasks explain alike?

For every run that has all four models (Reconstruction, Denoising, Inpainting
AEs and the Classifier), ``|GradientShap|`` label-free attributions of each
**encoder** over the test set and each encoder's DKNN scores (test × the 1000
balanced training images) are correlated across tasks: one pooled 4×4 Pearson
and Spearman matrix per run, reported as mean ± std over runs (the range below 3 runs). Expected
reading: off-diagonal correlations clearly below 1.
"""
from __future__ import annotations

import time
from typing import Any, Sequence, cast

import altair as alt
import numpy as np
import pandas as pd
import torch
from torch import nn

from lfx_engine.catalogue import source_prefix
from lfx_engine.data import balanced_subset_indices, baseline, get_spec, load_split
from lfx_engine.example_importance import dknn_scores, encode
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
    first_per_class,
    image_for_display,
    new_figure,
    require_dataset,
    subset_digest,
    take_first,
    to_device,
)
from lfx_engine.feature_importance import label_free_attribution
from lfx_engine.metrics import latex_table, mean_std, mean_std_table, pooled_correlation_matrix, spread_label, spread_name
from lfx_engine.metrics.correlation import MIN_RUNS_FOR_STD

EXPERIMENT = "pretext"
TASKS = ("reconstruction", "denoising", "inpainting", "classification")
LABELS = ("Reconstruction", "Denoising", "Inpainting", "Classification")
KINDS = ("features", "examples")
CORRELATIONS = ("pearson", "spearman")
#: Default cap on the elements ranked for Spearman (Pearson is exact and streamed).
SPEARMAN_MAX_ELEMENTS = 2_000_000
#: Smaller run for a CPU (``--quick``).
QUICK: dict[str, Any] = {"n_test": 500, "n_train": 500}


def entry_name(dataset: str, task: str, run: int, model_source: str = "zoo") -> str:
    """Catalogue name of one pretext model (ours, or the study's imported one: runs 0–4)."""
    return f"{source_prefix(model_source)}{dataset}_pretext_{task}_run{run}"


def complete_runs(hub: ModelHub, dataset: str, model_source: str = "zoo") -> tuple[list[int], list[int]]:
    """(runs with all four models trained, runs with only some of them)."""
    runs: dict[int, set[str]] = {}
    for rec in hub.find(dataset, experiment="pretext", source=model_source):
        if rec.get("name") == entry_name(dataset, str(rec.get("task")), int(rec.get("run") or 0), model_source):
            runs.setdefault(int(rec["run"]), set()).add(rec["task"])
    complete = sorted(r for r, tasks in runs.items() if set(TASKS) <= tasks)
    partial = sorted(r for r, tasks in runs.items() if not set(TASKS) <= tasks)
    return complete, partial


def abs_gradient_shap(result: ExperimentResult | None, hub: ModelHub, name: str, dataset: str, x: torch.Tensor,
                      *, seed: int, batch_size: int, device: torch.device, use_cache: bool = True) -> np.ndarray:
    """``|GradientShap|`` label-free attribution of the model's encoder, input-shaped float32; disk-cached."""
    parts = {"experiment": EXPERIMENT, "model": name, "sha256": hub.record(name)["sha256"],
             "data": data_fingerprint(dataset), "split": "test", "n": int(len(x)), "method": "gradient_shap",
             "seed": seed, "baseline": "zeros", "abs": True}

    def compute() -> dict[str, np.ndarray]:
        attr = label_free_attribution(cast(nn.Module, hub.load(name).encoder), x, "gradient_shap",
                                      baselines=baseline(dataset), batch_size=batch_size, device=device, seed=seed)
        return {"attr": attr.abs().numpy().astype(np.float32)}

    return cached_arrays(result, "exp_pretext_features", parts, compute, use_cache)["attr"]


def latents(result: ExperimentResult | None, hub: ModelHub, name: str, dataset: str, split: str,
            indices: np.ndarray, x: torch.Tensor, *, device: torch.device, use_cache: bool = True) -> torch.Tensor:
    """Encoder latents of the given rows (inputs in [0,1], as in training); disk-cached."""
    parts = {"model": name, "sha256": hub.record(name)["sha256"], "data": data_fingerprint(dataset),
             "split": split, "n": int(len(indices)), "rows": subset_digest(indices)}

    def compute() -> dict[str, np.ndarray]:
        return {"h": encode(cast(nn.Module, hub.load(name).encoder), x, device=device).numpy()}

    return torch.from_numpy(cached_arrays(result, "exp_latents", parts, compute, use_cache)["h"])


def run_pretext(
    dataset: str,
    *,
    models: ModelHub | None = None,
    model_source: str = "zoo",
    n_test: int | None = None,
    n_train: int = 1000,
    runs: Sequence[int] | None = None,
    seed: int = 0,
    spearman_max_elements: int | None = SPEARMAN_MAX_ELEMENTS,
    pearson_max_elements: int | None = None,
    n_overlays: int = 10,
    batch_size: int = 128,
    device: torch.device | str | None = None,
    use_cache: bool = True,
    progress: ProgressFn | None = None,
    log: LogFn | None = None,
) -> ExperimentResult:
    """Pooled task-by-task correlations of feature and example importance, mean ± std over runs.

    ``n_test``: first n test images (default all); ``n_train``: balanced
    training subset for DKNN (1000). ``runs`` restricts the runs used (default:
    every run with all four models). Pearson is exact (streamed in float64
    chunks) unless ``pearson_max_elements``; Spearman ranks a deterministic
    random subset of ``spearman_max_elements`` positions (the same for all four
    tasks). Tables: ``correlations`` (per run), ``summary`` (mean, std over runs),
    ``top_examples``; LaTeX: one table per kind × correlation.
    """
    start = time.perf_counter()
    require_dataset(EXPERIMENT, dataset)
    check_positive_int("n_train", n_train)
    hub = models or ModelHub(device=device)
    dev = to_device(device) if device is not None else hub.device
    check_model_source(model_source)
    complete, partial = complete_runs(hub, dataset, model_source)
    if runs is not None:
        complete = [r for r in complete if r in set(runs)]
    if not complete and model_source == "study":
        raise ExperimentSkipped(EXPERIMENT, dataset, f"no run has all four of the study's pretext models; "
                                f"{study_hint(dataset)}")
    if not complete:
        raise ExperimentSkipped(
            EXPERIMENT, dataset,
            f"no run{' of ' + str(list(runs)) if runs is not None else ''} has all four pretext models "
            f"({', '.join(TASKS)}) trained in {hub.root}"
            + (f" (incomplete runs: {partial})" if partial else "")
            + f"; train with `python -m lfx_engine train '{dataset}_pretext_*'`")
    result = ExperimentResult(EXPERIMENT, dataset, n_runs=len(complete))
    spec = get_spec(dataset)
    test = load_split(dataset, "test")
    x_test = take_first(test.x, n_test)
    y_test = test.y[: len(x_test)]
    train = load_split(dataset, "train")
    train_idx = balanced_subset_indices(train.y, n_train, spec.n_classes).numpy()
    x_train, y_train = train.x[train_idx], train.y[train_idx]
    test_idx = np.arange(len(x_test))
    overlay_rows = first_per_class(y_test, spec.n_classes, n_overlays)
    report = Reporter(progress, log, total=len(complete) * len(TASKS))

    corr_rows, top_rows = [], []
    matrices: dict[tuple[str, str], list[np.ndarray]] = {(k, c): [] for k in KINDS for c in CORRELATIONS}
    overlay_maps: dict[str, np.ndarray] = {}
    overlay_top: dict[str, np.ndarray] = {}
    n_elements: dict[str, int] = {}
    for r_i, run in enumerate(complete):
        feats, exs = [], []
        for t_i, task in enumerate(TASKS):
            name = entry_name(dataset, task, run, model_source)
            report.log(f"{EXPERIMENT}/{dataset}: run {run}, {task} ({r_i * len(TASKS) + t_i + 1}/"
                       f"{len(complete) * len(TASKS)})")
            attr = abs_gradient_shap(result, hub, name, dataset, x_test, seed=seed, batch_size=batch_size,
                                     device=dev, use_cache=use_cache)
            h_test = latents(result, hub, name, dataset, "test", test_idx, x_test, device=dev, use_cache=use_cache)
            h_train = latents(result, hub, name, dataset, "train", train_idx, x_train, device=dev,
                              use_cache=use_cache)
            dknn = dknn_scores(h_test, h_train, device=dev).numpy()
            feats.append(attr)
            exs.append(dknn)
            top = dknn.argmax(axis=1)
            for row in overlay_rows:
                top_rows.append({"run": run, "task": task, "test_index": int(row), "test_label": int(y_test[row]),
                                 "top1_train_index": int(train_idx[top[row]]),
                                 "top1_train_label": int(y_train[top[row]]),
                                 "same_label": bool(int(y_test[row]) == int(y_train[top[row]]))})
            if r_i == 0:
                overlay_maps[task] = attr[overlay_rows].mean(axis=1)  # display: mean over channels
                overlay_top[task] = top[overlay_rows]
            result.checkpoints.append(hub.describe(name))
            report.step()
        for kind, arrays in (("features", feats), ("examples", exs)):
            n_elements[kind] = int(arrays[0].size)
            for corr in CORRELATIONS:
                cap = spearman_max_elements if corr == "spearman" else pearson_max_elements
                mat = pooled_correlation_matrix(arrays, corr, max_elements=cap, seed=seed)
                matrices[(kind, corr)].append(mat)
                for a in range(len(TASKS)):
                    for b in range(len(TASKS)):
                        corr_rows.append({"run": run, "kind": kind, "correlation": corr, "task_a": LABELS[a],
                                          "task_b": LABELS[b], "value": float(mat[a, b]),
                                          "n_elements": n_elements[kind],
                                          "n_used": min(n_elements[kind], cap) if cap else n_elements[kind]})
        del feats, exs

    correlations = pd.DataFrame(corr_rows)
    ceiling = noise_ceiling(hub, dataset, complete, model_source, x_test, test_idx, x_train, train_idx, seed=seed,
                            batch_size=batch_size, device=dev, use_cache=use_cache,
                            spearman_max_elements=spearman_max_elements, pearson_max_elements=pearson_max_elements,
                            log=report.log)
    versus = against_ceiling(correlations, ceiling)
    summary_rows = []
    for (kind, corr), mats in matrices.items():
        mean, std = mean_std(mats, ddof=1)
        low, high = np.min(mats, axis=0), np.max(mats, axis=0)
        for a in range(len(TASKS)):
            for b in range(len(TASKS)):
                summary_rows.append({"kind": kind, "correlation": corr, "task_a": LABELS[a], "task_b": LABELS[b],
                                     "mean": float(mean[a, b]), "std": float(std[a, b]), "low": float(low[a, b]),
                                     "high": float(high[a, b]), "n_runs": len(mats)})
        table = mean_std_table(mats, LABELS, ddof=1, decimals=2)
        result.latex[f"{kind}_{corr}"] = latex_table(
            table, caption=f"{spec.title} pretext {kind}: pooled {corr.capitalize()} correlation across tasks, "
                           f"{spread_name(len(mats))} over {len(mats)} run(s)",
            label=f"tab:pretext_{dataset}_{kind}_{corr}")
    summary = pd.DataFrame(summary_rows)
    off = summary[summary["task_a"] != summary["task_b"]]
    result.tables = {"correlations": correlations, "summary": summary, "top_examples": pd.DataFrame(top_rows),
                     "noise_ceiling": ceiling, "against_ceiling": versus}
    result.figures = {"correlations": _heatmaps(summary, spec.title),
                      "overlays": _overlays(x_test, y_test, overlay_rows, overlay_maps, overlay_top, x_train,
                                            complete[0], spec)}
    result.summary = {
        "claim": "explanations of different pretext tasks are weakly correlated (off-diagonal clearly below 1)",
        "mean_off_diagonal": {f"{k}_{c}": float(g["mean"].mean()) for (k, c), g in off.groupby(["kind", "correlation"])},
        "max_off_diagonal": {f"{k}_{c}": float(g["mean"].max()) for (k, c), g in off.groupby(["kind", "correlation"])},
        "noise_ceiling": {f"{k}_{c}_{t}": float(g["value"].mean())
                          for (k, c, t), g in ceiling.groupby(["kind", "correlation", "task"])},
        "against_ceiling": {f"{r.kind}_{r.correlation}_{r.task_a}-{r.task_b}": r.verdict for r in versus.itertuples()},
    }
    result.params = {"runs": complete, "partial_runs_ignored": partial, "tasks": list(TASKS), "n_test": len(x_test),
                     "n_test_available": len(test), "n_train": len(train_idx),
                     "features": "|GradientShap| (n_samples=5, zero baseline) of each encoder, all channels/pixels",
                     "examples": "DKNN 1/(‖h_test − h_train‖² + 1e-8), inputs in [0,1]",
                     "n_elements": n_elements,
                     "pearson": "exact, float64 chunks" if pearson_max_elements is None
                     else f"subsample of {pearson_max_elements} positions",
                     "spearman": f"deterministic random subset of {spearman_max_elements} positions (seed {seed}), "
                                 "the same for all tasks" if spearman_max_elements else "exact",
                     "std": f"sample std over runs (ddof=1; the earlier code used ddof=0); below "
                            f"{MIN_RUNS_FOR_STD} runs only the range (low, high)",
                     "overlay_run": complete[0], "overlay_test_rows": overlay_rows, "device": str(dev)}
    result.seeds = {"gradient_shap_seed": seed, "subsample_seed": seed}
    if len(complete) < 5:
        result.notes.append(f"{len(complete)} run(s) used (full protocol: 5); std over fewer runs is less reliable"
                            + (" and undefined for one run" if len(complete) == 1 else ""))
    for kind in KINDS:
        cap = spearman_max_elements
        if cap and n_elements.get(kind, 0) > cap:
            result.notes.append(f"{kind}: Spearman on {cap:,} of {n_elements[kind]:,} values per task (subsampled)")
    result.wall_time_s = time.perf_counter() - start
    return result


def noise_ceiling(hub: ModelHub, dataset: str, runs: Sequence[int], model_source: str, x_test: torch.Tensor,
                  test_idx: np.ndarray, x_train: torch.Tensor, train_idx: np.ndarray, *, seed: int, batch_size: int,
                  device: torch.device, use_cache: bool, spearman_max_elements: int | None,
                  pearson_max_elements: int | None, log: LogFn | None = None) -> pd.DataFrame:
    """The same task's explanations across runs (different training seeds): how alike two explanations can be.

    One row per (kind, correlation, task, pair of runs). Cross-task correlations
    are only evidence of different explanations where they fall below this
    ceiling. Needs at least two runs; the arrays come from the disk cache.
    """
    rows: list[dict[str, Any]] = []
    columns = ["kind", "correlation", "task", "run_a", "run_b", "value"]
    if len(runs) < 2:
        return pd.DataFrame(rows, columns=columns)
    pairs = [(i, j) for i in range(len(runs)) for j in range(i + 1, len(runs))]
    for t_i, task in enumerate(TASKS):
        if log is not None:
            log(f"{EXPERIMENT}/{dataset}: noise ceiling of {task} over {len(runs)} runs")
        feats, exs = [], []
        for run in runs:
            name = entry_name(dataset, task, run, model_source)
            feats.append(abs_gradient_shap(None, hub, name, dataset, x_test, seed=seed, batch_size=batch_size,
                                           device=device, use_cache=use_cache))
            h_test = latents(None, hub, name, dataset, "test", test_idx, x_test, device=device, use_cache=use_cache)
            h_train = latents(None, hub, name, dataset, "train", train_idx, x_train, device=device,
                              use_cache=use_cache)
            exs.append(dknn_scores(h_test, h_train, device=device).numpy())
        for kind, arrays in (("features", feats), ("examples", exs)):
            for corr in CORRELATIONS:
                cap = spearman_max_elements if corr == "spearman" else pearson_max_elements
                mat = pooled_correlation_matrix(arrays, corr, max_elements=cap, seed=seed)
                rows += [{"kind": kind, "correlation": corr, "task": LABELS[t_i], "run_a": runs[i], "run_b": runs[j],
                          "value": float(mat[i, j])} for i, j in pairs]
        del feats, exs
    return pd.DataFrame(rows, columns=columns)


def against_ceiling(correlations: pd.DataFrame, ceiling: pd.DataFrame) -> pd.DataFrame:
    """Each cross-task correlation (one value per run) against the two tasks' noise ceilings (one per run pair).

    ``below the noise ceiling`` when every run's cross-task value lies below
    every within-task value of both tasks; ``within the noise`` when the
    cross-task range overlaps both ceilings' ranges entirely from above;
    otherwise ``not resolved``. Without a ceiling (one run) nothing is resolved.
    """
    rows = []
    cross = correlations[correlations["task_a"] < correlations["task_b"]]
    for (kind, corr, a, b), g in cross.groupby(["kind", "correlation", "task_a", "task_b"], sort=False):
        ca = ceiling[(ceiling["kind"] == kind) & (ceiling["correlation"] == corr) & (ceiling["task"] == a)]["value"]
        cb = ceiling[(ceiling["kind"] == kind) & (ceiling["correlation"] == corr) & (ceiling["task"] == b)]["value"]
        values = g["value"]
        if ca.empty or cb.empty:
            verdict = "not resolved"
        elif values.max() < min(ca.min(), cb.min()):
            verdict = "below the noise ceiling"
        elif values.min() >= max(ca.max(), cb.max()):
            verdict = "within the noise"
        else:
            verdict = "not resolved"
        rows.append({"kind": kind, "correlation": corr, "task_a": a, "task_b": b, "cross_mean": float(values.mean()),
                     "cross_low": float(values.min()), "cross_high": float(values.max()),
                     "ceiling_a_mean": float(ca.mean()) if len(ca) else np.nan,
                     "ceiling_a_low": float(ca.min()) if len(ca) else np.nan,
                     "ceiling_b_mean": float(cb.mean()) if len(cb) else np.nan,
                     "ceiling_b_low": float(cb.min()) if len(cb) else np.nan, "verdict": verdict})
    return pd.DataFrame(rows)


def _heatmaps(summary: pd.DataFrame, title: str) -> alt.VConcatChart:
    """Mean correlation matrices (features/examples × Pearson/Spearman) labelled mean ± std (range below 3 runs)."""
    data = summary.copy()
    data["label"] = [spread_label(r.mean, r.std, r.low, r.high) for r in data.itertuples()]
    charts = []
    for kind in KINDS:
        row = []
        for corr in CORRELATIONS:
            part = data[(data["kind"] == kind) & (data["correlation"] == corr)]
            base = alt.Chart(part).encode(x=alt.X("task_b:N", sort=list(LABELS), title=None),
                                          y=alt.Y("task_a:N", sort=list(LABELS), title=None))
            rect = base.mark_rect().encode(color=alt.Color("mean:Q", scale=alt.Scale(domain=[-1, 1],
                                                                                      scheme="redblue",
                                                                                      reverse=True),
                                                           title="correlation"))
            text = base.mark_text(fontSize=10).encode(text="label:N")
            row.append((rect + text).properties(title=f"{kind}: {corr.capitalize()}", width=220, height=220))
        charts.append(alt.hconcat(*row))
    return alt.vconcat(*charts).properties(title=f"pretext: {title}")


def _overlays(x_test: torch.Tensor, y_test: torch.Tensor, rows: list[int], maps: dict[str, np.ndarray],
              top: dict[str, np.ndarray], x_train: torch.Tensor, run: int, spec: Any) -> Any:
    """Grid: test image | saliency per task | top-1 training example per task, one row per class."""
    fig, axes = new_figure(max(1, len(rows)), 1 + 2 * len(TASKS))
    for i, row in enumerate(rows):
        axes[i, 0].imshow(image_for_display(x_test[row]), cmap="gray", vmin=0, vmax=1)
        axes[i, 0].set_ylabel(spec.class_names[int(y_test[row])], fontsize=7)
        for t, task in enumerate(TASKS):
            axes[i, 1 + t].imshow(image_for_display(x_test[row]), cmap="gray", vmin=0, vmax=1)
            axes[i, 1 + t].imshow(maps[task][i], cmap="inferno", alpha=0.6)
            axes[i, 1 + len(TASKS) + t].imshow(image_for_display(x_train[int(top[task][i])]), cmap="gray", vmin=0,
                                               vmax=1)
            if i == 0:
                axes[0, 1 + t].set_title(f"{LABELS[t]}\nsaliency", fontsize=7)
                axes[0, 1 + len(TASKS) + t].set_title(f"{LABELS[t]}\ntop-1 example", fontsize=7)
    axes[0, 0].set_title("test image", fontsize=7)
    fig.suptitle(f"pretext {spec.title}, run {run}: |GradientShap| and DKNN top-1", fontsize=9)
    return fig
