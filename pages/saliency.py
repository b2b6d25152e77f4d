"""Saliency: label-free feature importance of one input, under one or more attribution methods.

Pick a dataset, an encoder and methods (sidebar / panel), then an input: a test
sample from the class-filtered gallery, a point of the 2-D latent map, or your
own upload. The per-sample panel is a fragment, so changing methods reruns only
the panel. The sample index is a position in the model's test split and is
shared with the other pages and the URL.
"""
from __future__ import annotations

import math

import numpy as np
import streamlit as st

from lfx_ui import charts, figures, images, router, safe, state, upload
from lfx_ui.engine import (
    current_sample,
    get_explorer,
    latent_map,
    pick_model,
    sample_attribution,
    timed,
    upload_attribution,
    user_errors,
)

PER_PAGE = 24
COLUMNS = 6  # tiles per gallery row: at 1024 px, 8 columns cut the buttons' "#index · class" labels
MAP_POINTS = 2000
DEFAULT_METHODS = ("gradient_shap", "integrated_gradients", "saliency")
TAB_GALLERY, TAB_MAP, TAB_UPLOAD = "Gallery", "Latent map", "Upload"
FIX_LABELS = {"resize": "Resize it to the model's input size", "convert": "Convert its colour channels",
              "resample": "Resample it to the model's length",
              "invert": "Invert colours (MNIST: light on dark)", "centre": "Centre the digit MNIST-style",
              "znorm": "Z-normalise it (mean 0, std 1)"}

router.ensure_routed()
explorer = get_explorer()
st.title("Saliency")
st.caption("Which pixels or time steps does the encoder's representation depend on? Each method explains "
           "g(x̃) = ⟨f(x), f(x̃)⟩ for the chosen input x, so no label is needed.")
if (message := state.url_error()):
    st.warning(message)

choice = pick_model("saliency")
if choice is None:
    st.stop()
name, dataset = choice.name, choice.dataset
series = explorer.is_series(dataset)
class_names = explorer.class_names(dataset)
data = None
with user_errors():
    data = explorer.test_data(name)
if data is None:
    st.stop()
x_all, y_all = data
# an uploaded series may not lie far outside the model's own data (10× its largest magnitude)
series_bound = 10.0 * float(x_all.abs().max()) if series else None
sample = current_sample(name)


def _pick(index: int) -> None:
    state.user_set("sample", int(index))
    st.session_state["sal_goto"] = int(index)


def _goto() -> None:
    if st.session_state.get("sal_goto") is not None:  # an emptied field keeps the current sample
        state.user_set("sample", int(st.session_state["sal_goto"]))


# ---------------------------------------------------------------------------- input choice
gallery_tab, map_tab, upload_tab = st.tabs([TAB_GALLERY, TAB_MAP, TAB_UPLOAD], **state.bind("sal_source"),
                                           on_change="rerun")

with gallery_tab:
    if gallery_tab.open:
        left, right = st.columns([3, 2])
        if not class_names:
            left.caption("Unlabelled data: the gallery shows every test input.")
        cls = state.choose("cls", "Class", ["all", *class_names], widget_key="sal_cls", container=left,
                           format_func=lambda c: "All classes" if c == "all" else f"class {c}")
        indices = explorer.class_indices(name, None if cls == "all" else class_names.index(cls))
        if st.session_state.get("sal_goto") != sample:  # follow picks made elsewhere; never out of range
            st.session_state["sal_goto"] = sample
        right.number_input(f"Test sample # (0–{len(x_all) - 1})", min_value=0, max_value=len(x_all) - 1,
                           value=None, step=1, key="sal_goto", on_change=_goto)
        n_pages = max(1, math.ceil(len(indices) / PER_PAGE))
        st.caption(f"{len(indices)} test inputs{'' if cls == 'all' else f' of class {cls}'}, "
                   f"{PER_PAGE} per page — click the button under a tile to explain it.")
        where = np.flatnonzero(indices == sample)
        first_page = int(where[0]) // PER_PAGE + 1 if where.size else 1
        page = st.pagination(n_pages, default=first_page, key=f"sal_gallery_page_{name}_{cls}",
                             max_visible_pages=9)
        shown = indices[(page - 1) * PER_PAGE: page * PER_PAGE]
        columns = st.columns(COLUMNS)
        for j, index in enumerate(shown):
            col = columns[j % COLUMNS]
            col.image(images.thumbnail(x_all[int(index)].numpy()), output_format="PNG")
            label = explorer.label_name(dataset, int(y_all[int(index)]))
            short = label if len(label) <= 4 else label[:3] + "."  # the full class is in the help
            col.button(f"#{int(index)} · {short}" if class_names else f"#{int(index)}", key=f"sal_pick_{int(index)}", on_click=_pick, args=(int(index),),
                       type="primary" if int(index) == sample else "secondary", width="stretch",
                       help=f"Explain test sample #{int(index)} (class {label})")

with map_tab:
    if map_tab.open:
        frame = None
        with user_errors(), st.spinner("Encoding the test set…"):
            frame = latent_map(name, min(MAP_POINTS, len(x_all)))
        if frame is not None:
            # apply a click before drawing so the ring marks the new sample (read dict-style, see PRACTICE §2)
            picked = charts.read_pick(st.session_state.get(charts.LATENT_CHART_KEY))
            if picked is not None and picked != st.session_state.get("_sal_last_pick"):
                if 0 <= picked < len(x_all):
                    _pick(picked)
                    sample = picked
            st.session_state["_sal_last_pick"] = picked
            chart = charts.latent_map(frame, sample)
            st.altair_chart(chart, on_select="rerun", key=charts.LATENT_CHART_KEY, width="stretch")
            st.caption(f"First {len(frame)} test inputs; the ring marks sample #{sample}.")
            charts.downloads(f"latent_map_{name}", csv=frame, chart=chart, key="sal_latent")

upload_x, upload_digest, upload_name = None, None, None


def conversion_settings(first: upload.Decoded, key: str, box) -> dict[str, bool]:
    """One checkbox per proposed conversion, defaulted as proposed and keyed by the file (fresh for each file)."""
    return {kind: box.checkbox(FIX_LABELS[kind], value=default, key=f"sal_fix_{kind}_{key}",
                               help=first.hints.get(kind) or first.fixable.get(kind))
            for kind, default in first.proposed.items()}


def value_range(values: np.ndarray) -> str:
    """A series' range for its tile's caption (the tiles scale to fit, so the numbers show the scale)."""
    return f"{float(np.min(values)):.3g} … {float(np.max(values)):.3g}"


def before_after(first: upload.Decoded, decoded: upload.Decoded, left, right) -> None:
    """The file as uploaded (``left``) next to exactly what the model receives, or why it cannot (``right``)."""
    if first.preview is not None:
        if series:
            left.image(images.series_thumbnail(first.preview, width=images.DISPLAY_SIZE * 2, height=120),
                       caption=f"as uploaded: {first.preview.size} values, {value_range(first.preview)}",
                       output_format="PNG")
        else:
            colour = "colour" if first.preview.shape[0] == 3 else "grey"
            left.image(images.input_image(first.preview), caption=f"as uploaded ({colour})", output_format="PNG")
    if decoded.ok:
        assert decoded.x is not None  # ok means exactly that x is set
        x = decoded.x[0].numpy()
        tile = images.series_thumbnail(x[:, 0], width=images.DISPLAY_SIZE * 2, height=120) if series \
            else images.input_image(x)
        caption = "what the model receives: " + "×".join(str(s) for s in x.shape)
        right.image(tile, caption=caption + (f", {value_range(x)}" if series else ""), output_format="PNG")
    elif decoded.unfixed:
        for kind in decoded.unfixed:
            right.error(f"{first.fixable[kind]} It cannot be used as is: tick “{FIX_LABELS[kind]}”.",
                        icon=":material/aspect_ratio:")


with upload_tab:
    if upload_tab.open:
        kinds = upload.SERIES_TYPES if series else upload.IMAGE_TYPES
        shape = tuple(x_all.shape[1:])
        what = (f"one beat of {shape[0]} numbers: a row, a column, or a table with a column of them" if series
                else f"a PNG or JPEG image (the model takes {shape[2]}×{shape[1]}, "
                     f"{'grayscale' if shape[0] == 1 else 'RGB'}; others are converted)")
        # no `type=` filter: Streamlit raises on a file of another extension (a modified client can send one);
        # the decoders read the content itself and say what is wrong with it
        uploaded = st.file_uploader(f"Upload {what} ({', '.join(kinds)})", key="sal_upload",
                                    max_upload_size=upload.MAX_BYTES // (1024 * 1024))
        if uploaded is not None:
            st.session_state["sal_upload_file"] = (uploaded.name, uploaded.getvalue())
        stored = st.session_state.get("sal_upload_file")
        if stored is not None and uploaded is None:
            keep, forget = st.columns([4, 1])
            keep.caption(f"Using your earlier upload “{safe.shown(stored[0])}”.")
            forget.button("Forget it", key="sal_upload_forget",
                          on_click=lambda: st.session_state.pop("sal_upload_file", None))
        if stored is not None:
            filename, content = stored
            file_key = upload.content_digest(content)  # conversion widgets start afresh for every new file

            def decode(**settings):
                if series:
                    return upload.decode_series(content, filename, shape[0], bound=series_bound, **settings)
                return upload.decode_image(content, filename, shape, **settings)

            first = decode()
            column = first.column
            settings_box, before_box, after_box = st.columns([1.5, 1, 1])
            if len(first.columns) > 1:
                column = settings_box.selectbox(
                    "Column holding the beat", first.columns, key=f"sal_upload_column_{file_key}",
                    index=first.columns.index(first.column) if first.column in first.columns else 0)
                if column != first.column:
                    first = decode(column=column)
            decoded = first
            if first.proposed:  # it decodes: its errors (if any) may depend on the conversions chosen
                col_key = f"{file_key}_{first.columns.index(column)}" if column in first.columns else file_key
                settings_box.markdown("**Conversions proposed for this file**")
                settings = conversion_settings(first, col_key, settings_box)
                decoded = decode(**({"column": column} if series else {}), **settings)
            for error in decoded.errors:
                st.error(error, icon=":material/block:")
            if first.proposed:
                before_after(first, decoded, before_box, after_box)
            for note in decoded.notes:
                (after_box if first.proposed else st).caption(note)
            if decoded.ok:
                with user_errors():
                    explorer.check_input(name, decoded.x)
                    upload_x, upload_digest, upload_name = decoded.x, decoded.digest, safe.shown(filename)
        else:
            st.info("No file uploaded yet. Your input is explained by the same encoder and methods as the test "
                    "samples.")


# ---------------------------------------------------------------------------- per-sample panel
#: Heat-map views (the labels are also the link's values).
VIEWS = ("both", "magnitude", "signed")


def view_settings() -> tuple[str, str, str]:
    """Heat-map view, |attr| colour map and signed colour map (kept in the link)."""
    v0, v1, v2 = st.columns([2, 1, 1])
    view = v0.segmented_control("Heat maps", VIEWS, default="both", required=True,
                                **state.bind("sal_view"),
                                help="Magnitude |attr|: how much each pixel matters. Signed: red raises the similarity "
                                     "⟨f(x), f(x̃)⟩ to the explained input, blue lowers it.")
    cmap = v1.selectbox("|attr| colours", images.SEQUENTIAL_CMAPS, **state.bind("sal_cmap"))
    signed_cmap = v2.selectbox("Signed colours", images.DIVERGING_CMAPS, **state.bind("sal_scmap"),
                               help="Diverging: white is 0, the two ends are ±max |attr|.")
    return view or "both", cmap, signed_cmap


def colour_bar(box, cmap: str, peak: float, signed: bool) -> None:
    """A colour bar under a heat map, with its scale in attribution units."""
    box.image(images.colorbar(cmap, width=images.DISPLAY_SIZE), output_format="PNG",
              caption=(f"−{peak:.2g}  ·  0  ·  +{peak:.2g}" if signed else f"0  …  {peak:.2g}"))


@st.fragment
def sample_panel(x: np.ndarray, heading: str, index: int | None, digest: str | None, x_tensor) -> None:
    """Input, heat maps and overlay for every chosen method (reruns alone when methods change)."""
    assert choice is not None  # the page stopped above when there is no model
    methods = state.choose_many("methods", "Attribution methods", explorer.feature_methods(name), widget_key="sal_methods",
                                default=DEFAULT_METHODS, format_func=charts.title)
    view, cmap, signed_cmap = view_settings()
    state.write_to_url()  # a fragment rerun skips the router's URL update
    if not methods:
        st.info("Pick at least one attribution method.")
        return
    maps, signed_maps, seconds = {}, {}, {}
    for method in methods:
        with user_errors(), st.spinner(f"{charts.title(method)}…", show_time=True):
            if index is not None:
                attr, spent = timed(lambda: sample_attribution(name, index, method))
            else:
                assert digest is not None  # an upload's panel (index None) always gets the upload's digest
                attr, spent = timed(lambda: upload_attribution(name, digest, x_tensor, method))
            signed_maps[method] = explorer.display_map(attr[None], signed=True)[0]
            maps[method] = np.abs(signed_maps[method])
            seconds[method] = spent
    if not maps:
        return
    total = sum(seconds.values())
    st.subheader(heading)
    cols = st.columns(4)
    cols[0].metric("Methods", len(maps))
    cols[1].metric("Attribution time", f"{total:.2f} s", help="Wall time of this panel's attributions "
                   "(cached results are instant).")
    cols[2].metric("Latent dimension", choice.latent_dim)
    cols[3].metric("Input shape", "×".join(str(s) for s in x.shape))
    stem = f"{name}_{heading}"
    if series:
        beat = x[:, 0]
        for method, amap in maps.items():
            st.markdown(f"**{charts.title(method)}** · {seconds[method] * 1000:.0f} ms · "
                        f"peak |attr| {float(np.max(amap)):.3g}")
            st.altair_chart(charts.ecg_importance(beat, amap, None), width="stretch")
            table = images.attribution_table({method: amap}, {method: signed_maps[method]}).assign(value=beat)
            titled_chart = charts.ecg_importance(beat, amap, f"{heading}: {charts.title(method)}").properties(width=700)
            charts.downloads(f"{stem}_{method}", csv=table, chart=titled_chart, key=f"sal_{method}")
        return
    shown = ["input", *(["magnitude"] if view != "signed" else []), *(["signed"] if view != "magnitude" else []),
             "overlay"]
    overlays = {}
    for method, amap in maps.items():
        peak = float(np.max(amap))
        overlays[method] = images.overlay(x, amap, cmap=cmap)
        tiles = {"input": (images.input_image(x), "input"),
                 "magnitude": (images.heatmap(amap, cmap=cmap), "heat map |attr| (÷ max)"),
                 "signed": (images.heatmap(signed_maps[method], cmap=signed_cmap, signed=True),
                            "signed attribution"),
                 "overlay": (overlays[method], "overlay (opaque where |attr| is high)")}
        columns = st.columns([1.1] + [1] * len(shown))
        columns[0].markdown(f"**{charts.title(method)}**  \n{seconds[method] * 1000:.0f} ms  \n"
                            f"peak |attr| {peak:.3g}")
        for col, what in zip(columns[1:], shown):
            img, caption = tiles[what]
            col.image(img, caption=caption, output_format="PNG")
            if what in ("magnitude", "signed"):
                colour_bar(col, cmap if what == "magnitude" else signed_cmap, peak, what == "signed")
    titled = {m: (charts.title(m), maps[m], signed_maps[m]) for m in maps}
    charts.downloads(f"{stem}_saliency", csv=images.attribution_table(maps, signed_maps),
                     png=lambda: figures.saliency_figure(
                         f"{choice.label} · {heading}", images.input_image(x), titled, cmap, signed_cmap, overlays,
                         note="Each method's maps are scaled to its own max |attr| (colour bars in attribution "
                              "units). Signed: positive raises ⟨f(x), f(x̃)⟩, negative lowers it."),
                     key="sal_maps")


st.divider()
if upload_tab.open:
    if upload_x is not None:
        arr = upload_x[0].numpy()
        sample_panel(arr, f"Your upload “{upload_name}”", None, upload_digest, upload_x)
else:
    x, y = explorer.sample(name, sample)
    sample_panel(x[0].numpy(), f"Test sample #{sample} (class {explorer.label_name(dataset, y)})",
                 sample, None, None)
