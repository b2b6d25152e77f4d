"""The upload decoders' conversions (issue 14): proposals defaulted on, MNIST centring, inversion, tables, z-norm."""
from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from lfx_ui import upload

MNIST = (1, 28, 28)


def png(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def digit_photo(size=(200, 150), paper=(245, 240, 235), ink=(25, 20, 40), box=(80, 30, 110, 120)) -> bytes:
    """An RGB photo of a bar-shaped "1": dark ink on light paper, off-centre."""
    img = Image.new("RGB", size, paper)
    ImageDraw.Draw(img).rectangle(box, fill=ink)
    return png(img)


def ink_box(a: np.ndarray, threshold: float = 0.05) -> tuple[int, int]:
    rows, cols = np.flatnonzero((a > threshold).any(axis=1)), np.flatnonzero((a > threshold).any(axis=0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def centre_of_mass(a: np.ndarray) -> tuple[float, float]:
    ys, xs = np.indices(a.shape)
    return float((ys * a).sum() / a.sum()), float((xs * a).sum() / a.sum())


# ---------------------------------------------------------------------------- images


def test_rgb_png_of_another_size_is_converted_with_the_proposed_defaults() -> None:
    first = upload.decode_image(digit_photo(), "one.png", MNIST)
    assert not first.ok and set(first.unfixed) == {"convert", "resize"}  # nothing is converted unasked
    assert first.proposed == {"convert": True, "resize": True, "invert": True, "centre": True}
    assert first.preview.shape == (3, 150, 200)  # the preview is the file as uploaded (colour, its size)
    done = upload.decode_image(digit_photo(), "one.png", MNIST, **first.proposed)
    assert done.ok and tuple(done.x.shape) == (1, 1, 28, 28) and not done.unfixed
    assert done.digest.startswith(upload.content_digest(digit_photo())) and done.digest != first.digest


def test_mnist_centring_puts_the_mass_at_the_centre_and_the_ink_box_at_20_px() -> None:
    done = upload.decode_image(digit_photo(), "one.png", MNIST, convert=True, invert=True, centre=True)
    a = done.x[0, 0].numpy()
    cy, cx = centre_of_mass(a)
    assert abs(cy - 13.5) <= 1 and abs(cx - 13.5) <= 1
    height, width = ink_box(a)
    assert height == upload.MNIST_BOX and width < height  # longer side 20 px, aspect ratio kept (tall bar)
    assert a[0].max() < 0.05 and a[:, 0].max() < 0.05  # the off-centre photo's margins are gone
    # wide ink: the width is the longer side
    wide = np.zeros((60, 90))
    wide[40:50, 5:45] = 1.0
    b = upload.mnist_centre(wide)
    assert ink_box(b)[1] == upload.MNIST_BOX and ink_box(b)[0] < upload.MNIST_BOX
    assert np.allclose(centre_of_mass(b), (13.5, 13.5), atol=1.0)
    assert upload.mnist_centre(np.full((30, 30), 0.4)) is None  # blank: nothing to centre


def test_plain_resize_without_centring_keeps_the_whole_frame() -> None:
    done = upload.decode_image(digit_photo(), "one.png", MNIST, convert=True, resize=True, invert=True)
    a = done.x[0, 0].numpy()
    assert ink_box(a, 0.5)[0] < 20  # the bar spans 90 of 150 rows: ~17 of 28, not centred to 20
    assert "Resized to 28×28." in done.notes


def test_inversion_is_proposed_for_dark_on_light_only() -> None:
    dark_on_light = upload.decode_image(digit_photo(), "a.png", MNIST)
    assert dark_on_light.proposed["invert"] and "mostly light" in dark_on_light.hints["invert"]
    light_on_dark = upload.decode_image(digit_photo(paper=(5, 5, 5), ink=(250, 250, 250)), "b.png", MNIST)
    assert not light_on_dark.proposed["invert"]
    mnist_like = upload.decode_image(png(Image.new("L", (28, 28), 10)), "c.png", MNIST)
    assert mnist_like.ok and mnist_like.proposed == {"invert": False, "centre": False}  # nothing needed
    inverted = upload.decode_image(digit_photo(), "a.png", MNIST, **dark_on_light.proposed)
    assert float(inverted.x.mean()) < 0.5  # light ink on a dark background afterwards
    colour = upload.decode_image(digit_photo(), "a.png", (3, 32, 32))
    assert colour.proposed == {"resize": True, "invert": False}  # colour models: inversion offered, not proposed


def test_centring_replaces_the_plain_resize() -> None:
    done = upload.decode_image(digit_photo(), "a.png", MNIST, convert=True, centre=True)
    assert done.ok and tuple(done.x.shape) == (1, 1, 28, 28)
    blocked = upload.decode_image(digit_photo(), "a.png", MNIST, convert=True)
    assert not blocked.ok and blocked.unfixed == ["resize"] and "200×150" in blocked.fixable["resize"]


# ---------------------------------------------------------------------------- series


def beat(n: int = 140, offset: float = 0.0, scale: float = 1.0) -> np.ndarray:
    return offset + scale * np.sin(np.linspace(0, 6, n))


def test_a_headered_time_value_csv_gives_the_value_column() -> None:
    v = beat(offset=2.0)
    data = ("time,value\n" + "\n".join(f"{i * 0.008:.3f},{x:.6f}" for i, x in enumerate(v))).encode()
    first = upload.decode_series(data, "beat.csv", 140)
    assert first.columns == ["time", "value"] and first.column == "value"
    assert first.ok and np.allclose(first.x.numpy().ravel(), v, atol=1e-5)
    assert np.allclose(first.preview, v, atol=1e-5)


def test_a_named_column_can_be_chosen() -> None:
    lead1, lead2 = beat(), beat(scale=-0.5)
    data = ("sample;lead 1;lead 2;note\n" + "\n".join(
        f"{i};{a:.6f};{b:.6f};n{i}" for i, (a, b) in enumerate(zip(lead1, lead2)))).encode()
    first = upload.decode_series(data, "leads.csv", 140)
    assert first.columns == ["sample", "lead 1", "lead 2"]  # "note" is not numeric
    assert first.column == "lead 1"  # "sample" is an index, not the beat
    chosen = upload.decode_series(data, "leads.csv", 140, column="lead 2")
    assert chosen.ok and np.allclose(chosen.x.numpy().ravel(), lead2, atol=1e-5)
    assert chosen.digest != first.digest
    missing = upload.decode_series(data, "leads.csv", 140, column="lead 3")
    assert not missing.ok and "no numeric column" in missing.errors[0]


def test_z_normalisation_is_proposed_when_needed_and_gives_mean_0_std_1() -> None:
    raw = (",".join(f"{x:.6f}" for x in beat(offset=300.0, scale=80.0))).encode()
    first = upload.decode_series(raw, "mv.csv", 140, bound=70.0)
    assert not first.ok and "far outside" in first.errors[0] and first.proposed == {"znorm": True}
    done = upload.decode_series(raw, "mv.csv", 140, bound=70.0, **first.proposed)
    x = done.x.numpy().ravel()
    assert done.ok and abs(x.mean()) < 1e-5 and abs(x.std() - 1.0) < 1e-4
    z = (beat() - beat().mean()) / beat().std()
    already = upload.decode_series(",".join(f"{v:.6f}" for v in z).encode(), "z.csv", 140)
    assert already.ok and not already.proposed["znorm"]
    short = upload.decode_series(b"0.1, 0.2, 0.3", "s.csv", 140)  # resampled first, then z-normalised
    assert short.proposed == {"resample": True, "znorm": True}
    fixed = upload.decode_series(b"0.1, 0.2, 0.3", "s.csv", 140, **short.proposed).x.numpy().ravel()
    assert fixed.size == 140 and abs(fixed.mean()) < 1e-5 and abs(fixed.std() - 1) < 1e-4
    flat = upload.decode_series(",".join(["2"] * 140).encode(), "flat.csv", 140, znorm=True)
    assert flat.ok and not upload.decode_series(",".join(["2"] * 140).encode(), "f.csv", 140).proposed["znorm"]


@pytest.mark.parametrize("layout", ["row", "column", "column with header", "wrapped"])
def test_single_rows_columns_and_wrapped_beats_still_work(layout: str) -> None:
    v = beat()
    cells = [f"{x:.6f}" for x in v]
    text = {"row": ",".join(cells), "column": "\n".join(cells), "column with header": "ecg\n" + "\n".join(cells),
            "wrapped": "\n".join(" ".join(cells[i: i + 10]) for i in range(0, 140, 10))}[layout]
    out = upload.decode_series(text.encode(), "b.txt", 140)
    assert out.ok and np.allclose(out.x.numpy().ravel(), v, atol=1e-5)
    if layout == "wrapped":
        assert out.column == upload.ALL_VALUES and upload.ALL_VALUES in out.columns


@pytest.mark.parametrize(("text", "message"), [
    ("name,comment\nbeat,hello\nbeat,world", "no column of numbers"),
    ("time,value\n1,2\n3", "rows of different lengths"),
    ("1,2,x", "not a number"),
    ("time,value\n1,nan\n2,3", "NaN or infinite"),
    ("7", "holds 1 value"),
    ("", "empty"),
])
def test_junk_tables_still_get_clear_errors(text: str, message: str) -> None:
    out = upload.decode_series(text.encode(), "junk.csv", 140)
    assert not out.ok and message in " ".join(out.errors)


def test_junk_images_still_get_clear_errors() -> None:
    assert "not a PNG or JPEG" in upload.decode_image(b"hello", "t.png", MNIST).errors[0]
    assert "empty" in upload.decode_image(b"", "e.png", MNIST).errors[0]
    assert upload.decode_image(b"hello", "t.png", MNIST).proposed == {}  # nothing to propose for junk


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet="0123456789.,;\t -e\nnaxvt", max_size=400), column=st.sampled_from(
    [None, "value", "column 2", upload.ALL_VALUES]), znorm=st.booleans())
def test_any_text_table_decodes_or_says_why(text: str, column: str | None, znorm: bool) -> None:
    """Tables of any shape (ragged, headered, empty cells) give an input or a message, never an exception."""
    out = upload.decode_series(text.encode(), "t.csv", 140, resample=True, bound=70.0, column=column, znorm=znorm)
    if out.ok:
        x = out.x.numpy()
        assert x.shape == (1, 140, 1) and np.isfinite(x).all() and np.abs(x).max() <= 70.0
    else:
        assert out.errors
