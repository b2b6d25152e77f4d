"""Turn a user's uploaded file into a model input, or say clearly why it cannot be one.

Images (PNG/JPEG) become ``(1, C, H, W)`` float32 in [0, 1]; for the ECG model a
CSV/TSV/TXT of numbers becomes a ``(1, T, 1)`` beat. Fixable problems (wrong
size, wrong number of channels, wrong length) are reported with a flag the page
turns into an opt-in checkbox ("resize", "convert", "resample"); nothing here
raises on bad input.
"""
from __future__ import annotations

import hashlib
import io
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


@dataclass
class Decoded:
    """The outcome of decoding an upload: an input, or messages saying what is wrong."""

    x: torch.Tensor | None = None
    errors: list[str] = field(default_factory=list)
    #: fixable problems: {"resize": message, "convert": message, "resample": message}
    fixable: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    digest: str = ""

    @property
    def ok(self) -> bool:
        return self.x is not None


def _size_text(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MB" if n >= 1024 * 1024 else f"{n / 1024:.0f} kB"


def decode_image(data: bytes, filename: str, expected_shape: tuple[int, int, int], *, resize: bool = False,
                 convert: bool = False, invert: bool = False) -> Decoded:
    """Decode a PNG/JPEG for a model taking ``(C, H, W)`` inputs."""
    out = Decoded(digest=hashlib.sha256(data or b"").hexdigest()[:16])
    filename = shown(filename)
    channels, height, width = expected_shape
    if not data:
        out.errors.append(f"“{filename}” is empty.")
        return out
    if len(data) > MAX_BYTES:
        out.errors.append(f"“{filename}” is too large ({_size_text(len(data))}); the limit is "
                          f"{_size_text(MAX_BYTES)}. Upload a smaller PNG or JPEG.")
        return out
    try:
        img = Image.open(io.BytesIO(data))
        fmt = img.format
        if fmt not in IMAGE_FORMATS:
            out.errors.append(f"“{filename}” is a {fmt or 'unknown'} file; upload a PNG or JPEG image.")
            return out
        if img.width * img.height > MAX_PIXELS:
            out.errors.append(f"“{filename}” is {img.width}×{img.height} pixels, too large to process "
                              f"(limit {MAX_PIXELS // 4096}×4096); downscale it first.")
            return out
        img.load()
    except Image.DecompressionBombError:
        out.errors.append(f"“{filename}” declares more pixels than the {MAX_PIXELS // 4096}×4096 limit (a "
                          "decompression bomb guard); downscale it first.")
        return out
    except UnidentifiedImageError:
        out.errors.append(f"“{filename}” is not a PNG or JPEG image (its content could not be decoded as one).")
        return out
    except Exception as exc:  # noqa: BLE001 - a crafted file can fail any way; it must never crash the page
        out.errors.append(f"“{filename}” is a damaged or truncated image ({type(exc).__name__}).")
        return out

    has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    grey_modes = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
    got_channels = 1 if img.mode in grey_modes else 3
    if img.mode == "P":  # palette: grey if every palette colour is grey
        rgb = np.asarray(img.convert("RGB"))
        got_channels = 1 if (np.ptp(rgb.astype(np.int16), axis=2) == 0).all() else 3
    if has_alpha:
        out.notes.append("The transparency (alpha) channel was dropped.")
    if got_channels != channels:
        want = "grayscale (1 channel)" if channels == 1 else "colour (3 RGB channels)"
        have = "grayscale (1 channel)" if got_channels == 1 else "colour (3 channels)"
        out.fixable["convert"] = f"“{filename}” is {have}; this model takes {want} images."
    if (img.width, img.height) != (width, height):
        out.fixable["resize"] = (f"“{filename}” is {img.width}×{img.height} pixels; this model takes "
                                 f"{width}×{height}.")
    blocked = [k for k, flag in (("convert", convert), ("resize", resize)) if k in out.fixable and not flag]
    if blocked:
        return out

    target_mode = "L" if channels == 1 else "RGB"
    if img.mode in ("I;16", "I;16B", "I;16L", "I") and channels == 1:
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / peak * 255, 0, 255).astype(np.uint8), mode="L")
    else:
        img = img.convert(target_mode)
    if (img.width, img.height) != (width, height):
        img = img.resize((width, height), Image.Resampling.LANCZOS)
        out.notes.append(f"Resized to {width}×{height}.")
    if "convert" in out.fixable:
        out.notes.append("Converted to grayscale." if channels == 1 else "Converted to RGB.")
    arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = arr[None] if arr.ndim == 2 else np.transpose(arr, (2, 0, 1))
    if invert:
        arr = 1.0 - arr
        out.notes.append("Colours inverted.")
    out.x = torch.from_numpy(np.ascontiguousarray(arr))[None].float()
    out.digest += f"-{int(resize)}{int(convert)}{int(invert)}"
    return out


def decode_series(data: bytes, filename: str, length: int, *, resample: bool = False,
                  bound: float | None = None) -> Decoded:
    """Decode a CSV/TSV/TXT of numbers (one beat) for a model taking ``(length, 1)`` series.

    ``bound``: the largest magnitude accepted (say 10× the model's data); checked after the float32
    conversion, so a value such as 1e39 (inf in float32) is refused with a message, not shown as nan.
    """
    out = Decoded(digest=hashlib.sha256(data or b"").hexdigest()[:16])
    filename = shown(filename)
    if not data:
        out.errors.append(f"“{filename}” is empty.")
        return out
    if len(data) > MAX_BYTES:
        out.errors.append(f"“{filename}” is too large ({_size_text(len(data))}); the limit is "
                          f"{_size_text(MAX_BYTES)}.")
        return out
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        out.errors.append(f"“{filename}” is not a text file of numbers (upload a CSV with one beat of "
                          f"{length} values).")
        return out
    tokens = [t for t in text.replace(",", " ").replace(";", " ").replace("\t", " ").split() if t]
    try:
        values = np.array([float(t) for t in tokens], dtype=np.float64)
    except ValueError:
        bad = next(t for t in tokens if not _is_number(t))
        out.errors.append(f"“{filename}” contains “{shown(bad, 20)}”, which is not a number; upload one beat of "
                          f"{length} comma-separated values.")
        return out
    if values.size < 2:
        out.errors.append(f"“{filename}” holds {values.size} value(s); a beat has {length}.")
        return out
    if not np.isfinite(values).all():
        out.errors.append(f"“{filename}” contains NaN or infinite values.")
        return out
    if values.size != length:
        out.fixable["resample"] = f"“{filename}” holds {values.size} values; this model takes beats of {length}."
        if not resample:
            return out
        values = np.interp(np.linspace(0, values.size - 1, length), np.arange(values.size), values)
        out.notes.append(f"Resampled to {length} time steps (linear interpolation).")
    with np.errstate(over="ignore"):  # beyond float32 becomes inf: refused just below
        values32 = values.astype(np.float32)
    if not np.isfinite(values32).all():
        out.errors.append(f"“{filename}” has values too large for 32-bit floats (the largest is "
                          f"{np.abs(values).max():.3g}); upload the z-normalised beat.")
        return out
    if bound is not None and np.abs(values32).max() > bound:
        out.errors.append(f"“{filename}” has values up to {np.abs(values32).max():.3g}, far outside this model's "
                          f"data (|x| ≤ {bound / 10:.3g}); upload the beat z-normalised like the training data.")
        return out
    out.x = torch.from_numpy(values32).reshape(1, length, 1)
    out.digest += f"-{int(resample)}"
    return out


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True
