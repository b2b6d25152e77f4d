"""Embedding: a 2-D map (PCA, t-SNE or UMAP) of the model's latents over the test split.

Hover a point for its thumbnail, colour by class, a latent unit or an attribution statistic, click a point to
select that test sample and list its nearest training examples, drag a box to explain a group together.
Projections and statistics are computed once and kept in the engine's disk cache.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from lfx_engine.explorer.embedding import PROJECTION_TITLES, PROJECTIONS, STAT_TITLES, umap_available
from lfx_ui import charts, images, router, state
from lfx_ui.engine import current_sample, get_explorer, pick_model, progress_reporter, timed, user_errors

POINT_CHOICES = (500, 2000)  # plus "all"
STAT_CHOICES = (200, 500, 2000)
THUMB_LIMIT = 2000  # hover thumbnails for at most this many plotted points (each is a small PNG in the page)
THUMB_SIZE = 28
GROUP_CAP = 64
NEAREST = 8

router.ensure_routed()
explorer = get_explorer()
st.title("Embedding")
st.caption("Where does the encoder put each test input? A 2-D projection of the latents f(x) of the test split. "
           "Click a point to select it; drag a box to select a group (Vega-Lite has no lasso: the selection is a "
           "rectangle) and explain it together.")
if (message := state.url_error()):
    st.warning(message)

choice = pick_model("embedding")
if choice is None:
    st.stop()
name, dataset = choice.name, choice.dataset
data = None
with user_errors():
    data = explorer.test_data(name)
if data is None:
    st.stop()
x_all, y_all = data
n_test = len(x_all)
sample = current_sample(name)
no_umap = umap_available()
projections = [p for p in PROJECTIONS if not (p == "umap" and no_umap)]
if no_umap:
    st.caption(f"{no_umap}: PCA and t-SNE are offered.")

# ---------------------------------------------------------------------------- settings
top = st.columns(3)
method = top[0].selectbox("Projection", projections, **state.bind("emb_method", lambda p: PROJECTION_TITLES[p]))
point_options = [p for p in POINT_CHOICES if p < n_test] + [n_test]
n_points = top[1].selectbox("Points (first N test inputs)", point_options, index=len(point_options) - 1,
                            **state.bind("emb_points", lambda n: f"all ({n})" if n == n_test else str(n)))
colour_kinds = {"class": "Class", "unit": "A latent unit", "stat": "An attribution statistic"}
if not explorer.class_names(dataset):
    colour_kinds.pop("class")
colour_kind = top[2].selectbox("Colour by", list(colour_kinds), **state.bind("emb_colour", colour_kinds.get))
feature_methods = explorer.feature_methods(name)

# ---------------------------------------------------------------------------- projection
if n_points is None or n_points not in point_options:
    n_points = n_test
frame = None
with user_errors():
    if method == "pca" or explorer.embedding_cached(name, method, n_points):
        with st.spinner(f"Projecting {n_points} latents ({PROJECTION_TITLES[method]})…"):
            frame, seconds = timed(lambda: explorer.embedding(name, method, n_points))
    else:
        st.info(f"{PROJECTION_TITLES[method]} of {n_points} points is computed once (it can take a minute or more "
                "on a small CPU), then kept in the cache.")
        wanted = f"_emb_go_{name}_{method}_{n_points}"  # a flag, not the button's value: it survives reruns
        st.button(f"Compute {PROJECTION_TITLES[method]} on {n_points} points", key="emb_compute", type="primary",
                  on_click=st.session_state.__setitem__, args=(wanted, True))
        if st.session_state.pop(wanted, False):
            with st.spinner(f"Computing {PROJECTION_TITLES[method]} of {n_points} latents…"):
                frame, seconds = timed(lambda: explorer.embedding(name, method, n_points))
            st.caption(f"Computed in {seconds:.1f} s.")
if frame is None:
    st.stop()

# ---------------------------------------------------------------------------- colour
colour, colour_title = "class", "class"
if colour_kind == "unit":
    z = explorer.test_latents(name)[:n_points]
    unit = st.number_input(f"Latent unit (0–{z.shape[1] - 1})", min_value=0, max_value=z.shape[1] - 1, step=1,
                           **state.bind("emb_unit"))
    unit = int(unit or 0)
    frame[f"unit_{unit}"] = z[:, unit]
    colour, colour_title = f"unit_{unit}", f"latent unit {unit}"
elif colour_kind == "stat":
    left, mid, right = st.columns(3)
    stat_method = left.selectbox("Attribution method", feature_methods,
                                 **state.bind("emb_stat_method", charts.title))
    stat = mid.selectbox("Statistic", list(STAT_TITLES), **state.bind("emb_stat", STAT_TITLES.get))
    stat_options = [s for s in STAT_CHOICES if s < n_points] + [n_points]
    n_stat = right.selectbox("Attributed points", stat_options, index=0, **state.bind("emb_stat_points"))
    n_stat = n_stat if n_stat in stat_options else stat_options[0]
    stats = None
    with user_errors():
        if explorer.stats_cached(name, stat_method, n_stat):
            stats = explorer.point_attribution_stats(name, stat_method, n_stat)
        else:
            wanted = f"_emb_stats_{name}_{stat_method}_{n_stat}"
            st.button(f"Attribute {n_stat} points with {charts.title(stat_method)}", key="emb_stats_go",
                      on_click=st.session_state.__setitem__, args=(wanted, True))
        if stats is None and st.session_state.pop(f"_emb_stats_{name}_{stat_method}_{n_stat}", False):
            update, clear = progress_reporter(f"Attributing {n_stat} test inputs…")
            stats = explorer.point_attribution_stats(name, stat_method, n_stat, progress=update)
            clear()
    if stats is None:
        st.caption("Colouring by class until the attributions are computed.")
    else:
        frame = frame.iloc[:n_stat].copy()
        frame[stat] = stats[stat].to_numpy()
        colour, colour_title = stat, f"{STAT_TITLES[stat]} ({charts.title(stat_method)})"
        st.caption(f"Only the first {n_stat} points are plotted: those with attributions.")

# ---------------------------------------------------------------------------- selection events
event = st.session_state.get(charts.EMBEDDING_CHART_KEY)
picked = charts.read_pick(event)
if picked is not None and picked != st.session_state.get("_emb_last_pick") and 0 <= picked < n_test:
    state.user_set("sample", picked)
    sample = picked
st.session_state["_emb_last_pick"] = picked
box = charts.read_box(event)

# ---------------------------------------------------------------------------- scatter
plotted = frame.copy()
if len(plotted) <= THUMB_LIMIT:
    plotted["image"] = [images.data_url(images.thumbnail(x_all[int(i)].numpy(), THUMB_SIZE)) for i in plotted["idx"]]
heading = f"{PROJECTION_TITLES[method]} of {len(plotted)} test latents — click a point, drag a box"
chart = charts.embedding_map(plotted, colour, colour_title, heading, selected=sample)
st.altair_chart(chart, on_select="rerun", key=charts.EMBEDDING_CHART_KEY, width="stretch")
st.caption(f"{len(plotted)} of {n_test} test inputs; the ring marks sample #{sample}. "
           + ("Hover a point for its thumbnail." if "image" in plotted else
              f"Hover thumbnails are shown for up to {THUMB_LIMIT} points; choose fewer points to see them."))
charts.downloads(f"embedding_{method}_{name}", csv=frame, chart=chart, key="emb_map")

# ---------------------------------------------------------------------------- clicked point: nearest training examples
series = explorer.is_series(dataset)
st.subheader(f"Test sample #{sample}: nearest training examples")
nearest = None
with user_errors():
    nearest = explorer.nearest_train(name, sample, k=NEAREST)
if nearest is not None:
    x_train = explorer.train_data(name)[0]
    cols = st.columns(NEAREST + 1)
    cols[0].image(images.thumbnail(x_all[sample].numpy()), output_format="PNG",
                  caption=f"test #{sample} · {explorer.label_name(dataset, int(y_all[sample]))}")
    for col, (_, row) in zip(cols[1:], nearest.iterrows()):
        col.image(images.thumbnail(x_train[int(row['train_index'])].numpy()), output_format="PNG",
                  caption=f"train #{int(row['train_index'])} · {row['class']} · d={row['distance']:.3g}")
    st.caption("Euclidean distance in latent space (DKNN's), over the class-balanced training subset of the Top "
               "examples page.")
    charts.downloads(f"nearest_train_{name}_{sample}", csv=nearest, key="emb_nearest")
    st.page_link("pages/examples.py", label="Rank every training example on the Top examples page",
                 icon=":material/extension:")

# ---------------------------------------------------------------------------- box-selected group
st.subheader("Selected group")
if box is None:
    st.caption("Drag a box on the map to select a group of points.")
else:
    inside = frame[(frame["x"].between(*box["x"])) & (frame["y"].between(*box["y"]))]
    if inside.empty:
        st.warning("The box holds no points; drag a larger one.")
    else:
        group_method = st.selectbox("Saliency method for the group", feature_methods,
                                    **state.bind("emb_group_method", charts.title))
        summary = None
        with user_errors(), st.spinner(f"Attributing up to {GROUP_CAP} members…"):
            summary = explorer.group_summary(name, inside["idx"].to_numpy(), group_method, max_attributed=GROUP_CAP)
        if summary is not None:
            st.markdown(f"**{summary.size} test inputs** in the box.")
            left, right = st.columns(2)
            with left:
                mix = charts.class_mix(summary.classes, "Class mix of the group")
                st.altair_chart(mix, width="stretch")
                charts.downloads(f"group_classes_{name}", csv=summary.classes, chart=mix, key="emb_mix")
            with right:
                if series:
                    mean_chart = charts.ecg_importance(summary.mean_input[:, 0], summary.mean_saliency,
                                                       f"Mean beat, shaded by mean |{charts.title(group_method)}|")
                    st.altair_chart(mean_chart, width="stretch")
                    charts.downloads(f"group_mean_{name}", chart=mean_chart, key="emb_mean",
                                     csv=pd.DataFrame({"t": np.arange(len(summary.mean_saliency)),
                                                       "mean_input": summary.mean_input[:, 0],
                                                       "mean_abs_attribution": summary.mean_saliency}))
                else:
                    mean_img = images.input_image(summary.mean_input)
                    heat = images.heatmap(summary.mean_saliency)
                    pair = images.side_by_side([mean_img, heat])
                    st.image(pair, output_format="PNG",
                             caption=f"Mean input · mean |{charts.title(group_method)}|")
                    charts.downloads(f"group_mean_{name}", png=charts.image_png(pair), key="emb_mean",
                                     csv=pd.DataFrame(summary.mean_saliency.reshape(summary.mean_saliency.shape[0],
                                                                                    -1)))
            capped = "" if len(summary.attributed) == summary.size else \
                f" (capped: the {len(summary.attributed)} lowest-indexed members)"
            st.caption(f"The mean |attribution| averages {len(summary.attributed)} members{capped}; the class mix "
                       "and mean input use all of them.")
