"""Labelled figures for PNG downloads: a title, row and column headers, captions and colour bars.

The tiles on screen sit beside Streamlit text; a downloaded PNG has nothing beside it, so a reviewer
needs every label inside the image. These figures are drawn with matplotlib's object API (no pyplot
state, safe in Streamlit's threads) from arrays the engine already computed.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

#: Inches per tile in the exported figures (the PNG is rendered at ``DPI``).
TILE_INCHES = 1.9
DPI = 110


@dataclass(frozen=True)
class Panel:
    """One tile: an RGB/grey uint8 ``image`` as is, or a float ``values`` map drawn with ``cmap`` and a colour bar."""

    image: np.ndarray | None = None
    values: np.ndarray | None = None
    cmap: str = "inferno"
    vmin: float = 0.0
    vmax: float = 1.0
    caption: str = ""
    colorbar_label: str = ""

    @classmethod
    def heat(cls, values: np.ndarray, cmap: str, signed: bool, caption: str = "", label: str = "") -> "Panel":
        """A heat map with a colour bar in attribution units: [0, max|a|], or symmetric [−max|a|, max|a|]."""
        v = np.asarray(values, dtype=np.float64).reshape(np.shape(values)[-2:])
        peak = float(np.abs(v).max()) or 1.0
        return cls(values=v if signed else np.abs(v), cmap=cmap, vmin=-peak if signed else 0.0, vmax=peak,
                   caption=caption, colorbar_label=label)


def _draw(fig: Figure, ax, panel: Panel) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    if panel.values is not None:
        shown = ax.imshow(panel.values, cmap=panel.cmap, vmin=panel.vmin, vmax=panel.vmax, interpolation="nearest")
        bar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.03)
        bar.ax.tick_params(labelsize=6)
        if panel.colorbar_label:
            bar.set_label(panel.colorbar_label, fontsize=6)
    elif panel.image is not None:
        img = panel.image
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.axis("off")
    if panel.caption:
        ax.set_xlabel(panel.caption, fontsize=7)


def labelled_figure(title: str, rows: Sequence[tuple[str, Sequence[Panel]]],
                    column_titles: Sequence[str] | None = None, note: str = "") -> Figure:
    """A grid of panels: one row per ``(row label, panels)``, with a title, column headers and a footnote."""
    n_rows = max(1, len(rows))
    n_cols = max([len(p) for _, p in rows] + [1])
    fig = Figure(figsize=(TILE_INCHES * n_cols + 1.2, TILE_INCHES * n_rows + 0.9), dpi=DPI)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for r, (label, panels) in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r][c]
            if c < len(panels):
                _draw(fig, ax, panels[c])
            else:
                ax.axis("off")
            if r == 0 and column_titles and c < len(column_titles):
                ax.set_title(column_titles[c], fontsize=8)
        axes[r][0].set_ylabel(label, fontsize=8)
    fig.suptitle(title, fontsize=10)
    if note:
        fig.text(0.01, 0.005, note, fontsize=6, ha="left", va="bottom", wrap=True)
    fig.tight_layout(rect=(0, 0.03 if note else 0, 1, 0.97))
    return fig


def figure_labels(fig: Figure) -> list[str]:
    """Every label drawn in ``fig``: its title, the footnote, then each panel's title, caption and row label."""
    out = [fig.get_suptitle()] + [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        out += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
    return [t for t in dict.fromkeys(out) if t]


def figure_png(fig: Figure) -> bytes:
    """Render a figure to PNG bytes, its labels also written as PNG text (Title, Description, Software).

    The text chunks make a downloaded figure searchable and checkable without reading pixels: what it shows
    (the title names model, sample and class) and every row, column and caption label.
    """
    from lfx_engine.version import engine_version

    labels = figure_labels(fig)
    title = fig.get_suptitle()
    metadata = {"Title": title, "Description": " | ".join(t for t in labels if t != title),
                "Software": f"LFX Explorer {engine_version()} (matplotlib)"}
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata=metadata)
    return buffer.getvalue()


def saliency_figure(heading: str, x_tile: np.ndarray, maps: dict[str, tuple[str, np.ndarray, np.ndarray]],
                    cmap: str, signed_cmap: str, overlay: dict[str, np.ndarray], note: str = "") -> bytes:
    """The Saliency export: per method, input | |attr| | signed attr | overlay, each map with its colour bar.

    ``maps`` is method id → (title, |attr| map, signed map); ``overlay`` holds each method's overlay tile.
    """
    rows = []
    for method, (title, magnitude, signed) in maps.items():
        rows.append((title, [Panel(image=x_tile, caption="input"),
                             Panel.heat(magnitude, cmap, signed=False, caption="|attr|", label="|attr|"),
                             Panel.heat(signed, signed_cmap, signed=True, caption="signed attr", label="attr"),
                             Panel(image=overlay[method], caption="overlay")]))
    return figure_png(labelled_figure(heading, rows, ["input", "heat map |attr|", "signed attribution", "overlay"],
                                      note))
