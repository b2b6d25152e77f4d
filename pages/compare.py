"""Compare: two (model, method) explanations of the same test input, side by side, with their agreement.

Side A is the sidebar's encoder; side B is any encoder of the same dataset with the same test split (so the
shared sample index names the same input), and each side has its own attribution method. Two models with one
method compare what the models rely on; one model with two methods compares the methods. The agreement
(Pearson, Spearman and top-10% overlap of |attr|) is computed by ``lfx_engine.metrics.map_agreement``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from lfx_engine.metrics import map_agreement
from lfx_ui import charts, figures, images, router, state
from lfx_ui.engine import get_explorer, pick_model, sample_attribution, selector_labels, user_errors
from lfx_ui.widgets import sample_picker

TOP = 0.1

router.ensure_routed()
explorer = get_explorer()
st.title("Compare")
st.caption("Two explanations of the same test input side by side: two encoders under one method, or one encoder "
           "under two methods, with how much they agree.")
if (message := state.url_error()):
    st.warning(message)

choice = pick_model("cmp")
if choice is None:
    st.stop()
name, dataset = choice.name, choice.dataset
size = explorer.test_size(name)
shape = tuple(explorer.sample(name, 0)[0].shape[1:])
peers = [m for m in explorer.models(dataset)
         if explorer.test_size(m.name) == size and tuple(explorer.sample(m.name, 0)[0].shape[1:]) == shape]
labels = selector_labels(peers)
others = [m.name for m in peers if m.name != name] or [name]

left, right = st.columns(2)
left.markdown(f"**A** · {labels.get(name, choice.label)}")
method_a = left.selectbox("Method A", explorer.feature_methods(name), **state.bind("cmp_method_a", charts.title))
model_b = right.selectbox("Encoder B", [m.name for m in peers], index=[m.name for m in peers].index(others[0]),
                          format_func=lambda n: labels.get(n, n), **state.bind("cmp_model_b"),  # link: the name
                          help="Encoders of the same dataset with the same test split, so the sample is the same "
                               "input. Pick A's encoder again to compare two methods on one model.")
methods_b = explorer.feature_methods(model_b)
method_b = right.selectbox("Method B", methods_b,
                           index=methods_b.index(method_a) if method_a in methods_b else 0,
                           **state.bind("cmp_method_b", charts.title))

pick_col, main = st.columns([1, 4])
sample = None
with user_errors():
    sample = sample_picker(name, "cmp", container=pick_col)
if sample is None:
    st.stop()

sides = {}
with user_errors(), st.spinner("Attributing both sides…", show_time=True):
    for side, (model, method) in (("A", (name, method_a)), ("B", (model_b, method_b))):
        signed = explorer.display_map(sample_attribution(model, sample, method)[None], signed=True)[0]
        sides[side] = (model, method, signed)
if len(sides) < 2:
    st.stop()

batch, label = explorer.sample(name, sample)
x = batch[0].numpy()
(model_a, _, signed_a), (_, _, signed_b) = sides["A"], sides["B"]
agreement = map_agreement(np.abs(signed_a), np.abs(signed_b), top=TOP)
with main:
    st.subheader(f"Test sample #{sample} (class {explorer.label_name(dataset, label)})")
    cards = st.columns(3)
    cards[0].metric("Pearson of |attr|", f"{agreement['pearson']:.3f}")
    cards[1].metric("Spearman of |attr|", f"{agreement['spearman']:.3f}")
    cards[2].metric(f"Top-{TOP:.0%} overlap", f"{agreement['top_overlap']:.0%}",
                    help=f"Share of A's {int(agreement['top_k'])} most important features that are also among B's.")
titles = {side: f"{side}: {labels.get(model, model)} · {charts.title(method)}"
          for side, (model, method, _) in sides.items()}
series = explorer.is_series(dataset)
if series:
    for side, (model, method, signed) in sides.items():
        st.markdown(f"**{titles[side]}**")
        st.altair_chart(charts.ecg_importance(x[:, 0], np.abs(signed), None), width="stretch")
else:
    cols = st.columns(2)
    for col, (side, (model, method, signed)) in zip(cols, sides.items()):
        magnitude = np.abs(signed)
        col.markdown(f"**{titles[side]}**")
        tiles = col.columns(3)
        tiles[0].image(images.input_image(x), caption="input", output_format="PNG")
        tiles[1].image(images.heatmap(magnitude), caption=f"|attr| (peak {float(magnitude.max()):.2g})",
                       output_format="PNG")
        tiles[2].image(images.heatmap(signed, cmap="RdBu_r", signed=True), caption="signed attribution",
                       output_format="PNG")


def table() -> pd.DataFrame:
    """Both sides' maps, one row per feature, for the CSV."""
    frames = []
    for side, (model, method, signed) in sides.items():
        frame = images.attribution_table({method: np.abs(signed)}, {method: signed})
        frames.append(frame.assign(side=side, model=model))
    return pd.concat(frames, ignore_index=True)


def figure() -> bytes:
    rows = [(titles[side], [figures.Panel(image=images.input_image(x), caption="input"),
                            figures.Panel.heat(signed, "inferno", signed=False, caption="|attr|", label="|attr|"),
                            figures.Panel.heat(signed, "RdBu_r", signed=True, caption="signed", label="attr")])
            for side, (_, _, signed) in sides.items()]
    note = (f"Agreement of |attr|: Pearson {agreement['pearson']:.3f}, Spearman {agreement['spearman']:.3f}, "
            f"top-{TOP:.0%} overlap {agreement['top_overlap']:.0%}.")
    return figures.figure_png(figures.labelled_figure(
        f"Test sample #{sample} (class {explorer.label_name(dataset, label)})", rows,
        ["input", "heat map |attr|", "signed attribution"], note))


charts.downloads(f"compare_{name}_{method_a}_vs_{model_b}_{method_b}_sample{sample}", csv=table,
                 png=None if series else figure, key="cmp_maps")
