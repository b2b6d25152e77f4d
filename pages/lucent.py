"""Feature visualisation (reproduction study, METHOD §7.5): what input maximises a latent unit or a conv channel?

torch-lucent optimises an image (FFT parameterisation, sigmoid to [0, 1], no
ImageNet preprocessing, fixed input size, no transforms, Adam 5e-2) so that the
mean activation of the chosen target is as large as possible. Renders use the
experiments' ``render_unit`` on a deep copy of the encoder and are cached on disk
by (checkpoint sha256, layer, unit, steps, seed, options): a repeated render is
instant, and a VAE's μ units share the cache of ``python -m lfx_engine reproduce
lucid``. Lucent optimises images, so it does not apply to the ECG5000 LSTM.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st
import torch

from lfx_ui import charts, glossary, images, router, state, study
from lfx_ui.engine import get_explorer, pick_model, progress_reporter, stop_button, user_errors

DEFAULT_STEPS = 256
LONG_RENDER_S = 10.0
MAX_GRID = 32

router.ensure_routed()
explorer = get_explorer()
st.title("Feature visualisation (Lucent)")
st.caption("torch-lucent renders the image that maximises the mean activation of one latent unit or one "
           "convolution channel of an encoder (Olah et al. 2017), with the reproduction study's settings.")
if (message := state.url_error()):
    st.warning(message)

choice = pick_model("luc")
if choice is None:
    st.stop()
name, dataset = choice.name, choice.dataset
if explorer.is_series(dataset):
    st.info("Lucent optimises **images**, so it does not apply to ECG5000: its encoder is a 1-D LSTM over "
            "heartbeats, with no spatial channels to visualise. Pick MNIST (or CIFAR) in the sidebar.",
            icon=":material/block:")
    st.stop()
targets = None
with user_errors():
    targets = explorer.lucent_targets(name)
if not targets:
    st.stop()

by_layer = {t["layer"]: t for t in targets}
left, right = st.columns([3, 2])
layer = left.selectbox("What to maximise", list(by_layer),
                       **state.bind("luc_layer", lambda k: by_layer[k]["title"]))
n_units = by_layer[layer]["units"]
noun = "unit" if layer == "latent" else "channel"
unit = right.number_input(f"{noun.capitalize()} (0–{n_units - 1})", min_value=0, max_value=n_units - 1, value=0,
                          step=1, **state.bind(f"luc_unit_{layer}"))
c1, c2, c3 = st.columns(3)
steps = int(c1.number_input("Optimisation steps", min_value=1, max_value=20_000, value=DEFAULT_STEPS, step=64,
                            **state.bind("luc_steps"), help=glossary.define("Render steps")))
seed = int(c2.number_input("Seed", min_value=0, max_value=2 ** 31 - 1, value=0, step=1, **state.bind("luc_seed"),
                           help=f"{noun.capitalize()} j renders with seed + j, as `reproduce lucid` does, so the "
                                "CLI's renders are reused."))
leaky = c3.checkbox("LeakyReLU(0.1) instead of ReLU", **state.bind("luc_leaky"),
                    help="The reproduction study rebuilt the encoder with LeakyReLU(0.1); the default keeps the "
                         "activation the model was trained with.")
on_gpu = torch.cuda.is_available()
st.caption(f"Renders run on **{'CUDA (' + torch.cuda.get_device_name(0) + ')' if on_gpu else 'the CPU'}** "
           f"(torch-lucent picks CUDA when present) · target `{layer}`, {noun} {unit}, {steps} steps, seed "
           f"{seed + unit}, {'LeakyReLU' if leaky else 'trained ReLU'}.")


def estimate(count: int) -> tuple[float, float]:
    """(expected seconds for ``count`` renders, measured seconds per step), from a short timed render."""
    with st.spinner("Measuring the render speed (a short 8-step render; the first one also loads torch-lucent)…"):
        per_step = explorer.lucent_step_seconds(name, layer, leaky)
    return per_step * steps * count, per_step


def show_render(img: np.ndarray, index: int) -> None:
    """The render, its activation against the test inputs' range, and downloads."""
    chw = np.transpose(img, (2, 0, 1))
    tile = images.input_image(chw, 280)
    col_img, col_stats = st.columns([1, 2])
    col_img.image(tile, caption=f"{noun} {index} of {layer} · {steps} steps", output_format="PNG")
    with col_stats, user_errors():
        act = float(explorer.lucent_activation(name, layer, index, chw[None])[0])
        stats = study.activation_stats(name, layer, index)
        m1, m2, m3 = st.columns(3)
        m1.metric("Activation of the render", f"{act:.3g}")
        m2.metric(f"Test mean ± std (n = {stats['n']})", f"{stats['mean']:.2f} ± {stats['std']:.2f}")
        m3.metric("Test maximum", f"{stats['max']:.3g}", delta=f"render ×{act / stats['max']:.2f}"
                  if stats["max"] > 0 else None, delta_color="off", delta_arrow="off")
        st.caption("A render that exceeds every test input's activation shows the feature in its purest form; "
                   "one far below it has not converged (raise the steps).")
    rows, cols, chans = np.indices(img.shape)
    table = pd.DataFrame({"row": rows.ravel(), "col": cols.ravel(), "channel": chans.ravel(), "value": img.ravel()})
    charts.downloads(f"lucent_{name}_{layer}_{index}_s{steps}_seed{seed + index}{'_leaky' if leaky else ''}",
                     csv=table, png=charts.image_png(images.input_image(chw, 280)), key="luc_single")


# ---------------------------------------------------------------------------- one render
st.subheader(f"{noun.capitalize()} {unit}")
with user_errors(), st.spinner("Activations of the test inputs…"):
    stats = study.activation_stats(name, layer, unit)
    x_test = explorer.test_data(name)[0]
    st.image([images.input_image(x_test[i].numpy(), 84) for i in stats["top_index"]], width=84,
             caption=[f"#{i} · {v:.3g}" for i, v in zip(stats["top_index"], stats["top_value"])], output_format="PNG")
    st.caption(f"Dataset examples: the {len(stats['top_index'])} test inputs (of the first {stats['n']}) that "
               f"activate {noun} {unit} most — what the render below should distil.")
image = None
with user_errors():
    if explorer.lucent_cached(name, layer, unit, steps, seed, leaky):
        image = explorer.lucent_render(name, layer, unit, steps, seed, leaky)
        st.caption("From the disk cache (instant).")
    else:
        slot = st.empty()
        offer = slot.container()
        with offer:
            seconds, per_step = estimate(1)
        text = (f"Expected time: about **{seconds:.1f} s** ({steps} steps × {per_step * 1000:.1f} ms per step, "
                f"measured here on the {'GPU' if on_gpu else 'CPU'}).")
        if seconds > LONG_RENDER_S:
            offer.warning(text + " That is a long render: lower the steps for a quick look.",
                          icon=":material/timer:")
        else:
            offer.info(text, icon=":material/timer:")
        offer.button(f"Render {noun} {unit}", type="primary", key="luc_render", on_click=study.request,
                     args=("luc_go",))
        if st.session_state.pop("luc_go", False):
            with st.spinner(f"Rendering {noun} {unit} ({steps} steps, about {seconds:.0f} s)…", show_time=True):
                image = explorer.lucent_render(name, layer, unit, steps, seed, leaky)
            slot.empty()
            st.caption(f"Rendered in this run ({steps} steps); cached on disk.")
if image is not None:
    show_render(image, unit)

# ---------------------------------------------------------------------------- every unit of the target
st.divider()
st.subheader(f"Every {noun} of {'the latent layer' if layer == 'latent' else layer}")
if n_units > MAX_GRID:
    st.caption(f"{n_units} {noun}s: the grid shows the first {MAX_GRID}.")
shown_units = list(range(min(n_units, MAX_GRID)))
with user_errors():
    done = [u for u in shown_units if explorer.lucent_cached(name, layer, u, steps, seed, leaky)]
    todo = [u for u in shown_units if u not in done]
    if todo:
        slot = st.empty()
        offer = slot.container()
        with offer:
            seconds = estimate(len(todo))[0]
        if seconds > LONG_RENDER_S:
            offer.warning(f"Rendering the {len(todo)} missing {noun}(s) takes about {seconds:.0f} s here.",
                          icon=":material/timer:")
        offer.button(f"Render the {len(todo)} missing {noun}(s) (about {seconds:.0f} s)", key="luc_render_all",
                     on_click=study.request, args=("luc_go_all",))
        if st.session_state.pop("luc_go_all", False):
            slot.empty()
            with st.status(f"Rendering {len(todo)} {noun}(s), about {seconds:.0f} s…", expanded=True) as status:
                remove_stop = stop_button("luc_stop", f"rendering the {noun}s")
                update, _ = progress_reporter(f"{noun}s rendered")
                for i, u in enumerate(todo):
                    update(i, len(todo))
                    explorer.lucent_render(name, layer, u, steps, seed, leaky)
                    done.append(u)
                remove_stop()
                status.update(label=f"Rendered {len(todo)} {noun}(s) (cached on disk)", state="complete",
                              expanded=False)
            todo = []
        else:
            offer.caption(f"{len(done)} of {len(shown_units)} rendered with these settings.")
    if done:
        done = sorted(done)
        renders = {u: explorer.lucent_render(name, layer, u, steps, seed, leaky) for u in done}
        tiles = [images.input_image(np.transpose(renders[u], (2, 0, 1)), 112) for u in done]
        st.image(tiles, caption=[f"{noun} {u}" for u in done], width=112, output_format="PNG")

        def grid_table() -> pd.DataFrame:
            frames = []
            for u, img in renders.items():
                rows, cols, chans = np.indices(img.shape)
                frames.append(pd.DataFrame({noun: u, "seed": seed + u, "row": rows.ravel(), "col": cols.ravel(),
                                            "channel": chans.ravel(), "value": img.ravel()}))
            return pd.concat(frames, ignore_index=True)

        charts.downloads(f"lucent_{name}_{layer}_grid_s{steps}_seed{seed}{'_leaky' if leaky else ''}",
                         csv=grid_table,
                         png=charts.image_png(images.grid(tiles, min(8, len(tiles)))), key="luc_grid")
