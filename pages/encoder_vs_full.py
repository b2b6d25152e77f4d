"""Encoder vs full model (the reproduction study's extension, METHOD §7.6).

Does explaining a classifier's encoder (its latent representation) give the same
map as explaining the whole classifier (its logits), both label-free? For each
trained classifier and each of Integrated Gradients, GradientShap and Saliency,
the per-image Pearson between the two |maps| over the pixels whose input is
non-zero (dead pixels excluded), averaged per classifier; bars show the mean ±
1.96·SEM over classifiers beside the reproduction study's values (MNIST). Computed
by ``run_encoder_vs_full`` on a test subset, on request or from the disk cache.
"""
from __future__ import annotations

import numpy as np
import streamlit as st

from lfx_engine.data import get_spec
from lfx_engine.explorer import METHOD_TITLES
from lfx_ui import charts, images, router, state, study
from lfx_ui import study_charts as sc
from lfx_ui.engine import get_explorer, user_errors
from lfx_ui.widgets import sample_picker

METHODS = ("integrated_gradients", "gradient_shap", "saliency")

router.ensure_routed()
explorer = get_explorer()
st.title("Encoder vs full model")
st.caption("Label-free maps of a classifier's encoder (⟨f(x), f(x̃)⟩ on the latent) against those of the whole "
           "classifier (⟨logits(x), logits(x̃)⟩): how similar are they, per attribution method?")
if (message := state.url_error()):
    st.warning(message)

if not explorer.classifier_models():
    study.missing_models("pretext classifiers", ["python -m lfx_engine train 'mnist_pretext_classification_*'"],
                         "The study compares the encoder and the full model of each pretext-run classifier.")
    st.stop()
choice = study.pick_study_model("evf", ("classification",), "classifiers")
if choice is None:
    st.stop()
name, dataset = choice.name, choice.dataset
classifiers = explorer.classifier_models(dataset)
size = explorer.test_size(name)
n_test = study.subset_choice("evf", size, 500)
title = get_spec(dataset).title

# ---------------------------------------------------------------------------- per-method bars
st.subheader("Per-image Pearson between the encoder's and the full classifier's maps")
subset = f"{'all' if n_test is None else f'the first {n_test:,}'} test inputs"
result = None
with user_errors():
    if explorer.encoder_vs_full_cached(dataset, n_test):
        result = explorer.encoder_vs_full_study(dataset, n_test)
    else:
        slot = st.empty()
        offer = slot.container()
        work = len(classifiers) * (n_test or size)  # classifier × input
        offer.info(f"Not computed yet for {subset}: {len(classifiers)} classifier(s) × 3 methods × 2 models "
                   f"(encoder and full). This takes {study.cost('encoder_vs_full', work, 0.02).text()}; cached on "
                   "disk.", icon=":material/hourglass_top:")
        offer.button(f"Compute ({len(classifiers)} classifier(s), {subset})", type="primary", key="evf_compute",
                     on_click=study.request, args=("evf_go",))
        if st.session_state.pop("evf_go", False):
            result = study.run_with_status(
                f"run_encoder_vs_full on {subset}…", "Correlations computed (cached on disk for next time)",
                lambda progress, log: explorer.encoder_vs_full_study(dataset, n_test, progress=progress, log=log),
                unit="classifier × method pairs", rate=("encoder_vs_full", work))
            slot.empty()
if result is not None:
    summary = result["summary"]
    n_models = int(summary["n_models"].max())
    n_images = int(result["per_model"]["n_images"].max())
    chart = sc.encoder_vs_full_bars(summary, f"ours ({n_models} classifier(s), {n_images:,} images)",
                                    f"{title}: encoder vs full classifier")
    st.altair_chart(chart, width="stretch")
    charts.downloads(f"encoder_vs_full_{dataset}_n{n_images}", csv=summary, chart=chart, key="evf_bars")
    cols = st.columns(len(summary))
    for col, r in zip(cols, summary.sort_values("method", key=lambda m: m.map(METHODS.index)).itertuples()):
        ci = f" ± {r.ci95:.3f}" if np.isfinite(r.ci95) else ""
        ref = (f"study {r.reference_mean:.3f} ± {r.reference_ci95:.3f}" if np.isfinite(r.reference_mean)
               else "no published value")
        col.metric(r.method_title, f"{r.mean:.3f}{ci}", delta=ref, delta_color="off", delta_arrow="off",
                   help="mean over classifiers of the per-image Pearson (live pixels) ± 1.96·SEM; below: the "
                        "reproduction study's value")
    if n_models < 2:
        st.caption("One classifier: no spread over classifiers (the whiskers need at least two). Train more runs "
                   f"with `python -m lfx_engine train '{dataset}_pretext_classification_*'`.")
    st.caption("The reproduction study ran BatchNorm in training mode and had a GradientShap pairing defect; ours are "
               "in eval mode with the corrected pairing, so the values may differ.")
    study.notes(result["notes"])
    with st.expander("Per classifier (table): mean, median and mean r², pooled and mean-map Pearson"):
        st.dataframe(result["per_model"], hide_index=True, width="stretch")
        charts.downloads(f"encoder_vs_full_{dataset}_per_model_n{n_images}", csv=result["per_model"],
                         key="evf_per_model")

# ---------------------------------------------------------------------------- the selected sample
st.divider()
st.subheader(f"The two maps for the selected sample — {choice.label}")
pick_col, maps_col = st.columns([1, 4])
sample = None
with user_errors():
    sample = sample_picker(name, "evf", container=pick_col)
if sample is None:
    st.stop()
x = explorer.sample(name, sample)[0][0].numpy()
maps, tiles = {}, []
with maps_col:
    for method in METHODS:
        with user_errors(), st.spinner(f"{METHOD_TITLES[method]}…"):
            enc, full, r = study.encoder_vs_full_maps(name, sample, method)
            maps[f"{method}:encoder"], maps[f"{method}:full"] = enc, full
            row = [images.heatmap(enc, 140), images.heatmap(full, 140), images.overlay(x, enc, 140),
                   images.overlay(x, full, 140)]
            tiles.extend(row)
            label, img_col = st.columns([1, 4])
            label.markdown(f"**{METHOD_TITLES[method]}**")
            label.metric("Pearson r (live pixels)", "n/a" if not np.isfinite(r) else f"{r:.3f}")
            img_col.image(row, width=140, output_format="PNG",
                          caption=["encoder |map|", "full classifier |map|", "encoder overlay", "full overlay"])
if maps:
    live = (x != 0).any(axis=0)  # a pixel counts when any channel is non-zero
    st.caption(f"Each map is scaled to its own maximum; r is the Pearson correlation of the two maps over the "
               f"{int(live.sum())} pixels where the input is non-zero.")
    charts.downloads(f"encoder_vs_full_{name}_sample{sample}",
                     csv=lambda: images.attribution_table(maps).assign(live=np.tile(live.ravel(), len(maps))),
                     png=charts.image_png(images.grid(tiles, 4)), key="evf_maps")
