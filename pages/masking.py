"""Masking shift (paper §4.1, METHOD §7.1): masking the features an attribution method ranks most important
should move the representation more than masking random ones.

For each chosen method and each chosen control (the seeded random ranking always; optionally random among
the informative features, the model-free |x − x̄| ranking and the same method on a randomly re-initialised
encoder), every test input of a
subset (the first ``n`` of the test split) has its own top-M pixels/time steps
set to the baseline; the chart shows the mean shift ‖f(x) − f(x̃)‖² with its 95%
confidence band. The dataset-wide result is cached on disk by checkpoint and
parameters, so it is computed once. Below: the same curve for the selected
sample, and what the masked input looks like.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from lfx_engine.metrics.masking import DEFAULT_PERCENTS
from lfx_ui import charts, figures, images, router, state
from lfx_ui.engine import (
    get_explorer,
    masked_views,
    pick_model,
    progress_reporter,
    sample_masking_curve,
    stop_button,
    user_errors,
)
from lfx_ui.widgets import sample_picker

DEFAULT_METHODS = ("gradient_shap", "integrated_gradients", "saliency")
#: Optional reference curves (the random control is always drawn).
EXTRA_CONTROLS = ("random_informative", "model_free", "random_init")
CONTROL_HELP = ("Reference curves a reviewer asks for. Random among informative features: a random order of the "
                "features that differ from the baseline (masking a black pixel with black changes nothing). "
                "|x − x̄|: the largest input values first, no model involved. Random encoder: the same method on "
                "this architecture with freshly initialised weights (the model-randomisation check); if it "
                "matches the trained encoder, the explanation reflects the input, not what the model learned.")

router.ensure_routed()
explorer = get_explorer()
st.title("Masking shift")
st.caption("Mask each input's most important features (by each method) and measure how far its representation "
           "moves. A faithful method moves it more than the random control at every masking level.")
if (message := state.url_error()):
    st.warning(message)

choice = pick_model("masking")
if choice is None:
    st.stop()
name, dataset = choice.name, choice.dataset
series = explorer.is_series(dataset)
size = None
with user_errors():
    size = explorer.test_size(name)
if size is None:
    st.stop()

left, right = st.columns([3, 2])
methods = state.choose_many("methods", "Attribution methods (the random control is always added)",
                            explorer.feature_methods(name), widget_key="mask_methods", default=DEFAULT_METHODS,
                            format_func=charts.title, container=left)
controls = state.choose_many("controls", "Reference controls (random is always drawn)", EXTRA_CONTROLS,
                             widget_key="mask_controls", default=(), format_func=charts.title, container=left)
left.caption(CONTROL_HELP)
controls = ["random", *controls]
default_n = min(size, 100 if series else 200)
limit = min(size, 2000)
if st.session_state.get("mask_n", 0) > limit:  # a larger test split was chosen before
    st.session_state["mask_n"] = limit
# the widget's state wins once it exists; a default next to it would only log a duplication warning
initial_n = None if "mask_n" in st.session_state else default_n
small = limit < 20  # a user's small test split: any size from 1
n_samples = right.slider("Test inputs in the subset (the first n of the test split)", min_value=1 if small else 10,
                         max_value=limit, value=initial_n, step=1 if small else 10, **state.bind("mask_n"),
                         help="Larger subsets give tighter bands but take longer the first time "
                              "(results are cached on disk afterwards).")
if not methods:
    st.info("Pick at least one attribution method.")
    st.stop()

# ---------------------------------------------------------------------------- dataset-wide curves
st.subheader(f"Representation shift over {n_samples} test inputs")
summary = per_example = None
with user_errors():
    if explorer.masking_cached(name, methods, n_samples, controls):
        summary, per_example = explorer.masking_curves(name, methods, n_samples, controls=controls)
    elif st.session_state.get("mask_paused"):  # stopped: wait for the user instead of starting over
        st.info("The masking curves were stopped before they finished.", icon=":material/stop_circle:")
        st.button("Compute the masking curves", type="primary", key="mask_resume",
                  on_click=lambda: st.session_state.pop("mask_paused", None))
    else:
        twice = " × 2 (random encoder)" if "random_init" in controls else ""
        with st.status(f"Computing masking curves: {n_samples} inputs × {len(methods)} method(s){twice} + "
                       f"{len(controls) - ('random_init' in controls)} input control(s) "
                       "(first time only; cached on disk afterwards)…", expanded=True) as status:
            remove_stop = stop_button("mask_stop", "the masking curves", flag="mask_paused")
            update, _ = progress_reporter("attributions and masking")
            summary, per_example = explorer.masking_curves(name, methods, n_samples, progress=update,
                                                           controls=controls)
            remove_stop()
            status.update(label="Masking curves computed (cached for next time)", state="complete",
                          expanded=False)
if summary is not None:
    chart = charts.masking_curves(summary, f"{choice.label} — mean shift with 95% CI, n = {n_samples}")
    st.altair_chart(chart, width="stretch")
    charts.downloads(f"masking_{name}_n{n_samples}", csv=summary, chart=chart, key="mask_curves")
    table = summary.pivot_table(index="percent", columns="method", values="mean", sort=False)
    table.columns = [charts.title(c) for c in table.columns]
    areas = explorer.masking_areas(per_example, methods, controls)
    st.markdown("**Area between curves** (shift integrated over the share masked; the method's area minus the "
                "control's, with a paired 95% interval over the inputs)")
    vs_random = areas[areas["control"] == "random"]
    cols = st.columns(min(4, len(vs_random)) or 1)
    for i, row in enumerate(vs_random.itertuples()):
        cols[i % len(cols)].metric(f"{charts.title(row.method)} − random", f"{row.difference:.3g}",
                                   delta=row.verdict, delta_color="normal" if row.verdict == "above" else
                                   "inverse" if row.verdict == "below" else "off",
                                   help=f"95% interval {row.ci_low:.3g} … {row.ci_high:.3g}; random's own area "
                                        f"{row.control_area:.3g}")
    if len(controls) > 1:
        shown = areas.assign(method=areas["method"].map(charts.title),
                             control=[("same method on a random encoder" if c == "random_init" else charts.title(c))
                                      for c in areas["control"]])
        st.dataframe(shown[["method", "control", "area", "control_area", "difference", "ci_low", "ci_high",
                            "verdict"]], width="stretch", hide_index=True)
    charts.downloads(f"masking_areas_{name}_n{n_samples}", csv=areas, key="mask_areas")

    def per_example_csv() -> bytes:
        assert per_example is not None  # masking_curves returns it together with summary
        return per_example.to_csv(index=False).encode()

    with st.expander("Mean shift per masking level (table)"):
        st.dataframe(table, width="stretch")
        st.download_button("⬇ per-example shifts (CSV)", data=per_example_csv,
                           file_name=f"masking_{name}_n{n_samples}_per_example.csv", mime="text/csv",
                           on_click="ignore", key="mask_per_example")

# ---------------------------------------------------------------------------- selected sample
st.divider()
st.subheader("The selected sample")
pick_col, curve_col = st.columns([1, 3])
sample = None
with user_errors():
    sample = sample_picker(name, "mask", container=pick_col)
if sample is not None:
    with curve_col, user_errors():
        curve = sample_masking_curve(name, sample, methods)
        sample_chart = charts.sample_masking_curve(curve, f"Test sample #{sample}: shift vs % masked")
        st.altair_chart(sample_chart, width="stretch")
        charts.downloads(f"masking_{name}_sample{sample}", csv=curve, chart=sample_chart, key="mask_sample_curve")

    view_method = st.selectbox("Show the masked input for", [*methods, "random"],
                               **state.bind("mask_view_method", charts.title))
    with user_errors():
        views, counts, masks = masked_views(name, sample, view_method)
        x_sample, label = explorer.sample(name, sample)
        levels = [f"{p}% masked (M = {m})" for p, m in zip(DEFAULT_PERCENTS, counts)]
        if series:
            original = x_sample[0, :, 0].numpy()
            frame = pd.concat([pd.DataFrame({"t": np.arange(v.shape[0]), "original": original, "value": v[:, 0],
                                             "masked": mk, "level": lvl, "percent": p})
                               for v, mk, p, lvl in zip(views, masks, DEFAULT_PERCENTS, levels)],
                              ignore_index=True)
            masked_chart = charts.ecg_masked_views(
                frame, f"Sample #{sample}: its top time steps by {charts.title(view_method)} set to the baseline")
            st.altair_chart(masked_chart)
            charts.downloads(f"masked_{name}_sample{sample}_{view_method}", csv=frame, chart=masked_chart,
                             key="mask_views")
        else:
            tiles = [images.masked_image(v, mk, size=112) for v, mk in zip(views, masks)]
            st.image(tiles, caption=levels, width=112, output_format="PNG")
            st.caption("Cyan marks the masked pixels (set to the baseline), so masking shows even where a pixel "
                       "already equals the baseline.")

            def masked_table() -> pd.DataFrame:
                frames = []
                for v, mk, p, m in zip(views, masks, DEFAULT_PERCENTS, counts):
                    c, r, q = np.indices(v.shape)
                    frames.append(pd.DataFrame({"percent": p, "M": m, "channel": c.ravel(), "row": r.ravel(),
                                                "col": q.ravel(), "value": v.ravel(),
                                                "masked": np.broadcast_to(mk, v.shape).ravel()}))
                return pd.concat(frames, ignore_index=True)

            title = (f"{choice.label} · test #{sample} (class {explorer.label_name(dataset, label)}) · masked by "
                     f"{charts.title(view_method)}")
            charts.downloads(f"masked_{name}_sample{sample}_{view_method}", csv=masked_table, key="mask_views",
                             png=lambda: figures.figure_png(figures.labelled_figure(
                                 title, [("masked input", [figures.Panel(image=t, caption=c)
                                                           for t, c in zip(tiles, levels)])],
                                 note="Cyan: masked pixels, set to the baseline.")))
