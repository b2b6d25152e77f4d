"""Pretext correlations (paper §4.2, METHOD §7.3): do encoders trained on different pretext tasks explain alike?

Four models share one encoder architecture per run: Reconstruction, Denoising and
Inpainting autoencoders and a Classifier. Their label-free ``|GradientShap|`` maps
(features) and DKNN scores against the balanced training subset (examples) are
correlated task by task over a test subset: 4×4 pooled Pearson (or Spearman)
matrices, mean ± std over the complete runs (the range below 3 runs). Computed by ``run_pretext`` on an
explicit request (or instantly from the disk cache it shares with
``python -m lfx_engine reproduce pretext``). Below: the four encoders' maps for
the selected sample, and each one's most important training example.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from lfx_engine.metrics import spread_name
from lfx_ui import charts, images, router, state, study
from lfx_ui import study_charts as sc
from lfx_ui.engine import get_explorer, sample_attribution, user_errors
from lfx_ui.widgets import sample_picker

TASKS = ("reconstruction", "denoising", "inpainting", "classification")
TITLES = dict(zip(TASKS, sc.TASK_ORDER))
N_TRAIN = 1000  # balanced training subset of METHOD §6 for DKNN

router.ensure_routed()
explorer = get_explorer()
st.title("Pretext correlations")
st.caption("Explanations depend on the pretext task: if the four encoders explained alike, every off-diagonal "
           "correlation would be close to 1 (paper §4.2).")
if (message := state.url_error()):
    st.warning(message)

datasets = [d for d in explorer.datasets_with_models() if explorer.models(d, experiment="pretext")]
if not datasets:
    study.missing_models("pretext-task models", ["python -m lfx_engine train 'mnist_pretext_*'",
                                                 "python -m lfx_engine train 'cifar10_pretext_*'"],
                         "Each run needs four models: reconstruction, denoising, inpainting and classification.")
    st.stop()
picked = study.pick_dataset("pre", datasets, "pretext-task models")
if picked is None:
    st.stop()
dataset = picked  # a name that is never None: the None check above does not reach into the lambda below
complete, partial = explorer.pretext_runs(dataset)
runs = sorted({m.run for m in explorer.models(dataset, experiment="pretext")})
any_model = next(iter(explorer.pretext_models(dataset, runs[0]).values()))
size = None
with user_errors():
    size = explorer.test_size(any_model)
if size is None:
    st.stop()

corr = st.sidebar.radio("Correlation", ["pearson", "spearman"], **state.bind("pre_corr", str.capitalize),
                        horizontal=True, help="Pearson is exact; Spearman ranks a deterministic random subset of "
                                              "at most 2 M values per task when the arrays are larger.")
n_test = study.subset_choice("pre", size, 500)

# ---------------------------------------------------------------------------- correlation matrices
st.subheader("Task-by-task correlation of the explanations")
if partial:
    st.info(f"Run(s) {', '.join(map(str, partial))} lack some of the four models and are left out. Complete them "
            f"with `python -m lfx_engine train '{dataset}_pretext_*'`.", icon=":material/info:")
result = None
if not complete:
    study.missing_models("complete pretext runs", [f"python -m lfx_engine train '{dataset}_pretext_*'"],
                         "A run needs all four models (reconstruction, denoising, inpainting, classification).")
else:
    with user_errors():
        subset = f"{'all' if n_test is None else f'the first {n_test:,}'} test inputs"
        if explorer.pretext_cached(dataset, n_test, N_TRAIN):
            result = explorer.pretext_study(dataset, n_test, N_TRAIN)
        else:
            jobs = len(complete) * len(TASKS)
            slot = st.empty()
            offer = slot.container()
            work = jobs * (n_test or size)  # encoder × input
            offer.info(f"Not computed yet for {subset}: {jobs} encoders × (|GradientShap| over the subset + DKNN "
                       f"against {N_TRAIN} training images). This takes {study.cost('pretext', work, 0.01).text()}; "
                       "the result is cached on disk.", icon=":material/hourglass_top:")
            offer.button(f"Compute the correlations ({len(complete)} run(s), {subset})", type="primary",
                         key="pre_compute", on_click=study.request, args=("pre_go",))
            if st.session_state.pop("pre_go", False):
                result = study.run_with_status(
                    f"run_pretext on {subset} × {len(complete)} run(s)…",
                    "Correlations computed (cached on disk for next time)",
                    lambda progress, log: explorer.pretext_study(dataset, n_test, N_TRAIN, progress=progress,
                                                                 log=log), unit="encoders",
                    rate=("pretext", work))
                slot.empty()
if result is not None:
    summary = result["summary"]
    part = summary[summary["correlation"] == corr]
    n_runs = int(part["n_runs"].max())
    cols = st.columns(2)
    for col, kind, what in ((cols[0], "features", "feature importance (|GradientShap|)"),
                            (cols[1], "examples", "example importance (DKNN)")):
        frame = part[part["kind"] == kind]
        chart = sc.correlation_heatmap(
            frame, f"{kind.capitalize()}: {corr.capitalize()}",
            f"{what}; {spread_name(n_runs)} over {n_runs} run(s), n = {result['n_test']:,}")
        with col:
            st.altair_chart(chart, width="stretch")
            charts.downloads(f"pretext_{dataset}_{kind}_{corr}_n{result['n_test']}", csv=frame, chart=chart,
                             key=f"pre_{kind}")
    off = part[part["task_a"] != part["task_b"]]
    metric_cols = st.columns(4)
    for col, kind in zip(metric_cols[:2], ("features", "examples")):
        values = off[off["kind"] == kind]["mean"]
        col.metric(f"Mean off-diagonal ({kind})", f"{values.mean():.3f}",
                   help="Average correlation between different tasks; 1 would mean the tasks explain alike.")
    metric_cols[2].metric("Complete runs", n_runs)
    metric_cols[3].metric("Test inputs", f"{result['n_test']:,}")
    st.markdown("**Against the noise ceiling**")
    table = sc.noise_ceiling_table(result.get("against_ceiling", pd.DataFrame()),
                                   result.get("noise_ceiling", pd.DataFrame()), corr)
    if table.empty:
        st.info("The noise ceiling (each task against itself across runs) needs at least two complete runs.",
                icon=":material/info:")
    else:
        st.caption("Two encoders of the **same** task, trained with different seeds, do not explain alike either. "
                   "A pair of tasks is *below the noise ceiling* only when every run's cross-task correlation lies "
                   "below every same-task correlation of both tasks; otherwise the difference is not resolved. "
                   "Ceilings: mean [range] over the pairs of runs.")
        st.dataframe(table, hide_index=True, width="stretch")
        charts.downloads(f"pretext_{dataset}_noise_ceiling_{corr}_n{result['n_test']}", csv=table,
                         key="pre_ceiling")
    study.notes(result["notes"])
    with st.expander("Per-run matrices (table)"):
        st.dataframe(result["correlations"], hide_index=True, width="stretch")
        charts.downloads(f"pretext_{dataset}_per_run_n{result['n_test']}", csv=result["correlations"],
                         key="pre_per_run")

# ---------------------------------------------------------------------------- the selected sample
st.divider()
st.subheader("The four encoders on the selected sample")
default_run = complete[0] if complete else runs[0]
run = st.selectbox("Run", runs, index=runs.index(default_run), **state.bind("pre_run", lambda r: f"run {r}" + ("" if r in complete else " (incomplete)")))
models = explorer.pretext_models(dataset, run)
pick_col, maps_col = st.columns([1, 4])
sample = None
with user_errors():
    sample = sample_picker(next(iter(models.values())), "pre", container=pick_col)
if sample is None:
    st.stop()
x = explorer.sample(next(iter(models.values())), sample)[0][0].numpy()
maps, tiles, rows = {}, [], []
with maps_col:
    columns = st.columns(len(TASKS))
    for col, task in zip(columns, TASKS):
        name = models.get(task)
        with col:
            st.markdown(f"**{TITLES[task]}**")
            if name is None:
                st.caption(f"not trained: `python -m lfx_engine train {dataset}_pretext_{task}_run{run}`")
                continue
            with user_errors(), st.spinner(f"{TITLES[task]}…"):
                amap = explorer.display_map(sample_attribution(name, sample, "gradient_shap")[None])[0]
                top = study.top_example(name, sample, N_TRAIN)
                maps[task] = amap
                shown = [images.heatmap(amap, size=140), images.overlay(x, amap, size=140),
                         images.input_image(top["image"], size=140)]
                tiles.extend(shown)
                st.image(shown, caption=["|GradientShap|", "overlay",
                                         f"top-1 train #{top['train_index']} · class {top['class']}"],
                         width=140, output_format="PNG")
                rows.append({"task": TITLES[task], "model": name, "peak_abs_attr": float(np.max(amap)),
                             "top1_train_index": top["train_index"], "top1_class": top["class"],
                             "top1_dknn_score": top["score"]})
if rows:
    table = pd.DataFrame(rows)
    _, label = explorer.sample(next(iter(models.values())), sample)
    same = int((table["top1_class"] == explorer.label_name(dataset, label)).sum())
    st.caption(f"Heat maps: label-free |GradientShap| of each encoder (zero baseline), scaled to its own maximum. "
               f"Top-1: the training image (of the {N_TRAIN} class-balanced ones) closest in that encoder's latent "
               f"space (DKNN); {same}/{len(table)} share the sample's class.")
    charts.downloads(f"pretext_{dataset}_run{run}_sample{sample}", csv=images.attribution_table(maps),
                     png=charts.image_png(images.grid(tiles, 3)), key="pre_maps")
    with st.expander("Top-1 examples (table)"):
        st.dataframe(table, hide_index=True, width="stretch")
