"""Top examples (paper §4.1, METHOD §7.2): which training examples matter most, and least, for a test input.

**Which sample.** The selected sample is a position in the model's *test split*
(the same index as on the Saliency and Masking pages and in the URL), so any test
input can be explained. Its scores rank the ``n`` examples of the class-balanced
*training subset* of METHOD §6 (``Explorer.example_subsets``; n = 1000 in the
paper, smaller here by default for CPU speed). The similarity-rate curves are
dataset-level: they use the ``n × n`` score matrix of the balanced *test subset*
against the training subset. When the selected sample belongs to the test
subset and that matrix is already computed, its row is reused.

DKNN, cosine and SimplEx are immediate for one sample. TracIn and Influence
Functions differentiate the encoder's pretext loss and run only when asked
(form submit), with progress; their results are cached on disk. Tabs are lazy:
a hidden tab computes nothing.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from lfx_engine.example_importance import HESSIANS, SIGNED_METHODS, bottom_meaning
from lfx_engine.explorer import EXAMPLE_METHODS
from lfx_ui import charts, figures, glossary, images, router, state
from lfx_ui.engine import get_explorer, pick_model, progress_reporter, stop_button, timed, user_errors
from lfx_ui.widgets import sample_picker

DEFAULT_METHODS = ("dknn", "cosine", "simplex")
#: Which training examples a test input is ranked against (the link spells the labels).
SCOPES = ("subset", "full")
SCOPE_LABELS = {"subset": "balanced subset", "full": "full training split"}
SIZES = (100, 200, 500, 1000)
RATES_TAB = "Similarity rates"
ECG_COLUMNS = 5  # beats per row: eight 100 px tiles run past the right edge at 1024 px
PARAM_HELP = {
    "damp": glossary.define("LiSSA damping"), "scale": glossary.define("LiSSA scale"),
    "recursion_depth": glossary.define("LiSSA recursion depth"),
    "minibatch_size": glossary.define("Hessian minibatch"),
    "hessian": glossary.define("Gauss–Newton Hessian"),
    "max_memory_mb": glossary.define("Memory budget"),
    "steps": glossary.define("SimplEx fit"), "lr": glossary.define("SimplEx fit"),
}
LABELS = {"max_memory_mb": "memory budget (MB)"}

router.ensure_routed()
explorer = get_explorer()
st.title("Top examples")
st.caption("Label-free example importance: the training examples a test input's representation relies on most "
           "(top) and least (bottom), under latent-space methods (DKNN, cosine, SimplEx) and loss-gradient methods "
           "(TracIn, Influence Functions).")
if (message := state.url_error()):
    st.warning(message)

choice = pick_model("examples")
if choice is None:
    st.stop()
name, dataset = choice.name, choice.dataset
series = explorer.is_series(dataset)
labelled = explorer.is_labelled(dataset)

controls = st.columns([3, 1.4, 1, 1])
methods = state.choose_many("xmethods", "Example-importance methods", EXAMPLE_METHODS, widget_key="ex_methods",
                            default=DEFAULT_METHODS, format_func=charts.title, container=controls[0])
n_full = len(explorer.train_data(name)[1])
scope = controls[1].selectbox(
    "Training examples searched", SCOPES, **state.bind("ex_scope", SCOPE_LABELS.get),
    help=f"The balanced subset of n examples (the paper's setting), or all {n_full:,} examples of the training "
         "split: fitted once per method and model (cached on disk), then every test input is ranked against all "
         "of them.")
default_n = 1000 if explorer.device.type == "cuda" else 200
n = controls[2].selectbox("Subset size n", SIZES, index=SIZES.index(default_n), **state.bind("ex_n"),
                          help=glossary.define("Training subset"))
k = controls[3].slider("k shown", min_value=3, max_value=20, value=8, **state.bind("ex_k"))
full = scope == "full"

subsets = None
with user_errors():
    subsets = explorer.example_subsets(name, n)
if subsets is None:
    st.stop()
train_idx, test_idx = subsets

pick_col, info_col = st.columns([1, 3])
sample = None
with user_errors():
    sample = sample_picker(name, "ex", container=pick_col)
if sample is None:
    st.stop()
in_subset = bool(np.isin(sample, test_idx))
if full:
    info_col.markdown(f"Test sample **#{sample}** is compared with **all {n_full:,}** training examples. Each method "
                      "is fitted once on the training split (cached on disk); loss-gradient methods use randomly "
                      "projected gradients there (the subset uses exact ones).")
else:
    info_col.markdown(
        f"Test sample **#{sample}** is compared with the **{len(train_idx)}** training examples of the "
        + ("class-balanced training subset. " if labelled else "training subset (the first ones: the data has no "
           "labels). ")
        + ("" if not labelled else "It belongs to the balanced test subset used for the similarity rates."
           if in_subset else "It is not in the balanced test subset of the similarity rates; its own scores are "
           "computed directly."))
if not methods:
    st.info("Pick at least one example-importance method.")
    st.stop()


def request(flag: str) -> None:
    """Button callback: remember a request until the script body handles it."""
    st.session_state[flag] = True


def saved_params(method: str) -> dict[str, Any]:
    """The method's settings last submitted in this session (METHOD defaults until then)."""
    defaults = explorer.example_param_defaults(name, method)
    return {**defaults, **st.session_state.get(f"ex_params_{method}", {})}


def params_inputs(method: str) -> dict[str, Any]:
    """Number inputs for a method's settings (inside a form); returns their current values."""
    current = saved_params(method)
    values = {}
    cols = st.columns(max(1, len(current)))
    for col, (key, value) in zip(cols, current.items()):
        if key == "hessian":
            values[key] = col.selectbox("Hessian", HESSIANS, index=HESSIANS.index(value), **state.bind(f"ex_{method}_{key}"),
                                        help=PARAM_HELP.get(key))
        elif isinstance(value, int):
            values[key] = col.number_input(key.replace("_", " "), min_value=1, value=int(value), step=1,
                                           **state.bind(f"ex_{method}_{key}"), help=PARAM_HELP.get(key))
        else:
            values[key] = col.number_input(LABELS.get(key, key.replace("_", " ")), min_value=0.0, value=float(value),
                                           format="%g", **state.bind(f"ex_{method}_{key}"), help=PARAM_HELP.get(key))
    return values


ROLE_WORDS = {"proponent": "proponent", "opponent": "opponent", "neutral": "neutral", "used": "weight > 0",
              "unused": "weight ≈ 0", "near": "near", "far": "far"}


def bottom_heading(method: str, part: pd.DataFrame) -> str:
    """The bottom gallery's heading, naming what those rows are for this method."""
    roles = set(part["role"])
    if roles == {"opponent"}:
        return f"Bottom {k}: strongest opponents (negative scores)"
    if roles == {"unused"}:
        return f"Bottom {k}: unused by SimplEx (weight ≈ 0, order arbitrary)"
    if method in ("dknn", "cosine"):
        return f"Bottom {k}: least similar in latent space"
    return f"Bottom {k}: lowest scores"


def show_examples(method: str, ranking: pd.DataFrame, searched: str, stem_part: str) -> None:
    """Top-k and bottom-k galleries of a ranking (most important first) with scores, labels, roles and downloads.

    ``searched`` names the training examples ranked (for the exported figure), ``stem_part`` the file names' part.
    """
    assert choice is not None and sample is not None  # the page stopped above without a model or a sample
    top, bottom = ranking.head(k), ranking.tail(k).iloc[::-1]
    x_sample, label = explorer.sample(name, sample)
    m1, m2, m3, m4 = st.columns(4)
    if labelled:
        m1.metric(f"Same class in top {k}", f"{int((top['label'] == label).sum())}/{k}")
        m2.metric(f"Same class in bottom {k}", f"{int((bottom['label'] == label).sum())}/{k}")
    else:
        m1.metric("Labels", "none", help="Unlabelled data: class agreement cannot be counted.")
    m3.metric("Top score", f"{float(top['score'].iloc[0]):.4g}")
    # roles over every ranked example (the full split's ranking holds only its top and bottom rows)
    counts = ranking.attrs.get("role_counts") or ranking["role"].value_counts().to_dict()
    total = ranking.attrs.get("n_ranked", len(ranking))
    if method in SIGNED_METHODS:
        m4.metric("Opponents", f"{int(counts.get('opponent', 0)):,}/{total:,}",
                  help="Training examples with a negative score: training on them raised this input's loss.")
    elif method == "simplex":
        m4.metric("Used by SimplEx", f"{int(counts.get('used', 0)):,}/{total:,}",
                  help="Examples with a weight of at least 1/1000 of the largest; the others are ≈ 0.")
    tiles, sections = [], []
    for heading, part in ((f"Top {k}: most important", top), (bottom_heading(method, bottom), bottom)):
        st.markdown(f"**{heading}**")
        x = explorer.train_inputs(name, part["train_index"].to_numpy())
        captions = [f"#{int(r.train_index)} · {r['class']} · {r.score:.3g}" + (
            f" · {ROLE_WORDS[r.role]}" if r.role in ("opponent", "unused", "neutral") else "")
            for _, r in part.iterrows()]
        if series:
            frame = pd.concat([pd.DataFrame({"t": np.arange(b.shape[0]), "value": b[:, 0], "tile": c, "order": i})
                               for i, (b, c) in enumerate(zip(x, captions))], ignore_index=True)
            chart = charts.ecg_gallery(frame, columns=min(k, ECG_COLUMNS), width=100)
            st.altair_chart(chart)
            tiles.append((heading, chart))
        else:
            thumbs = [images.thumbnail(xi, size=112) for xi in x]
            st.image(thumbs, caption=captions, width=112, output_format="PNG")
            sections.append((heading, [figures.Panel(image=t, caption=c) for t, c in zip(thumbs, captions)]))
        if heading.startswith("Bottom"):
            st.caption(f"{charts.title(method)}'s least important rows are {bottom_meaning(method)}.")
    st.caption("Captions: training-split index · class · score (larger = more important).")
    stem = f"examples_{name}_{method}_sample{sample}_{stem_part}"
    if series:
        top_chart = (tiles[0][1].properties(title=f"{choice.label} · {charts.title(method)} · test #{sample}: "
                                            f"{tiles[0][0]}") & tiles[1][1].properties(title=tiles[1][0]))
        charts.downloads(stem, csv=ranking, chart=top_chart, key=f"ex_{method}")
    else:
        query = [("Test input", [figures.Panel(image=images.thumbnail(x_sample[0].numpy(), size=112),
                                               caption=f"#{sample} · {explorer.label_name(dataset, label)}")])]
        charts.downloads(stem, csv=ranking, key=f"ex_{method}", png=lambda: figures.figure_png(
            figures.labelled_figure(
                f"{choice.label} · {charts.title(method)} · test #{sample} "
                f"(class {explorer.label_name(dataset, label)}) · {searched}",
                query + sections,
                note=f"Captions: training index · class · score. Bottom rows: {bottom_meaning(method)}.")))
    with st.expander("Scores, labels and roles (table)"):
        st.dataframe(pd.concat([top.assign(selection="top"), bottom.assign(selection="bottom")]),
                     hide_index=True, width="stretch")


def full_split_tab(method: str, params: dict[str, Any]) -> None:
    """A method over the full training split: fit it once (by itself for the latent methods), then rank at once."""
    assert sample is not None  # the page stopped above without a sample
    title = charts.title(method)
    settings = explorer.index_params(name, method, params)
    with user_errors():
        ready = explorer.index_cached(name, method, params)
        expensive = method in explorer.EXPENSIVE_SAMPLE_METHODS
        if not ready and expensive:
            solve = (" and, for Influence Functions with the Gauss–Newton Hessian, the LiSSA recursion solved "
                     "in that projected space") if method == "influence" else ""
            st.markdown(f"**{title}** over all {n_full:,} training examples: the training side (per-checkpoint "
                        f"gradients, projected to {settings.get('projection_dim')} dimensions per layer group"
                        f"{solve}) is computed once and cached on disk; after that every test input is ranked in "
                        "seconds.")
            st.button(f"Fit {title} on the full training split", key=f"ex_fit_{method}", type="primary",
                      on_click=request, args=(f"ex_fit_go_{method}",))
        if not ready and (not expensive or st.session_state.pop(f"ex_fit_go_{method}", False)):
            with st.status(f"{title}: fitting on {n_full:,} training examples…", expanded=True) as status:
                remove_stop = stop_button(f"ex_fit_stop_{method}", f"fitting {title} on the full training split")
                update, _ = progress_reporter("training side")
                _, spent = timed(lambda: explorer.example_index(name, method, params, progress=update))
                remove_stop()
                status.update(label=f"{title} fitted in {spent:.1f} s (cached on disk)", state="complete",
                              expanded=False)
            ready = True
        if not ready:
            return
        with st.spinner(f"{title}: ranking {n_full:,} training examples…"):
            ranking, spent = timed(lambda: explorer.index_ranking(name, method, sample, k, params))
        if ranking is None:
            return
        approximation = ranking.attrs.get("approximation")
        st.caption(f"Ranked against all {n_full:,} training examples in {spent:.2f} s"
                   + (f" ({approximation})" if approximation else "") + ".")
        show_examples(method, ranking, f"full training split ({n_full:,})", "full")


tab_labels = [charts.title(m) for m in methods] + [RATES_TAB]
tabs = st.tabs(tab_labels, **state.bind("ex_tab"), on_change="rerun")

for tab, method in zip(tabs, methods):
    with tab:
        if not tab.open:
            continue
        problem = explorer.example_method_problem(name, method)
        if problem:
            st.info(problem)
            continue
        params = saved_params(method)
        if full:
            full_split_tab(method, params)
            continue
        row = None
        with user_errors():
            if method in explorer.EXPENSIVE_SAMPLE_METHODS:
                with st.form(f"ex_form_{method}"):
                    st.markdown(f"**{charts.title(method)}** differentiates the encoder's reconstruction loss "
                                "for the training subset; it runs only when you ask, and is cached on disk.")
                    values = params_inputs(method) if params else {}
                    # a callback, not the return value: it survives the router's first-run rerun
                    st.form_submit_button(f"Compute {charts.title(method)} for sample #{sample}", type="primary",
                                          on_click=request, args=(f"ex_go_{method}",))
                submitted = st.session_state.pop(f"ex_go_{method}", False)
                if submitted or (values and f"ex_params_{method}" not in st.session_state and values != params):
                    # submitted, or settings restored from a link (the form shows them): they apply
                    st.session_state[f"ex_params_{method}"] = values
                    params = saved_params(method)
                row = explorer.sample_example_scores(name, method, sample, n, params=params, compute=False)
                if row is None and submitted:
                    with st.status(f"{charts.title(method)}: scoring {len(train_idx)} training examples…",
                                   expanded=True) as status:
                        remove_stop = stop_button(f"ex_stop_{method}", f"{charts.title(method)} for sample #{sample}")
                        update, _ = progress_reporter("gradients and inverse-Hessian products")
                        row = explorer.sample_example_scores(name, method, sample, n, params=params,
                                                             progress=update)
                        remove_stop()
                        status.update(label=f"{charts.title(method)} computed (cached on disk)",
                                      state="complete", expanded=False)
                elif row is None:
                    st.info(f"Press **Compute** to run {charts.title(method)} for this sample "
                            f"({'seconds' if method == 'tracin' else 'seconds to minutes on a CPU'}).")
            else:
                with st.spinner(f"{charts.title(method)}…"):
                    row = explorer.sample_example_scores(name, method, sample, n, params=params)
        if row is not None:
            with user_errors():
                show_examples(method, explorer.example_ranking(name, row, n, method=method),
                              f"training subset n = {n}", f"n{n}")

with tabs[-1]:
    if tabs[-1].open:
        st.markdown(f"Share of same-label examples among each test input's most / least important training "
                    f"examples, averaged over the balanced test subset (n = {len(test_idx)}). Most-important "
                    "curves should lie above the class prior, least-important ones below.")
        if not labelled:
            st.info(f"Similarity rates count same-label examples, and {explorer.dataset_title(dataset)} has no labels. "
                    "Declare labels (an ImageFolder layout, y in the .npz, or label_column) to see them.")
            st.stop()
        usable = [m for m in methods if not explorer.example_method_problem(name, m)]
        for m in methods:
            if m not in usable:
                st.caption(f"{charts.title(m)}: {explorer.example_method_problem(name, m)}")
        ready: list[str] = []
        missing: list[str] = []
        for m in usable:
            cheap = m not in explorer.EXPENSIVE_EXAMPLE_METHODS
            (ready if cheap or explorer.examples_cached(name, m, n, saved_params(m)) else missing).append(m)
        if missing:
            with st.form("ex_rates_form"):
                todo = st.multiselect("Compute the full score matrices of", missing, default=missing,
                                      format_func=charts.title, key="ex_rates_todo")
                st.caption(f"{len(test_idx)} × {len(train_idx)} scores per method, cached on disk. On a CPU, "
                           "Influence Functions take minutes (lower the recursion depth in its tab to go faster); "
                           "settings: " + "; ".join(f"{charts.title(m)} {saved_params(m)}" for m in missing
                                                    if saved_params(m)))
                st.form_submit_button("Compute", type="primary", on_click=request, args=("ex_go_rates",))
            if st.session_state.pop("ex_go_rates", False) and todo:
                with user_errors(), st.status("Computing score matrices…", expanded=True) as status:
                    remove_stop = stop_button("ex_rates_stop", "the score matrices")
                    for m in todo:
                        update, _ = progress_reporter(charts.title(m))
                        explorer.example_scores(name, m, n, progress=update, params=saved_params(m))
                        ready.append(m)
                    remove_stop()
                    status.update(label="Score matrices computed (cached on disk)", state="complete",
                                  expanded=False)
                st.rerun()  # redraw without the form: what it offered is now computed
        ready = [m for m in methods if m in ready]
        if ready:
            rates = None
            with user_errors(), st.spinner("Similarity rates…"):
                rates = explorer.similarity_curves(name, ready, n, params={m: saved_params(m) for m in ready})
            if rates is not None:
                chart = charts.similarity_rates(rates, f"{choice.label}: similarity rates, n = {len(test_idx)}")
                st.altair_chart(chart, width="stretch")
                charts.downloads(f"similarity_{name}_n{n}", csv=rates, chart=chart, key="ex_rates")
                st.metric("Class prior", f"{float(rates['prior'].mean()):.3f}")
                with st.expander("Rates (table)"):
                    st.dataframe(rates, hide_index=True, width="stretch")
