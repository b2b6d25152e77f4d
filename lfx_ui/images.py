"""Turn engine arrays into crisp display images (uint8, channels-last)."""
from __future__ import annotations

import io
from typing import TYPE_CHECKING

import numpy as np
from matplotlib import colormaps
from PIL import Image

if TYPE_CHECKING:
    import pandas as pd

DISPLAY_SIZE = 168  # pixels on screen for one image tile


def _channels_last(x: np.ndarray) -> np.ndarray:
    """(C,H,W) or (H,W) in [0,1] -> (H,W) or (H,W,3) float."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 3:
        x = x[0] if x.shape[0] == 1 else np.transpose(x, (1, 2, 0))
    return np.clip(x, 0.0, 1.0)


def upscale(img: np.ndarray, size: int = DISPLAY_SIZE) -> np.ndarray:
    """Nearest-neighbour upscale (np.kron) so small inputs stay sharp in the browser."""
    factor = max(1, size // img.shape[0])
    block = np.ones((factor, factor) + ((1,) if img.ndim == 3 else ()), dtype=img.dtype)
    return np.kron(img, block)


def input_image(x: np.ndarray, size: int = DISPLAY_SIZE) -> np.ndarray:
    """An input (C,H,W) in [0,1] as an upscaled uint8 image."""
    return upscale((_channels_last(x) * 255).round().astype(np.uint8), size)


#: Colour maps offered for |attr| (sequential, dark = 0) and for the signed view (diverging, white = 0).
SEQUENTIAL_CMAPS = ("inferno", "viridis", "magma", "hot", "Greys")
DIVERGING_CMAPS = ("RdBu_r", "coolwarm", "PuOr_r", "PiYG")


def heatmap(attr: np.ndarray, size: int = DISPLAY_SIZE, cmap: str = "inferno",
            peak: float | None = None, signed: bool = False) -> np.ndarray:
    """An importance map (H,W) or (1,H,W) as RGB uint8, scaled to its max |value| (or to a shared ``peak``).

    ``signed=False`` draws |attr| on a sequential map (0 → the map's low end); ``signed=True`` draws the signed
    value on a diverging map centred on 0 (−peak → low end, +peak → high end).
    """
    a = np.asarray(attr, dtype=np.float32).reshape(attr.shape[-2:])
    if not signed:
        a = np.abs(a)
    peak = float(np.abs(a).max()) if peak is None else float(peak)
    a = a / peak if peak > 0 else np.zeros_like(a)
    if signed:
        a = (np.clip(a, -1.0, 1.0) + 1.0) / 2.0
    rgb = (colormaps[cmap](np.clip(a, 0.0, 1.0))[..., :3] * 255).round().astype(np.uint8)
    return upscale(rgb, size)


def overlay(x: np.ndarray, attr: np.ndarray, size: int = DISPLAY_SIZE, alpha: float = 0.85,
            cmap: str = "inferno") -> np.ndarray:
    """The input in grey with the heat map blended on top, opaque where the importance is high.

    The blend weight of each pixel grows with its normalised |attr|, so unimportant pixels keep the input's
    own grey (dark images stay readable: no dark colour is laid over a dark background) and important ones take
    the colour map's bright end.
    """
    base = _channels_last(x)
    grey = base if base.ndim == 2 else base.mean(axis=2)
    grey_rgb = np.repeat(grey[..., None], 3, axis=2)
    a = np.abs(np.asarray(attr, dtype=np.float32)).reshape(attr.shape[-2:])
    peak = float(a.max())
    weight = (a / peak if peak > 0 else np.zeros_like(a))[..., None] * alpha
    heat = heatmap(attr, size=attr.shape[-1], cmap=cmap).astype(np.float32) / 255.0
    mixed = (1 - weight) * grey_rgb + weight * heat
    return upscale((np.clip(mixed, 0, 1) * 255).round().astype(np.uint8), size)


def colorbar(cmap: str, width: int = DISPLAY_SIZE, height: int = 12) -> np.ndarray:
    """A horizontal colour bar (RGB uint8) of ``cmap`` from its low end (left) to its high end (right)."""
    ramp = np.linspace(0.0, 1.0, width)[None, :].repeat(height, axis=0)
    return (colormaps[cmap](ramp)[..., :3] * 255).round().astype(np.uint8)


def png_bytes(img: np.ndarray) -> bytes:
    """Encode a uint8 image as PNG (for downloads)."""
    buffer = io.BytesIO()
    Image.fromarray(img).save(buffer, format="PNG")
    return buffer.getvalue()


def side_by_side(images: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Concatenate equally tall RGB/grey uint8 images horizontally with a white gap."""
    rgb = [np.repeat(i[..., None], 3, axis=2) if i.ndim == 2 else i for i in images]
    height = max(i.shape[0] for i in rgb)
    spacer = np.full((height, gap, 3), 255, dtype=np.uint8)
    parts: list[np.ndarray] = []
    for i, img in enumerate(rgb):
        if i:
            parts.append(spacer)
        parts.append(img)
    return np.concatenate(parts, axis=1)


def thumbnail(x: np.ndarray, size: int = 84) -> np.ndarray:
    """A small crisp tile of an input: images upscaled by nearest neighbour, series drawn as a line."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2 and x.shape[-1] == 1:  # (T, 1) series
        return series_thumbnail(x[:, 0], width=size, height=max(24, size * 2 // 3))
    return input_image(x, size)


def series_thumbnail(values: np.ndarray, width: int = 120, height: int = 64, pad: int = 3,
                     color: tuple[int, int, int] = (194, 65, 12)) -> np.ndarray:
    """A 1-D series as a small RGB line drawing (uint8), for galleries of ECG beats."""
    from PIL import ImageDraw

    v = np.asarray(values, dtype=np.float64).ravel()
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    if v.size:
        lo, hi = float(np.min(v)), float(np.max(v))
        span = hi - lo if hi > lo else 1.0
        xs = pad + np.linspace(0, width - 1 - 2 * pad, v.size)
        ys = pad + (1 - (v - lo) / span) * (height - 1 - 2 * pad)
        ImageDraw.Draw(canvas).line(list(zip(xs.tolist(), ys.tolist())), fill=color, width=1)
    return np.asarray(canvas)


#: Colour that marks masked pixels (cyan: apart from the inferno/viridis heat maps and from grey inputs).
MASK_COLOUR = np.array([34, 211, 238], dtype=np.float32) / 255.0


def masked_image(x_masked: np.ndarray, mask: np.ndarray | None = None, size: int = DISPLAY_SIZE,
                 alpha: float = 0.6) -> np.ndarray:
    """A masked input (C,H,W) as a crisp tile; with ``mask`` (H,W), the masked pixels are tinted cyan.

    The tint shows what was masked even where the input already equals the baseline (a black pixel masked
    with a black baseline looks unchanged).
    """
    if mask is None:
        return input_image(x_masked, size)
    base = _channels_last(x_masked)
    rgb = base if base.ndim == 3 else np.repeat(base[..., None], 3, axis=2)
    m = np.asarray(mask, dtype=bool)[..., None]
    tinted = np.where(m, (1 - alpha) * rgb + alpha * MASK_COLOUR, rgb)
    return upscale((np.clip(tinted, 0, 1) * 255).round().astype(np.uint8), size)


def grid(images: list[np.ndarray], columns: int, gap: int = 4) -> np.ndarray:
    """Tile equally sized uint8 images into rows of ``columns`` (white gaps), for PNG downloads."""
    if not images:
        return np.full((1, 1, 3), 255, dtype=np.uint8)
    rows = [side_by_side(images[i: i + columns], gap) for i in range(0, len(images), columns)]
    width = max(r.shape[1] for r in rows)
    padded = [np.concatenate([r, np.full((r.shape[0], width - r.shape[1], 3), 255, np.uint8)], axis=1)
              if r.shape[1] < width else r for r in rows]
    spacer = np.full((gap, width, 3), 255, dtype=np.uint8)
    out: list[np.ndarray] = []
    for i, row in enumerate(padded):
        if i:
            out.append(spacer)
        out.append(row)
    return np.concatenate(out, axis=0)


def attribution_table(attr_maps: dict[str, np.ndarray],
                      signed_maps: dict[str, np.ndarray] | None = None) -> "pd.DataFrame":
    """Per-method maps ((H,W) or (T,)) as one long table for CSV downloads.

    ``importance`` is the displayed magnitude; with ``signed_maps`` an ``attribution`` column holds the signed
    value (channel mean), so a reader can tell features that raise the similarity from those that lower it.
    """
    import pandas as pd

    frames = []
    for method, amap in attr_maps.items():
        a = np.asarray(amap)
        if a.ndim == 1:
            frame = pd.DataFrame({"method": method, "t": np.arange(a.size), "importance": a.ravel()})
        else:
            rows, cols = np.indices(a.shape)
            frame = pd.DataFrame({"method": method, "row": rows.ravel(), "col": cols.ravel(),
                                  "importance": a.ravel()})
        if signed_maps is not None and method in signed_maps:
            frame["attribution"] = np.asarray(signed_maps[method]).ravel()
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def data_url(img: np.ndarray) -> str:
    """A uint8 image as a PNG data URL (what a Vega tooltip's ``image`` field renders)."""
    import base64

    return "data:image/png;base64," + base64.b64encode(png_bytes(img)).decode("ascii")
