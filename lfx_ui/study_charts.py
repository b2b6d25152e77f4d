"""Altair charts of the Study pages; they only draw the tables the engine returns."""
from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from lfx_engine.metrics import spread_label

TASK_ORDER = ["Reconstruction", "Denoising", "Inpainting", "Classification"]
LOSS_TITLES = {"betavae": "β-VAE", "btcvae": "β-TC-VAE"}
LOSS_COLOURS = alt.Scale(domain=list(LOSS_TITLES.values()), range=["#4e79a7", "#e15759"])
METRIC_TITLES = {"pearson": "Pearson", "spearman": "Spearman", "cosine": "cosine", "entropy": "entropy",
                 "salient_units": "salient units"}


def correlation_heatmap(frame: pd.DataFrame, heading: str, subtitle: str | None = None,
                        height: int = 300, width: int | None = None) -> alt.LayerChart:
    """A task × task matrix: colour = mean correlation over runs, text = mean ± std, or mean [range] where the
    runs are too few for a std (rect + text)."""
    data = frame.copy()
    low = data["low"] if "low" in data else pd.Series(np.nan, index=data.index)  # results cached before the range
    high = data["high"] if "high" in data else pd.Series(np.nan, index=data.index)
    data["label"] = [spread_label(m, s, lo, hi) for m, s, lo, hi in zip(
        data["mean"].astype(float), data["std"].astype(float), low.astype(float), high.astype(float))]
    data["dark"] = data["mean"].astype(float).abs() > 0.6
    x = alt.X("task_b:N", sort=TASK_ORDER, title=None, axis=alt.Axis(labelAngle=-35, labelOverlap=False))
    y = alt.Y("task_a:N", sort=TASK_ORDER, title=None)
    base = alt.Chart(data).encode(x=x, y=y)
    rect = base.mark_rect(stroke="white", strokeWidth=1.5).encode(
        color=alt.Color("mean:Q", title="correlation",
                        scale=alt.Scale(domain=[-1, 1], scheme="redblue", reverse=True)),
        tooltip=[alt.Tooltip("task_a:N", title="task"), alt.Tooltip("task_b:N", title="vs"),
                 alt.Tooltip("mean:Q", format=".3f"), alt.Tooltip("std:Q", format=".3f", title="std over runs"),
                 alt.Tooltip("n_runs:Q", title="runs")])
    text = base.mark_text(fontSize=12).encode(
        text="label:N", color=alt.condition("datum.dark", alt.value("white"), alt.value("#111827")))
    title = alt.TitleParams(heading, subtitle=subtitle) if subtitle else heading
    chart = (rect + text).properties(height=height, title=title)
    return chart.properties(width=width) if width else chart


def disentanglement_metrics(long: pd.DataFrame, reference: pd.DataFrame, heading: str, box: bool,
                            width: int = 170, height: int = 180, columns: int = 3) -> alt.ConcatChart:
    """Each metric vs β (one panel per metric): our models as points (or boxes), colour = loss;
    the reproduction study's mean (± std where known) as black diamonds."""
    panels = []
    for metric, title in METRIC_TITLES.items():
        ours = long[long["metric"] == metric].copy()
        if ours.empty:
            continue
        ours["loss_title"] = ours["loss"].map(LOSS_TITLES).fillna(ours["loss"])
        ref = reference[reference["metric"] == metric].copy()
        ref["loss_title"] = ref["loss"].map(LOSS_TITLES).fillna(ref["loss"])
        ref["low"] = ref["mean"] - ref["std"].fillna(0)
        ref["high"] = ref["mean"] + ref["std"].fillna(0)
        betas = sorted({*ours["beta"].astype(float), *ref["beta"].astype(float)})
        x = alt.X("beta:O", title="β", sort=betas, scale=alt.Scale(domain=betas), axis=alt.Axis(labelAngle=0))
        offset = alt.XOffset("loss_title:N", scale=alt.Scale(domain=list(LOSS_TITLES.values())))
        y = alt.Y("value:Q", title=title, scale=alt.Scale(zero=False))
        colour = alt.Color("loss_title:N", title="loss", scale=LOSS_COLOURS,
                           legend=alt.Legend(orient="top", direction="horizontal"))  # a right legend is clipped
        tooltip = [alt.Tooltip("model:N"), alt.Tooltip("loss_title:N", title="loss"), alt.Tooltip("beta:Q", title="β"),
                   alt.Tooltip("run:Q"), alt.Tooltip("value:Q", format=".4f")]
        base = alt.Chart(ours).encode(x=x, xOffset=offset)
        layers = []
        if box:
            layers.append(base.mark_boxplot(extent="min-max", size=12, opacity=0.5).encode(y=y, color=colour))
        layers.append(base.mark_circle(size=55, opacity=0.9).encode(y=y, color=colour, tooltip=tooltip))
        if not ref.empty:
            rbase = alt.Chart(ref).encode(x=x, xOffset=offset)
            layers.append(rbase.mark_rule(color="#111827", strokeWidth=1.2).encode(y=alt.Y("low:Q", title=title),
                                                                                  y2="high:Q"))
            layers.append(rbase.mark_point(shape="diamond", filled=True, color="#111827", size=60).encode(
                y=alt.Y("mean:Q", title=title),
                tooltip=[alt.Tooltip("loss_title:N", title="loss"), alt.Tooltip("beta:Q", title="β"),
                         alt.Tooltip("mean:Q", format=".3f", title="reproduction study"),
                         alt.Tooltip("std:Q", format=".3f", title="std over 5 runs")]))
        panels.append(alt.layer(*layers).properties(width=width, height=height, title=title))
    return alt.concat(*panels, columns=columns).properties(title=alt.TitleParams(
        heading, subtitle=["dots: our models (one per run)",
                           "black diamond: reproduction study mean (bar: ± std, where published)"]))


def encoder_vs_full_bars(summary: pd.DataFrame, ours_label: str, heading: str,
                         height: int = 380) -> alt.LayerChart | alt.FacetChart:
    """Per method: mean per-image Pearson (encoder vs full classifier) ± 1.96·SEM, ours beside the study's."""
    rows = []
    for r in summary.itertuples():
        rows.append({"method": r.method_title, "source": ours_label, "mean": r.mean,
                     "ci95": r.ci95, "models": r.n_models})
        if np.isfinite(getattr(r, "reference_mean", np.nan)):
            rows.append({"method": r.method_title, "source": "reproduction study (5 classifiers)",
                         "mean": r.reference_mean, "ci95": r.reference_ci95, "models": 5})
    data = pd.DataFrame(rows)
    data["low"] = data["mean"] - data["ci95"].fillna(0)
    data["high"] = data["mean"] + data["ci95"].fillna(0)
    sources = list(dict.fromkeys(data["source"]))
    x = alt.X("method:N", title=None, axis=alt.Axis(labelAngle=0, labelLimit=240),
              sort=["Integrated Gradients", "GradientShap", "Saliency"])
    offset = alt.XOffset("source:N", sort=sources)
    colour = alt.Color("source:N", title=None, sort=sources,
                       scale=alt.Scale(domain=sources, range=["#4e79a7", "#9ca3af"][: len(sources)]),
                       legend=alt.Legend(orient="top", labelLimit=400))
    y_title = "per-image Pearson r"
    base = alt.Chart(data).encode(x=x, xOffset=offset)
    bars = base.mark_bar().encode(
        y=alt.Y("mean:Q", title=y_title), color=colour,
        tooltip=["method:N", "source:N", alt.Tooltip("mean:Q", format=".3f"),
                 alt.Tooltip("ci95:Q", format=".3f", title="1.96·SEM"), "models:Q"])
    errors = base.mark_errorbar(ticks=True, color="#111827").encode(y=alt.Y("low:Q", title=y_title), y2="high:Q")
    return alt.layer(bars, errors).properties(height=height, title=alt.TitleParams(
        heading, subtitle="bars: mean over classifiers of the per-image Pearson · whiskers: ± 1.96·SEM"))


def noise_ceiling_table(against: pd.DataFrame, ceiling: pd.DataFrame, correlation: str) -> pd.DataFrame:
    """One row per cross-task pair (features, then examples): its correlation over the runs, both tasks' noise
    ceilings (the same task across runs) and the engine's verdict, as display text."""
    columns = ["explanations", "pair", "cross-task, mean [runs' range]", "ceiling of the first task",
               "ceiling of the second task", "verdict"]
    if against.empty or ceiling.empty:
        return pd.DataFrame(columns=columns)
    own = ceiling[ceiling["correlation"] == correlation]

    def spread(task: str, kind: str) -> str:
        values = own[(own["task"] == task) & (own["kind"] == kind)]["value"].astype(float)
        if values.empty:
            return "—"
        return f"{values.mean():.2f} [{values.min():.2f}–{values.max():.2f}]"  # always the range: its column

    rows = []
    part = against[against["correlation"] == correlation].copy()
    part["order"] = part["kind"].map({"features": 0, "examples": 1})
    part["first"] = [min((a, b), key=TASK_ORDER.index) for a, b in zip(part["task_a"], part["task_b"])]
    part["second"] = [max((a, b), key=TASK_ORDER.index) for a, b in zip(part["task_a"], part["task_b"])]
    part = part.sort_values(["order", "first", "second"], key=lambda col: col.map(
        lambda v: TASK_ORDER.index(v) if v in TASK_ORDER else v))
    for r in part.itertuples():
        rows.append({"explanations": r.kind, "pair": f"{r.first} – {r.second}",
                     "cross-task, mean [runs' range]": f"{r.cross_mean:.2f} [{r.cross_low:.2f}–{r.cross_high:.2f}]",
                     "ceiling of the first task": spread(r.first, r.kind),
                     "ceiling of the second task": spread(r.second, r.kind), "verdict": r.verdict})
    return pd.DataFrame(rows, columns=columns)
