"""Disentanglement (paper §4.3, METHOD §7.4): are the latent units of β-VAEs sensitive to different features?

Per latent unit j, ``S_j = |μ_j · GradientShap_j|`` shows which pixels unit j
depends on. For the selected sample: one row of unit maps per VAE (β-VAE and
β-TC-VAE, β ∈ {1, 5, 10}) of a run. Dataset-wide: the five metrics of METHOD §4
(Pearson, Spearman, cosine, entropy, salient units) vs β per loss, from
``run_disvae`` on a test subset, beside the reproduction study's values (§8).
Finally a latent traversal through the selected VAE's decoder.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from lfx_engine.catalogue import BUILTIN_SOURCES, source_prefix
from lfx_engine.data import get_spec
from lfx_ui import charts, images, router, state, study
from lfx_ui import study_charts as sc
from lfx_ui.engine import get_explorer, user_errors
from lfx_ui.widgets import sample_picker

VAE_TASKS = ("betavae", "btcvae")
TILE = 96
CARDS_PER_ROW = 3  # six cards in one row are cut at 1024 px

router.ensure_routed()
explorer = get_explorer()
st.title("Disentanglement")
st.caption("Does a larger β (more disentangled latents) make the units attend to different pixels? Per-unit "
           "saliency S_j = |μ_j · GradientShap_j| of each unit j of the posterior mean μ.")
if (message := state.url_error()):
    st.warning(message)

if not explorer.vae_models() and not explorer.user_vaes():
    study.missing_models("β-VAEs or β-TC-VAEs", ["python -m lfx_engine train 'mnist_betavae_*'",
                                                 "python -m lfx_engine train 'mnist_btcvae_*'"])
    st.stop()
choice = study.pick_study_model("dis", (*VAE_TASKS, "vae"), "VAEs")
if choice is None:
    st.stop()
name, dataset, source = choice.name, choice.dataset, choice.source
# the zoo's (or the study's) β × loss grid; a user's VAEs are shown on their own
zoo = choice.source in BUILTIN_SOURCES
vaes = explorer.vae_models(dataset, choice.source) if zoo else explorer.user_vaes(dataset)
prefix = source_prefix(choice.source)
runs = sorted({m.run for m in vaes})


def _follow_run() -> None:
    """The run selector changed: select the same (loss, β) VAE of that run, so the encoder and run agree."""
    sibling = f"{name[: name.rfind('_run')]}_run{st.session_state['dis_run']}" if "_run" in name else None
    if sibling in {m.name for m in vaes}:
        state.set("model", sibling)
        st.session_state["dis_model"] = sibling  # the encoder selectbox's own state (pick_model's widget key)


if zoo:
    if st.session_state.get("dis_run") != choice.run:  # the encoder was chosen elsewhere: the run follows it
        st.session_state["dis_run"] = choice.run
    run = st.sidebar.selectbox("Run (unit-map grid)", runs, key="dis_run", on_change=_follow_run,
                               help="The grid shows every VAE of this run; the selected VAE is drawn in bold. "
                                    "Changing the run selects the same loss and β in that run.")
else:
    run = choice.run
size = explorer.test_size(name)
n_test = study.subset_choice("dis", size, 200)
missing = sorted({f"{prefix}{dataset}_{loss}_b{b}_run{run}" for loss in VAE_TASKS for b in (1, 5, 10)}
                 - {m.name for m in vaes}) if zoo else []

# ---------------------------------------------------------------------------- per-unit maps of the sample
st.subheader("Per-unit saliency of the selected sample")
pick_col, grid_col = st.columns([1, 4])
sample = None
with user_errors():
    sample = sample_picker(name, "dis", container=pick_col)
if sample is None:
    st.stop()
x = explorer.sample(name, sample)[0][0].numpy()
tiles_all, table_rows = [], []
with grid_col:
    for vae in [m for m in vaes if m.run == run]:
        with user_errors(), st.spinner(f"{vae.label}…"):
            maps = study.unit_maps(vae.name, sample)
            vae_mu = study.latent_code(vae.name, sample)
            peak = float(maps.max()) or 1.0  # one colour scale per row: a silent unit stays dark
            tiles = [images.input_image(x, TILE)] + [images.heatmap(m, TILE, peak=peak) for m in maps]
            tiles_all.extend(tiles)
            heading = f"{sc.LOSS_TITLES[vae.task]} β = {vae.beta:g}" if zoo else vae.label
            st.markdown(f"**{heading} ← selected**" if vae.name == name else heading)
            st.image(tiles, width=TILE, output_format="PNG",
                     caption=["input"] + [f"unit {j} · μ = {vae_mu[j]:+.2f}" for j in range(len(maps))])
            for j, m in enumerate(maps):
                rows, cols = np.indices(m.shape)
                table_rows.append(pd.DataFrame({"model": vae.name, "unit": j, "mu": float(vae_mu[j]),
                                                "row": rows.ravel(), "col": cols.ravel(), "saliency": m.ravel()}))
    if missing:
        st.caption(f"Not trained for run {run}: {', '.join(missing)} — `python -m lfx_engine train "
                   f"'{dataset}_*vae_b*_run{run}'`")
if table_rows:
    d = len(tiles_all) // max(1, len([m for m in vaes if m.run == run]))
    st.caption("Heat maps share one colour scale per row (the row's maximum), so a unit the input barely "
               "activates stays dark.")
    charts.downloads(f"disvae_{dataset}_run{run}_sample{sample}_units", csv=lambda: pd.concat(table_rows),
                     png=charts.image_png(images.grid(tiles_all, d)), key="dis_units")

# ---------------------------------------------------------------------------- metrics vs beta
st.divider()
subset = f"{'all' if n_test is None else f'the first {n_test:,}'} test inputs"
if not zoo:
    st.subheader(f"Unit-map metrics of {choice.label}")
    values = None
    with user_errors():
        if explorer.vae_unit_metrics_cached(name, n_test):
            values = explorer.vae_unit_metrics(name, n_test)
        else:
            st.button(f"Compute the five metrics on {subset}", type="primary", key="dis_user_compute",
                      on_click=study.request, args=("dis_user_go",))
            if st.session_state.pop("dis_user_go", False):
                with st.spinner(f"Per-unit GradientShap on {subset}…", show_time=True):
                    values = explorer.vae_unit_metrics(name, n_test)
    if values is not None:
        cols = st.columns(len(values))
        for col, (metric, value) in zip(cols, values.items()):
            col.metric(sc.METRIC_TITLES.get(metric, metric), f"{value:.3f}")
        st.caption("Pooled Pearson, Spearman and cosine between the unit maps (lower = more distinct units), the "
                   f"entropy of each pixel's share across units (at most ln d = {np.log(choice.latent_dim):.2f}) "
                   "and the mean number of units above an equal share: the same computation as `reproduce disvae` "
                   "runs for each zoo VAE.")
        charts.downloads(f"unit_metrics_{name}", csv=pd.DataFrame([values]), key="dis_user_metrics")
else:
    st.subheader("Disentanglement metrics vs β")
result = None
with user_errors():
    if zoo and explorer.disvae_cached(dataset, n_test, choice.source):
        result = explorer.disvae_study(dataset, n_test, source=choice.source)
    elif zoo:  # a user's VAE has no β × loss grid to compare
        slot = st.empty()
        offer = slot.container()
        work = len(vaes) * (n_test or size) * choice.latent_dim  # VAE × input × latent unit
        offer.info(f"Not computed yet for {subset}: per-unit GradientShap of {len(vaes)} VAE(s), streamed into the "
                   f"five metrics. This takes {study.cost('disvae', work, 0.015).text()}; cached on disk.",
                   icon=":material/hourglass_top:")
        offer.button(f"Compute the metrics ({len(vaes)} VAE(s), {subset})", type="primary", key="dis_compute",
                     on_click=study.request, args=("dis_go",))
        if st.session_state.pop("dis_go", False):
            result = study.run_with_status(
                f"run_disvae on {subset}…", "Metrics computed (cached on disk for next time)",
                lambda progress, log: explorer.disvae_study(dataset, n_test, progress=progress, log=log,
                                                            source=source),
                unit="VAEs", rate=("disvae", work))
            slot.empty()
reference = explorer.disvae_reference(dataset) if zoo else pd.DataFrame()
if result is not None:
    metrics = result["metrics"]
    long = metrics.melt(id_vars=["model", "loss", "beta", "run"], value_vars=list(sc.METRIC_TITLES),
                        var_name="metric", value_name="value")
    most_runs = int(metrics.groupby(["loss", "beta"])["run"].nunique().max())
    box = st.radio("Plot", ["strip", "box"], index=1 if most_runs >= 3 else 0, horizontal=True, **state.bind("dis_plot", lambda k: "Strip plot (one dot per model)" if k == "strip" else
                                           "Box plot + dots"))
    chart = sc.disentanglement_metrics(long, reference, f"{get_spec(dataset).title} VAEs: unit-map metrics vs β "
                                       f"(n = {int(metrics['n_test'].iloc[0]):,})", box=box == "box")
    st.altair_chart(chart, width="content")
    charts.downloads(f"disvae_{dataset}_metrics_n{int(metrics['n_test'].iloc[0])}", csv=long, chart=chart,
                     key="dis_metrics")
    for warning in result["warnings"]:
        st.warning(f"{warning}. The plot still shows every model.", icon=":material/warning:")
    if "verdict" in metrics:
        with st.expander("Model quality (active units, reconstruction, verdict)"):
            st.dataframe(metrics[["model", "verdict", "active_units", "rec_ratio", "kl"]], hide_index=True,
                         width="stretch")
    pearson = result["comparison"][result["comparison"]["metric"] == "pearson"]
    if len(pearson):
        st.markdown("**Pooled Pearson between unit maps** (mean over runs; the grey figure: difference from the "
                    "reproduction study)")
        per_row = min(CARDS_PER_ROW, len(pearson))
        rows_of_cards = [st.columns(per_row) for _ in range(-(-len(pearson) // per_row))]
        for col, r in zip([c for row in rows_of_cards for c in row], pearson.itertuples()):
            ref = "" if not np.isfinite(r.reference_mean) else f"{r.mean - r.reference_mean:+.3f} vs study"
            col.metric(f"{sc.LOSS_TITLES.get(r.loss, r.loss)} β={r.beta:g}", f"{r.mean:.3f}",
                       delta=ref or None, delta_color="off",
                       help=f"pooled Pearson between unit maps, mean over {r.n_runs} run(s); reproduction study: "
                            + ("n/a" if not np.isfinite(r.reference_mean) else f"{r.reference_mean:.3f}")
                            + ("" if not np.isfinite(getattr(r, "null_mean", np.nan)) else
                               f"; randomly initialised VAEs (null model): {r.null_mean:.3f} "
                               f"({r.null_low:.3f}–{r.null_high:.3f})"))
    st.caption("Lower Pearson/cosine = more distinct units. The reproduction study found Pearson flat in β on MNIST "
               "(≈ 0.23–0.25) while entropy and salient units (its \"active units\") fall with β.")
    study.notes(result["notes"])
    with st.expander("Ours beside the reproduction study and the null model (table)"):
        st.dataframe(result["comparison"], hide_index=True, width="stretch")
        charts.downloads(f"disvae_{dataset}_comparison", csv=result["comparison"], key="dis_comparison")
elif len(reference):
    with st.expander("The reproduction study's values"):
        st.dataframe(reference, hide_index=True, width="stretch")

# ---------------------------------------------------------------------------- latent traversal
st.divider()
st.subheader(f"Latent traversal through the decoder — {choice.label}")
if not explorer.has_decoder(name):
    st.info("This VAE has no decoder declared (decoder = '…' in the project file), so its codes cannot be decoded.")
    st.stop()
ctrl = st.columns(3)
span = ctrl[0].slider("Range around μ_j (±)", min_value=0.5, max_value=6.0, value=3.0, step=0.5, **state.bind("dis_span"),
                      help="Each row varies one unit over μ_j ± this range (prior N(0, 1)); the others keep the "
                           "sample's posterior mean.")
steps = ctrl[1].slider("Steps per unit", min_value=3, max_value=11, value=7, step=2, **state.bind("dis_steps"))
mu = None
with user_errors():
    mu = study.latent_code(name, sample)
if mu is not None:
    ctrl[2].metric("Posterior mean μ", ", ".join(f"{v:+.2f}" for v in mu[:6]) + (" …" if len(mu) > 6 else ""))
    trav_tiles: list[np.ndarray] = []
    trav_rows: list[dict[str, float]] = []
    with user_errors():
        for j in range(len(mu)):
            z_values = np.linspace(mu[j] - span, mu[j] + span, steps)
            decoded = study.traversal(name, sample, j, z_values)
            tiles = [images.input_image(img, TILE) for img in decoded]
            trav_tiles.extend(tiles)
            st.image(tiles, width=TILE, output_format="PNG",
                     caption=[f"z{j} = {v:+.2f}" + (" (μ)" if k == steps // 2 else "")
                              for k, v in enumerate(z_values)])
            trav_rows.extend({"unit": j, "step": k, "value": float(v)} for k, v in enumerate(z_values))
    if trav_tiles:
        charts.downloads(f"traversal_{name}_sample{sample}", csv=pd.DataFrame(trav_rows),
                         png=charts.image_png(images.grid(trav_tiles, steps)), key="dis_traversal")
    with st.expander("Free decoding: one slider per unit"):
        sliders = st.columns(min(4, len(mu)))
        code = [sliders[j % len(sliders)].slider(f"z{j}", min_value=float(np.floor(mu[j] - 6)),
                                                 max_value=float(np.ceil(mu[j] + 6)), value=float(round(mu[j], 2)),
                                                 step=0.05, key=f"dis_z{j}_{name}_{sample}")
                for j in range(len(mu))]
        with user_errors():
            st.image(images.input_image(study.decode(name, code), 168), caption="decoded", output_format="PNG")
