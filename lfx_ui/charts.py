"""Altair charts of the explorer and the download buttons every figure carries.

Charts only draw tables the engine returns; no number is computed here
beyond reshaping for display.
"""
from __future__ import annotations

import re
from typing import Callable

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from lfx_engine.explorer import METHOD_TITLES
from lfx_engine.metrics.masking_controls import INPUT_CONTROLS, RANDOM_INIT
from lfx_ui import images, report

#: Altair selection name and Streamlit key of the latent map (tests inject selections under these).
LATENT_CHART_KEY = "latent_chart"
LATENT_SELECTION = "pick"


#: One colour per method across every chart (tableau10), the random control in grey.
_PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
            "#bab0ac")


#: Input controls in greys; a method on a random encoder keeps the method's colour with a dash.
_CONTROL_COLOURS = dict(zip(INPUT_CONTROLS, ("#6b7280", "#a3a3a3", "#1f2937")))


def is_control(method: str) -> bool:
    """Whether a curve is a reference control (drawn dashed) rather than an attribution method."""
    return method in _CONTROL_COLOURS or method.endswith(RANDOM_INIT)


def method_color(methods) -> alt.Scale:
    """A colour scale over method titles: fixed colour per method, grey for the random control."""
    from lfx_engine.explorer import EXAMPLE_METHODS, FEATURE_METHODS

    domain, colours = [], []
    for m in dict.fromkeys(methods):
        domain.append(title(m))
        if m in _CONTROL_COLOURS:
            colours.append(_CONTROL_COLOURS[m])
        elif m.endswith(RANDOM_INIT):  # a method's randomised twin: its own colour, dashed
            base = m[:-len(RANDOM_INIT)]
            colours.append(_PALETTE[FEATURE_METHODS.index(base) % len(_PALETTE)] if base in FEATURE_METHODS
                           else _PALETTE[-1])
        else:
            order = FEATURE_METHODS if m in FEATURE_METHODS else EXAMPLE_METHODS
            colours.append(_PALETTE[order.index(m) % len(_PALETTE)] if m in order else _PALETTE[-1])
    return alt.Scale(domain=domain, range=colours)


def title(method: str) -> str:
    """Display name of a method."""
    return METHOD_TITLES.get(method, method)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "figure"


# --------------------------------------------------------------------------- downloads


def chart_png(chart: alt.TopLevelMixin, scale: float = 2.0) -> bytes:
    """Render an altair chart to PNG with vl-convert (no browser needed)."""
    import vl_convert as vlc

    return vlc.vegalite_to_png(chart.to_json(), scale=scale)


def downloads(stem: str, *, csv: Callable[[], pd.DataFrame] | pd.DataFrame,
              chart: alt.TopLevelMixin | None = None, png: Callable[[], bytes] | None = None,
              key: str | None = None) -> None:
    """CSV (data) and PNG (image) download buttons for one figure; both built only when clicked."""
    stem = _slug(stem)
    key = _slug(key or stem)
    frame = csv
    report.register(stem, csv=csv, chart=chart, png=png)

    def csv_bytes() -> bytes:
        table = frame() if callable(frame) else frame
        return table.to_csv(index=False).encode()

    if png is None and chart is not None:
        def png() -> bytes:  # noqa: E306 - deferred so vl-convert runs on click only
            return chart_png(chart)

    row = st.container(horizontal=True, gap="small")
    row.download_button("CSV", data=csv_bytes, file_name=f"{stem}.csv", mime="text/csv", icon=":material/download:",
                        key=f"dl_csv_{key}", on_click="ignore", help="Download this figure's data")
    if png is not None:
        row.download_button("PNG", data=png, file_name=f"{stem}.png", mime="image/png", icon=":material/download:",
                            key=f"dl_png_{key}", on_click="ignore", help="Download this figure as an image")


def image_png(img: np.ndarray) -> Callable[[], bytes]:
    """A deferred PNG encoder for a uint8 image (for :func:`downloads`)."""
    return lambda: images.png_bytes(img)


# --------------------------------------------------------------------------- latent map


def latent_map(frame: pd.DataFrame, selected: int | None = None, height: int = 420) -> alt.LayerChart | alt.FacetChart:
    """Scatter of the test latents' first two principal components, colour = class; click picks a point."""
    pick = alt.selection_point(fields=["idx"], name=LATENT_SELECTION, on="click", clear=False)
    base = alt.Chart(frame)
    points = base.mark_circle(size=28, opacity=0.75).encode(
        x=alt.X("pc1:Q", title="PC 1 of the latents"),
        y=alt.Y("pc2:Q", title="PC 2"),
        color=alt.Color("label:N", title="class", sort=sorted(frame["label"].unique(), key=_natural)),
        tooltip=[alt.Tooltip("idx:Q", title="test sample"), alt.Tooltip("label:N", title="class")],
    ).add_params(pick)
    layers = [points]
    if selected is not None and 0 <= selected < len(frame) and int(frame["idx"].iloc[selected]) == selected:
        ring = alt.Chart(frame.iloc[[selected]]).mark_point(size=260, shape="circle", filled=False,
                                                            strokeWidth=2.5, color="black").encode(
            x="pc1:Q", y="pc2:Q", tooltip=[alt.Tooltip("idx:Q", title="selected sample")])
        layers.append(ring)
    return alt.layer(*layers).properties(height=height, title="Test latents (PCA) — click a point to explain it")


def _natural(label: str):
    return (0, int(label)) if str(label).isdigit() else (1, str(label))


def read_pick(event) -> int | None:
    """The picked test index from a latent-map event (read dict-style, so tests can inject it)."""
    picked = ((event or {}).get("selection", {}) or {}).get(LATENT_SELECTION, []) or []
    if not picked:
        return None
    value = picked[0].get("idx")
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


#: Altair selection names of the Embedding page's scatter (tests inject selections under these).
EMBEDDING_CHART_KEY = "embedding_chart"
GROUP_SELECTION = "group"


def embedding_map(frame: pd.DataFrame, colour: str, colour_title: str, heading: str, *,
                  selected: int | None = None, height: int = 460) -> alt.LayerChart | alt.FacetChart:
    """Scatter of a 2-D projection (columns idx, x, y, class and ``colour``); a click picks a point
    (:data:`LATENT_SELECTION`, read with :func:`read_pick`), a drag draws a box (:data:`GROUP_SELECTION`,
    read with :func:`read_box`). An ``image`` column (data URLs) shows as the hover thumbnail."""
    pick = alt.selection_point(fields=["idx"], name=LATENT_SELECTION, on="click", clear=False)
    box = alt.selection_interval(name=GROUP_SELECTION, encodings=["x", "y"])
    if colour == "class":
        color = alt.Color("class:N", title="class", sort=sorted(frame["class"].unique(), key=_natural))
    else:
        color = alt.Color(f"{colour}:Q", title=colour_title, scale=alt.Scale(scheme="viridis"))
    tooltip = ([alt.Tooltip("image:N", title="image")] if "image" in frame else []) + [
        alt.Tooltip("idx:Q", title="test sample"), alt.Tooltip("class:N", title="class")]
    if colour != "class":
        tooltip.append(alt.Tooltip(f"{colour}:Q", title=colour_title, format=".3g"))
    points = alt.Chart(frame).mark_circle(size=22, opacity=0.75).encode(
        x=alt.X("x:Q", title="dimension 1"), y=alt.Y("y:Q", title="dimension 2"), color=color, tooltip=tooltip,
    ).add_params(pick, box)
    layers = [points]
    hit = frame[frame["idx"] == selected] if selected is not None else frame.iloc[:0]
    if len(hit):
        layers.append(alt.Chart(hit[["idx", "x", "y"]]).mark_point(size=260, filled=False, strokeWidth=2.5,
                                                                   color="black").encode(x="x:Q", y="y:Q"))
    return alt.layer(*layers).properties(height=height, title=heading)


def read_box(event) -> dict[str, tuple[float, float]] | None:
    """The box of an embedding-map event as ``{"x": (lo, hi), "y": (lo, hi)}``, or None when there is none."""
    box = ((event or {}).get("selection", {}) or {}).get(GROUP_SELECTION) or {}
    try:
        out = {axis: (float(min(box[axis])), float(max(box[axis]))) for axis in ("x", "y")}
    except (KeyError, TypeError, ValueError):
        return None
    return out


def class_mix(classes: pd.DataFrame, heading: str, height: int = 220) -> alt.Chart:
    """Bar chart of a group's class counts (columns class, count)."""
    return alt.Chart(classes).mark_bar().encode(
        x=alt.X("class:N", sort=sorted(classes["class"], key=_natural), title="class"),
        y=alt.Y("count:Q", title="members"), tooltip=["class:N", "count:Q"],
    ).properties(height=height, title=heading)


# --------------------------------------------------------------------------- ECG


def ecg_importance(beat: np.ndarray, importance: np.ndarray | None, heading: str | None, height: int = 200,
                   color: str = "#c2410c") -> alt.LayerChart | alt.FacetChart:
    """An ECG beat as a line with each time step shaded by its importance (darker = more important)."""
    values = np.asarray(beat, dtype=np.float64).ravel()
    t = np.arange(values.size)
    frame = pd.DataFrame({"t": t, "t_end": t + 1, "value": values})
    y = alt.Y("value:Q", title="signal (z-normalised)", scale=alt.Scale(zero=False))
    line = alt.Chart(frame).mark_line(color="#1f2937", strokeWidth=1.6).encode(
        x=alt.X("t:Q", title="time step"), y=y)
    layers = []
    if importance is not None:
        imp = np.asarray(importance, dtype=np.float64).ravel()
        peak = float(imp.max()) if imp.size and imp.max() > 0 else 1.0
        frame["importance"] = imp / peak
        shade = alt.Chart(frame).mark_rect(color=color).encode(
            x="t:Q", x2="t_end:Q",
            opacity=alt.Opacity("importance:Q", scale=alt.Scale(domain=[0, 1], range=[0, 0.85]),
                                title="importance (÷ max)"),
            tooltip=[alt.Tooltip("t:Q", title="time step"), alt.Tooltip("importance:Q", format=".2f")],
        )
        layers.append(shade)
    layers.append(line)
    chart = alt.layer(*layers, data=frame).properties(height=height)
    return chart.properties(title=heading) if heading else chart


def ecg_gallery(frame: pd.DataFrame, columns: int = 5, width: int = 130, height: int = 80) -> alt.FacetChart:
    """Small multiples of beats: ``frame`` has columns ``tile`` (facet title), ``order``, ``t``, ``value``."""
    return alt.Chart(frame).mark_line(color="#c2410c", strokeWidth=1.2).encode(
        x=alt.X("t:Q", axis=None), y=alt.Y("value:Q", axis=None, scale=alt.Scale(zero=False)),
    ).properties(width=width, height=height).facet(
        facet=alt.Facet("tile:N", title=None, sort=alt.SortField("order")), columns=columns,
    ).resolve_scale(y="independent")


# --------------------------------------------------------------------------- masking
# the random control is dashed; its colour legend entry names it, so the dash needs no legend of its own
_DASH_CONTROL = alt.StrokeDash("control:N", scale=alt.Scale(domain=["attribution", "control"],
                                                            range=[[1, 0], [6, 4]]), legend=None)


def masking_curves(summary: pd.DataFrame, heading: str, height: int = 380) -> alt.LayerChart | alt.FacetChart:
    """Mean representation shift vs % masked per method (line) with its 95% CI (band); random dashed."""
    frame = summary.copy()
    frame["method_title"] = frame["method"].map(title)
    frame["control"] = np.where(frame["method"].map(is_control), "control", "attribution")
    scale = method_color(frame["method"])
    x = alt.X("percent:Q", title="% of features masked (most important first)")
    color = alt.Color("method_title:N", title="method (band: 95% CI)", scale=scale,
                      legend=alt.Legend(symbolType="circle", symbolOpacity=1))
    band = alt.Chart(frame).mark_area(opacity=0.18).encode(
        x=x, y=alt.Y("ci_low:Q", title="representation shift ‖f(x) − f(x̃)‖²"), y2="ci_high:Q", color=color)
    line = alt.Chart(frame).mark_line(point=alt.OverlayMarkDef(size=45, filled=True)).encode(
        x=x, y="mean:Q", color=color, shape=alt.Shape("method_title:N", title="method (band: 95% CI)"),
        strokeDash=_DASH_CONTROL,
        tooltip=[alt.Tooltip("method_title:N", title="method"), "percent:Q", "M:Q",
                 alt.Tooltip("mean:Q", format=".4g"), alt.Tooltip("ci_low:Q", format=".4g"),
                 alt.Tooltip("ci_high:Q", format=".4g"), "n:Q"],
    )
    return alt.layer(band, line).properties(height=height, title=alt.TitleParams(
        heading, subtitle="line: mean over the subset · band: 95% confidence interval · dashed: controls"))


def sample_masking_curve(curve: pd.DataFrame, heading: str, height: int = 300) -> alt.Chart:
    """One sample's shift vs % masked per method."""
    frame = curve.copy()
    frame["method_title"] = frame["method"].map(title)
    frame["control"] = np.where(frame["method"].map(is_control), "control", "attribution")
    return alt.Chart(frame).mark_line(point=alt.OverlayMarkDef(size=45, filled=True)).encode(
        x=alt.X("percent:Q", title="% of features masked"),
        y=alt.Y("mean:Q", title="shift ‖f(x) − f(x̃)‖²"),
        color=alt.Color("method_title:N", title="method", scale=method_color(frame["method"])),
        shape=alt.Shape("method_title:N", title="method"),
        strokeDash=_DASH_CONTROL,
        tooltip=[alt.Tooltip("method_title:N", title="method"), "percent:Q", "M:Q",
                 alt.Tooltip("mean:Q", format=".4g", title="shift")],
    ).properties(height=height, title=heading)


def ecg_masked_views(frame: pd.DataFrame, heading: str, width: int = 170, height: int = 90) -> alt.FacetChart:
    """Small multiples, one per masking level: the original beat (grey), the masked beat (colour) and the
    masked time steps shaded. ``frame`` has ``t``, ``original``, ``value``, ``masked`` (bool), ``level``
    (facet title) and ``percent`` (facet order)."""
    data = frame.assign(t_end=frame["t"] + 1)
    x = alt.X("t:Q", title="time step")
    shade = alt.Chart().transform_filter(alt.datum.masked).mark_rect(color="#fde68a", opacity=0.8).encode(
        x=x, x2="t_end:Q")
    original = alt.Chart().mark_line(color="#9ca3af", strokeWidth=1).encode(
        x=x, y=alt.Y("original:Q", title="signal", scale=alt.Scale(zero=False)))
    masked = alt.Chart().mark_line(color="#c2410c", strokeWidth=1.4).encode(x=x, y="value:Q")
    return alt.layer(shade, original, masked, data=data).properties(width=width, height=height).facet(
        facet=alt.Facet("level:N", title=None, sort=alt.SortField("percent")), columns=4,
    ).properties(title=alt.TitleParams(heading, subtitle="grey: the beat · orange: masked beat · "
                                                         "yellow: masked time steps"))


# --------------------------------------------------------------------------- example importance


def similarity_rates(rates: pd.DataFrame, heading: str, height: int = 380) -> alt.LayerChart | alt.FacetChart:
    """Similarity rate vs % training examples selected: colour = method, dash = most/least; prior as a rule."""
    frame = rates.melt(id_vars=["fraction", "n", "prior", "method"], value_vars=["most", "least"],
                       var_name="selection", value_name="rate")
    frame["percent"] = frame["fraction"] * 100
    frame["method_title"] = frame["method"].map(title)
    frame["selection"] = frame["selection"].map({"most": "most important", "least": "least important"})
    lines = alt.Chart(frame).mark_line(point=True).encode(
        x=alt.X("percent:Q", title="% of training examples selected"),
        y=alt.Y("rate:Q", title="similarity rate (same label)", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("method_title:N", title="method", scale=method_color(rates["method"])),
        strokeDash=alt.StrokeDash("selection:N", sort=["most important", "least important"],
                                  scale=alt.Scale(domain=["most important", "least important"],
                                                  range=[[1, 0], [6, 4]]),
                                  legend=None),
        tooltip=[alt.Tooltip("method_title:N", title="method"), "selection:N", "percent:Q", "n:Q",
                 alt.Tooltip("rate:Q", format=".3f")],
    )
    prior = pd.DataFrame({"prior": [float(rates["prior"].mean())], "label": ["class prior"]})
    rule = alt.Chart(prior).mark_rule(color="#6b7280", strokeDash=[2, 2]).encode(
        y="prior:Q", tooltip=[alt.Tooltip("prior:Q", format=".3f", title="class prior")])
    layers = [lines, rule]
    if "most_ci_low" in rates:  # the engine's 95% intervals over test examples, as bands
        bands = pd.concat([rates[["fraction", "method", f"{side}_ci_low", f"{side}_ci_high"]].set_axis(
            ["fraction", "method", "low", "high"], axis=1).assign(selection=side) for side in ("most", "least")])
        bands["percent"] = bands["fraction"] * 100
        bands["method_title"] = bands["method"].map(title)
        layers.insert(0, alt.Chart(bands).mark_area(opacity=0.15).encode(
            x="percent:Q", y="low:Q", y2="high:Q", detail="selection:N",
            color=alt.Color("method_title:N", title="method", scale=method_color(rates["method"]))))
    return alt.layer(*layers).properties(height=height, title=alt.TitleParams(
        heading, subtitle="solid: most important examples · dashed: least important · dotted: class prior · "
                          "bands: 95% intervals"))
