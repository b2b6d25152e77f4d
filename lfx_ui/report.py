"""A shareable report: one self-contained HTML file of the current view, readable offline.

Every figure a page draws already goes through :func:`lfx_ui.charts.downloads` (its data and its
chart or image); that function also registers it here. After the page has run, the router puts a
**Report (HTML)** button in the sidebar. Its file holds the page's title, every setting of the view,
the deep link that reopens it, and each figure: charts as inline SVG (vl-convert, no JavaScript or
network needed), images as embedded PNG, and tables as HTML with the full CSV embedded as a download
link. All text from the view is HTML-escaped.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import urlencode, urlsplit

import streamlit as st

from lfx_ui import state

if TYPE_CHECKING:  # pandas loads with the engine, after the first page is drawn
    import pandas as pd

#: Rows of a table shown in the report itself (the embedded CSV always holds all of them).
MAX_ROWS = 200
_KEY = "_lfx_report"
VIEW_KEY = "_lfx_report_view"


@dataclass
class Figure:
    """One registered figure: its data and, optionally, an altair chart or a deferred PNG."""

    stem: str
    csv: Callable[[], pd.DataFrame] | pd.DataFrame | None = None
    chart: Any = None
    png: Callable[[], bytes] | None = None


@dataclass
class Collected:
    """The figures of one page run, in drawing order (a fragment rerun replaces its own entries)."""

    figures: dict[str, Figure] = field(default_factory=dict)


def start() -> None:
    """Begin a page run: forget the previous page's figures."""
    st.session_state[_KEY] = Collected()


def register(stem: str, *, csv=None, chart=None, png=None) -> None:
    """Add a figure to the current view's report (called by ``charts.downloads``)."""
    collected = st.session_state.get(_KEY)
    if collected is None:
        collected = st.session_state[_KEY] = Collected()
    collected.figures[stem] = Figure(stem, csv, chart, png)


def _table(frame: pd.DataFrame) -> str:
    shown = frame.head(MAX_ROWS)
    note = "" if len(frame) <= MAX_ROWS else f"<p class='note'>First {MAX_ROWS} of {len(frame):,} rows.</p>"
    csv = base64.b64encode(frame.to_csv(index=False).encode()).decode()
    return (shown.to_html(index=False, escape=True, border=0, classes="table", float_format=lambda v: f"{v:.6g}")
            + note + f"<p><a download='data.csv' href='data:text/csv;base64,{csv}'>Full data (CSV, "
            f"{len(frame):,} rows)</a></p>")


def _figure_html(fig: Figure) -> str:
    """One figure as HTML: the chart (SVG) or image (PNG), then its table. A part that fails says so."""
    parts = [f"<h2>{html.escape(fig.stem)}</h2>"]
    try:
        if fig.chart is not None:
            import vl_convert as vlc

            parts.append(f"<div class='chart'>{vlc.vegalite_to_svg(fig.chart.to_json())}</div>")
        elif fig.png is not None:
            encoded = base64.b64encode(fig.png()).decode()
            parts.append(f"<img alt='{html.escape(fig.stem)}' src='data:image/png;base64,{encoded}'>")
    except Exception as exc:  # noqa: BLE001 - one figure must not lose the whole report
        parts.append(f"<p class='note'>This figure could not be drawn ({html.escape(type(exc).__name__)}).</p>")
    if fig.csv is not None:
        try:
            frame = fig.csv() if callable(fig.csv) else fig.csv
            parts.append(_table(frame))
        except Exception as exc:  # noqa: BLE001
            parts.append(f"<p class='note'>Its table could not be built ({html.escape(type(exc).__name__)}).</p>")
    return "<section>" + "".join(parts) + "</section>"


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#111827;padding:0 1rem}
h1{color:#c2410c} section{border-top:1px solid #e5e7eb;margin-top:1.5rem;padding-top:.5rem}
table{border-collapse:collapse;font-size:.8rem} td,th{border:1px solid #e5e7eb;padding:2px 6px;text-align:right}
.note{color:#6b7280;font-size:.85rem} img{max-width:100%;image-rendering:pixelated} .chart svg{max-width:100%}
code{background:#f3f4f6;padding:1px 4px;word-break:break-all}
"""


def build_html(title: str, settings: dict[str, str], link: str, figures: list[Figure], version: str) -> str:
    """The whole report as one HTML document (no external resources)."""
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in settings.items())
    body = "".join(_figure_html(f) for f in figures) or "<p class='note'>This view drew no figure.</p>"
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)} · LFX Explorer"
            f"</title><style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p class='note'>LFX Explorer {html.escape(version)} · report generated {when}</p>"
            f"<h2>Settings</h2><table class='settings'>{rows}</table>"
            f"<p>Reopen this view: <a href='{html.escape(link, quote=True)}'><code>{html.escape(link)}</code></a></p>"
            f"{body}</body></html>")


def view_settings() -> dict[str, str]:
    """The selection and every linked widget setting of the view, as the link names them."""
    out: dict[str, str] = {}
    for name in state.FIELDS:
        value = state.get(name)
        if value not in (None, "", []):
            out[name] = ",".join(value) if isinstance(value, list) else str(value)
    out.update(state.linked_settings())
    return out


def view_link(url_path: str, settings: dict[str, str]) -> str:
    """The deep link of the view: the app's origin (as the browser reached it), the page and its settings."""
    parts = urlsplit(st.context.url or "")
    origin = f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""
    return f"{origin}/{url_path}" + (f"?{urlencode(settings)}" if settings else "")


def sidebar_button(title: str, url_path: str) -> None:
    """The sidebar's **Report (HTML)** download of the view that just ran."""
    collected: Collected = st.session_state.get(_KEY) or Collected()
    settings = view_settings()
    link = view_link(url_path, settings)
    figures = list(collected.figures.values())
    st.session_state[VIEW_KEY] = (title, settings, link)  # what the button's file holds (read by tests)
    st.sidebar.download_button(
        "Report (HTML)", data=lambda: build_html(title, settings, link, figures, _engine_version()).encode(),
        file_name=f"lfx_report_{url_path or 'home'}.html", mime="text/html", icon=":material/description:",
        key="report_html", on_click="ignore",
        help="One self-contained HTML file of this view: its figures, tables, settings and the link that reopens "
             "it. It opens offline.")


def _engine_version() -> str:
    from lfx_engine.version import engine_version  # the engine package: imported when a report is built

    return engine_version()
