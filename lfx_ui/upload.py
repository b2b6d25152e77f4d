"""Turn a user's uploaded file into a model input, or say clearly why it cannot be one.

Images (PNG/JPEG) become ``(1, C, H, W)`` float32 in [0, 1]; for the ECG model a
CSV/TSV/TXT of numbers (one row, one column, or a table with named columns)
becomes a ``(1, T, 1)`` beat. Decoding a file with no settings reports what it
needs (``fixable``: resize / convert / resample) and which conversions are
proposed with their defaults (``proposed``: the needed ones on, plus MNIST-style
centring, inversion and z-normalisation where they fit); the page turns these
into checkboxes and decodes again with the user's choice. Nothing here raises on
bad input, and nothing here imports Streamlit.
"""
from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from lfx_ui.safe import shown

#: Largest accepted upload, in bytes (also Streamlit's ``server.maxUploadSize``).
MAX_BYTES = 5 * 1024 * 1024
#: Largest accepted image, in pixels (guards against decompression bombs).
MAX_PIXELS = 4096 * 4096
IMAGE_FORMATS = ("PNG", "JPEG")
IMAGE_TYPES = ["png", "jpg", "jpeg"]
SERIES_TYPES = ["csv", "tsv", "txt"]
#: Longest side of the "as uploaded" preview (a display copy; the model input is computed from the full file).
PREVIEW_SIDE = 336
#: MNIST preprocessing: the digit's longer side is scaled to this many pixels inside the 28×28 canvas.
MNIST_BOX = 20
#: An image is "dark strokes on a light background" when its mean grey is above this (inversion proposed).
LIGHT_MEAN = 0.5
#: Column names that usually hold the beat / the time axis of a table.
VALUE_NAMES = ("value", "values", "beat", "ecg", "signal", "amplitude", "mv", "voltage", "y", "x")
TIME_NAMES = ("time", "t", "index", "idx", "sample", "step", "timestamp", "ms", "s", "sec", "seconds")
#: The "column" choice of a table without names that reads every value, row after row (a wrapped beat).
ALL_VALUES = "all values, row by row"


@dataclass
class Decoded:
    """The outcome of decoding an upload: an input, or messages saying what is wrong."""

    x: torch.Tensor | None = None
    errors: list[str] = field(default_factory=list)
    #: fixable problems: {"resize": message, "convert": message, "resample": message}
    fixable: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    digest: str = ""
    #: conversions offered for this file and their default: the fixable ones (on) and the optional ones
    #: ("centre", "invert", "znorm"), on where the file looks like it needs them
    proposed: dict[str, bool] = field(default_factory=dict)
    #: why an optional conversion is proposed (or not), for the checkbox's help
    hints: dict[str, str] = field(default_factory=dict)
    #: the fixable problems this decode left unfixed (why ``x`` is None when there are no errors)
    unfixed: list[str] = field(default_factory=list)
    #: the file as uploaded, for display: an image (C, H, W) in [0, 1] (≤ PREVIEW_SIDE) or a series (T,)
    preview: np.ndarray | None = None
    #: a table's numeric columns (shown names) and the one the beat was read from
    columns: list[str] = field(default_factory=list)
    column: str | None = None

    @property
    def ok(self) -> bool:
        return self.x is not None


def content_digest(data: bytes) -> str:
    """A short digest of the file's bytes alone (the page keys its conversion widgets by it)."""
    return hashlib.sha256(data or b"").hexdigest()[:16]


def _size_text(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MB" if n >= 1024 * 1024 else f"{n / 1024:.0f} kB"


def _refuse_size(out: Decoded, data: bytes, filename: str, advice: str) -> bool:
    """Record an error for an empty or oversized file; True when refused."""
    if not data:
        out.errors.append(f"“{filename}” is empty.")
    elif len(data) > MAX_BYTES:
        out.errors.append(f"“{filename}” is too large ({_size_text(len(data))}); the limit is "
                          f"{_size_text(MAX_BYTES)}.{advice}")
    return bool(out.errors)


# ---------------------------------------------------------------------------- images


def _open_image(data: bytes, filename: str, out: Decoded) -> Image.Image | None:
    """Open and fully load a PNG/JPEG within the pixel limit, or record why not."""
    try:
        img = Image.open(io.BytesIO(data))
        fmt = img.format
        if fmt not in IMAGE_FORMATS:
            out.errors.append(f"“{filename}” is a {fmt or 'unknown'} file; upload a PNG or JPEG image.")
            return None
        if img.width * img.height > MAX_PIXELS:
            out.errors.append(f"“{filename}” is {img.width}×{img.height} pixels, too large to process "
                              f"(limit {MAX_PIXELS // 4096}×4096); downscale it first.")
            return None
        img.load()
    except Image.DecompressionBombError:
        out.errors.append(f"“{filename}” declares more pixels than the {MAX_PIXELS // 4096}×4096 limit (a "
                          "decompression bomb guard); downscale it first.")
        return None
    except UnidentifiedImageError:
        out.errors.append(f"“{filename}” is not a PNG or JPEG image (its content could not be decoded as one).")
        return None
    except Exception as exc:  # noqa: BLE001 - a crafted file can fail any way; it must never crash the page
        out.errors.append(f"“{filename}” is a damaged or truncated image ({type(exc).__name__}).")
        return None
    return img


def _channel_count(img: Image.Image) -> int:
    """1 for grey images (palette images whose colours are all grey included), else 3."""
    if img.mode == "P":
        rgb = np.asarray(img.convert("RGB"))
        return 1 if (np.ptp(rgb.astype(np.int16), axis=2) == 0).all() else 3
    return 1 if img.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F") else 3


def _to_mode(img: Image.Image, channels: int) -> Image.Image:
    """The image as 8-bit grey ("L", 16-bit grey rescaled) or RGB, alpha dropped."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I") and channels == 1:
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if arr.max() > 255 else 255.0
        return Image.fromarray(np.clip(arr / peak * 255, 0, 255).astype(np.uint8), mode="L")
    return img.convert("L" if channels == 1 else "RGB")


def _as_chw(img: Image.Image) -> np.ndarray:
    """An "L"/"RGB" image as a (C, H, W) float32 array in [0, 1]."""
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return arr[None] if arr.ndim == 2 else np.transpose(arr, (2, 0, 1))


def _preview(img: Image.Image) -> np.ndarray:
    """A display copy of the image as uploaded (its own channels), longest side ≤ PREVIEW_SIDE."""
    copy = img.copy()
    copy.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE), Image.Resampling.LANCZOS)
    return _as_chw(copy)


def mnist_centre(grey: np.ndarray, size: int = 28, box: int = MNIST_BOX) -> np.ndarray | None:
    """Classic MNIST preprocessing of a light-ink-on-dark (H, W) image in [0, 1].

    Stretches the contrast (background → 0), crops to the ink's bounding box, scales its longer side to
    ``box`` pixels keeping the aspect ratio, and pastes it into a ``size``×``size`` canvas so that the
    centre of mass lands on the canvas centre. None for a blank image (no ink to centre).
    """
    a = np.asarray(grey, dtype=np.float64)
    lo, hi = float(a.min()), float(a.max())
    if hi - lo < 1e-3:
        return None
    a = (a - lo) / (hi - lo)
    rows, cols = np.flatnonzero((a > 0.3).any(axis=1)), np.flatnonzero((a > 0.3).any(axis=0))
    crop = a[rows[0]: rows[-1] + 1, cols[0]: cols[-1] + 1]
    h, w = crop.shape
    scale = box / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    small = Image.fromarray((crop * 255).round().astype(np.uint8), mode="L").resize((new_w, new_h),
                                                                                   Image.Resampling.LANCZOS)
    digit = np.asarray(small, dtype=np.float64) / 255.0
    mass = digit.sum()
    ys, xs = np.indices(digit.shape)
    cy, cx = (ys * digit).sum() / mass, (xs * digit).sum() / mass
    centre = (size - 1) / 2.0
    top, left = int(round(centre - cy)), int(round(centre - cx))
    canvas = np.zeros((size, size), dtype=np.float64)
    y0, x0 = max(0, top), max(0, left)  # paste with clipping at the canvas border
    y1, x1 = min(size, top + new_h), min(size, left + new_w)
    canvas[y0:y1, x0:x1] = digit[y0 - top: y1 - top, x0 - left: x1 - left]
    return canvas.astype(np.float32)


def decode_image(data: bytes, filename: str, expected_shape: tuple[int, int, int], *, resize: bool = False,
                 convert: bool = False, invert: bool = False, centre: bool = False) -> Decoded:
    """Decode a PNG/JPEG for a model taking ``(C, H, W)`` inputs.

    With no settings nothing is converted: the result says what is needed (``fixable``) and proposes the
    conversions (``proposed``); pass them back (``**first.proposed``) to get the input. ``centre`` applies
    the MNIST preprocessing (grayscale models only; it also brings the image to the model's size).
    """
    out = Decoded(digest=content_digest(data))
    filename = shown(filename)
    channels, height, width = expected_shape
    if _refuse_size(out, data, filename, " Upload a smaller PNG or JPEG."):
        return out
    img = _open_image(data, filename, out)
    if img is None:
        return out

    has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    got_channels = _channel_count(img)
    out.preview = _preview(_to_mode(img, got_channels))
    if has_alpha:
        out.notes.append("The transparency (alpha) channel was dropped.")
    if got_channels != channels:
        want = "grayscale (1 channel)" if channels == 1 else "colour (3 RGB channels)"
        have = "grayscale (1 channel)" if got_channels == 1 else "colour (3 channels)"
        out.fixable["convert"] = f"“{filename}” is {have}; this model takes {want} images."
    if (img.width, img.height) != (width, height):
        out.fixable["resize"] = (f"“{filename}” is {img.width}×{img.height} pixels; this model takes "
                                 f"{width}×{height}.")
    out.proposed = {kind: True for kind in out.fixable}
    converted = _to_mode(img, channels)
    mean = float(np.asarray(converted.convert("L"), dtype=np.float32).mean() / 255.0)
    light = channels == 1 and mean > LIGHT_MEAN
    out.proposed["invert"] = light
    out.hints["invert"] = (f"Proposed: the image is mostly light (mean grey {mean:.2f} > {LIGHT_MEAN}), so it "
                           "looks like dark strokes on a light background; MNIST digits are light on dark."
                           if light else f"Mean grey {mean:.2f}: already light strokes on a dark background.")
    if channels == 1 and (height, width) == (28, 28):
        out.proposed["centre"] = "resize" in out.fixable
        out.hints["centre"] = ("Crop to the ink, scale its longer side to 20 px keeping the aspect ratio and centre "
                               "it by its centre of mass in 28×28, as MNIST's digits were prepared (this replaces "
                               "the plain resize of the whole frame).")

    fixes = {"convert": convert, "resize": resize or (centre and "centre" in out.proposed)}
    out.unfixed = [kind for kind in out.fixable if not fixes[kind]]
    if out.unfixed:
        return out

    arr = _as_chw(converted)
    if invert:
        arr = 1.0 - arr
        out.notes.append("Colours inverted.")
    centred = mnist_centre(arr[0]) if centre and "centre" in out.proposed else None
    if centred is not None:
        arr = centred[None]
        out.notes.append("Centred MNIST-style: cropped to the ink, longer side scaled to 20 px, centre of mass at "
                         "the centre of 28×28.")
    else:
        if centre and "centre" in out.proposed:
            out.notes.append("The image is blank: there is no ink to centre.")
        if arr.shape[1:] != (height, width):
            arr = _resize(arr, width, height)
            out.notes.append(f"Resized to {width}×{height}.")
    if "convert" in out.fixable:
        out.notes.append("Converted to grayscale." if channels == 1 else "Converted to RGB.")
    out.x = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))[None].float()
    out.digest += f"-{int(resize)}{int(convert)}{int(invert)}{int(centre)}"
    return out


def _resize(arr: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize a (C, H, W) array in [0, 1] with Lanczos (through 8-bit images, as decoded)."""
    planes = [np.asarray(Image.fromarray((p * 255).round().astype(np.uint8), mode="L").resize(
        (width, height), Image.Resampling.LANCZOS), dtype=np.float32) / 255.0 for p in arr]
    return np.stack(planes)


# ---------------------------------------------------------------------------- series


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _rows(text: str) -> list[list[str]]:
    """Split a text table into rows of stripped cells (comma, semicolon or tab separated; else whitespace)."""
    lines = [line for line in text.splitlines() if line.strip()]
    pattern = r"[,;\t]" if re.search(r"[,;\t]", text) else r"\s+"
    rows = [[cell.strip() for cell in re.split(pattern, line.strip())] for line in lines]
    for row in rows:  # a trailing separator leaves an empty last cell
        while len(row) > 1 and row[-1] == "":
            row.pop()
    return rows


def _default_column(names: list[str], columns: list[np.ndarray]) -> int:
    """The column that most likely holds the beat: a value-like name, else the first that is no time axis."""
    lowered = [n.strip().lower() for n in names]
    for i, n in enumerate(lowered):
        if n in VALUE_NAMES:
            return i
    for i, (n, col) in enumerate(zip(lowered, columns)):
        steps = np.diff(col)
        time_like = n in TIME_NAMES or (col.size > 2 and (steps > 0).all() and np.allclose(steps, steps[0]))
        if not time_like:
            return i
    return len(names) - 1


def _table_values(rows: list[list[str]], filename: str, column: str | None, out: Decoded,
                  length: int) -> list[str] | None:
    """The cells holding the beat: a single row or column as is, or the chosen numeric column of a table.

    A table without names may also be one beat wrapped over lines (``ALL_VALUES``, the default when it
    holds exactly ``length`` numbers).
    """
    header = None
    if len(rows) >= 2 and any(c and not _is_number(c) for c in rows[0]):
        header, rows = rows[0], rows[1:]
    widths = {len(r) for r in rows}
    if len(rows) == 1 or widths == {1}:
        return [c for r in rows for c in r if c]
    if len(widths) != 1 or (header is not None and len(header) != len(rows[0])):
        if header is None:  # ragged and unnamed: read every value in order, as one beat
            return [c for r in rows for c in r if c]
        out.errors.append(f"“{filename}” has rows of different lengths ({len(header)} column names, rows of "
                          f"{', '.join(str(w) for w in sorted(widths))} values); upload a table whose rows "
                          "all have one value per column.")
        return None
    names = [shown(h, 30) or f"column {i + 1}" for i, h in enumerate(header)] if header else \
        [f"column {i + 1}" for i in range(len(rows[0]))]
    numeric = [i for i in range(len(names)) if all(_is_number(r[i]) for r in rows)]
    if not numeric:
        out.errors.append(f"“{filename}” has no column of numbers (columns: {', '.join(names[:8])}).")
        return None
    out.columns = [names[i] for i in numeric]
    wrapped = header is None and len(numeric) == len(names)
    if wrapped:
        out.columns.append(ALL_VALUES)
    if column == ALL_VALUES or (column is None and wrapped and len(rows) * len(names) == length):
        out.column = ALL_VALUES if wrapped else None
        if wrapped:
            return [c for r in rows for c in r]
    if column is None:
        pick = numeric[_default_column([names[i] for i in numeric],
                                       [np.array([float(r[i]) for r in rows]) for i in numeric])]
    elif column in out.columns:
        pick = numeric[out.columns.index(column)]
    else:
        out.errors.append(f"“{filename}” has no numeric column “{shown(column, 30)}” (it has "
                          f"{', '.join(out.columns[:8])}).")
        return None
    out.column = names[pick]
    if len(out.columns) > 1:
        out.notes.append(f"The beat is read from column “{out.column}”.")
    return [r[pick] for r in rows]


def looks_znormalised(values: np.ndarray) -> bool:
    """Whether a beat is about z-normalised (mean ≈ 0, std ≈ 1), like ECG5000's beats."""
    return abs(float(values.mean())) < 0.25 and 0.5 < float(values.std()) < 2.0


def decode_series(data: bytes, filename: str, length: int, *, resample: bool = False,
                  bound: float | None = None, column: str | None = None, znorm: bool = False) -> Decoded:
    """Decode a CSV/TSV/TXT (one beat) for a model taking ``(length, 1)`` series.

    Accepts one row or one column of numbers, with or without a header, or a table with named columns
    (``column`` picks one by its shown name; by default a value-like column, not a time axis).
    ``znorm`` subtracts the beat's mean and divides by its std (after resampling), as ECG5000's beats are.
    ``bound``: the largest magnitude accepted (say 10× the model's data); checked on what the model receives,
    after the float32 conversion, so a value such as 1e39 (inf in float32) is refused with a message.
    """
    out = Decoded(digest=content_digest(data))
    filename = shown(filename)
    if _refuse_size(out, data, filename, ""):
        return out
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        out.errors.append(f"“{filename}” is not a text file of numbers (upload a CSV with one beat of "
                          f"{length} values).")
        return out
    tokens = _table_values(_rows(text), filename, column, out, length)
    if tokens is None:
        return out
    try:
        values = np.array([float(t) for t in tokens], dtype=np.float64)
    except ValueError:
        bad = next(t for t in tokens if not _is_number(t))
        out.errors.append(f"“{filename}” contains “{shown(bad, 20)}”, which is not a number; upload one beat of "
                          f"{length} comma-separated values (or a table with a column of them).")
        return out
    if values.size < 2:
        out.errors.append(f"“{filename}” holds {values.size} value(s); a beat has {length}.")
        return out
    if not np.isfinite(values).all():
        out.errors.append(f"“{filename}” contains NaN or infinite values.")
        return out
    with np.errstate(over="ignore"):  # beyond float32 becomes inf: refused here
        if not np.isfinite(values.astype(np.float32)).all():
            out.errors.append(f"“{filename}” has values too large for 32-bit floats (the largest is "
                              f"{np.abs(values).max():.3g}); upload the z-normalised beat.")
            return out
    out.preview = values.astype(np.float32)
    if values.size != length:
        out.fixable["resample"] = f"“{filename}” holds {values.size} values; this model takes beats of {length}."
    out.proposed = {kind: True for kind in out.fixable}
    std = float(values.std())
    out.proposed["znorm"] = std > 0 and not looks_znormalised(values)
    out.hints["znorm"] = (f"Mean {values.mean():.3g}, std {std:.3g}: "
                          + ("ECG5000's beats are z-normalised (mean 0, std 1), so this is proposed."
                             if out.proposed["znorm"] else "already about z-normalised (or constant)."))
    if "resample" in out.fixable and not resample:
        out.unfixed = ["resample"]
        return out
    if values.size != length:
        values = np.interp(np.linspace(0, values.size - 1, length), np.arange(values.size), values)
        out.notes.append(f"Resampled to {length} time steps (linear interpolation).")
    if znorm:
        if float(values.std()) > 0:
            values = (values - values.mean()) / values.std()
            out.notes.append("Z-normalised (mean 0, std 1).")
        else:
            out.notes.append("The beat is constant: it cannot be z-normalised, so it is used as is.")
    values32 = values.astype(np.float32)
    if bound is not None and np.abs(values32).max() > bound:
        out.errors.append(f"“{filename}” has values up to {np.abs(values32).max():.3g}, far outside this model's "
                          f"data (|x| ≤ {bound / 10:.3g}); upload the beat z-normalised like the training data "
                          "(or tick z-normalisation).")
        return out
    out.x = torch.from_numpy(values32).reshape(1, length, 1)
    out.digest += f"-{int(resample)}{int(znorm)}-{content_digest((out.column or '').encode())[:6]}"
    return out
