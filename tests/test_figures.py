"""Display helpers: signed heat maps, readable overlays, colour bars, labelled PNG exports, example roles."""
from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib import colormaps
from PIL import Image

from lfx_engine.example_importance import bottom_meaning, example_roles
from lfx_ui import figures, images


def test_signed_heatmap_is_centred_on_zero() -> None:
    attr = np.array([[-2.0, 0.0], [1.0, 2.0]])
    rgb = images.heatmap(attr, size=2, cmap="RdBu_r", signed=True)
    expected = lambda v: (np.array(colormaps["RdBu_r"](v)[:3]) * 255).round()  # noqa: E731
    assert np.array_equal(rgb[0, 0], expected(0.0))      # −max → the low end (blue)
    assert np.array_equal(rgb[0, 1], expected(0.5))      # 0 → the centre (white)
    assert np.array_equal(rgb[1, 0], expected(0.75))
    assert np.array_equal(rgb[1, 1], expected(1.0))      # +max → the high end (red)
    # the magnitude view of the same map ignores the sign
    mag = images.heatmap(attr, size=2, cmap="inferno")
    assert np.array_equal(mag[0, 0], mag[1, 1])


def test_overlay_keeps_dark_inputs_readable() -> None:
    x = np.zeros((1, 4, 4), dtype=np.float32)
    x[0, 1, 1] = 1.0                       # one white stroke pixel on black
    attr = np.zeros((4, 4), dtype=np.float32)
    attr[2, 2] = 1.0                       # one important pixel elsewhere
    out = images.overlay(x, attr, size=4, cmap="inferno").astype(int)
    assert (out[0, 0] == 0).all()          # unimportant background stays the input's own black
    assert (out[1, 1] == 255).all()        # the unimportant stroke keeps its white: nothing laid over it
    top = (np.array(colormaps["inferno"](1.0)[:3]) * 255)
    assert np.allclose(out[2, 2], 0.85 * top, atol=1)  # the important pixel takes the bright end


def test_colorbar_runs_from_low_to_high() -> None:
    bar = images.colorbar("viridis", width=10, height=3)
    assert bar.shape == (3, 10, 3)
    assert np.array_equal(bar[0, 0], (np.array(colormaps["viridis"](0.0)[:3]) * 255).round())
    assert np.array_equal(bar[0, -1], (np.array(colormaps["viridis"](1.0)[:3]) * 255).round())


def test_attribution_table_keeps_the_sign() -> None:
    signed = np.array([[0.5, -1.5], [0.0, 2.0]])
    table = images.attribution_table({"ig": np.abs(signed)}, {"ig": signed})
    assert list(table.columns) == ["method", "row", "col", "importance", "attribution"]
    assert np.allclose(table["attribution"], signed.ravel())
    assert np.allclose(table["importance"], np.abs(table["attribution"]))
    series = images.attribution_table({"sal": np.array([1.0, 2.0])}, {"sal": np.array([-1.0, 2.0])})
    assert list(series["attribution"]) == [-1.0, 2.0] and list(series["t"]) == [0, 1]


def test_saliency_export_is_labelled_with_colour_bars() -> None:
    rng = np.random.default_rng(0)
    signed = {m: rng.normal(size=(8, 8)) for m in ("gradient_shap", "saliency")}
    maps = {m: (title, np.abs(signed[m]), signed[m]) for m, title in
            (("gradient_shap", "GradientShap"), ("saliency", "Saliency"))}
    x_tile = images.input_image(rng.random((1, 8, 8)), size=32)
    overlays = {m: images.overlay(rng.random((1, 8, 8)), np.abs(signed[m]), size=32) for m in signed}
    fig = figures.labelled_figure("model · Test sample #3 (class 7)", [
        (title, [figures.Panel(image=x_tile, caption="input"),
                 figures.Panel.heat(mag, "inferno", signed=False, caption="|attr|"),
                 figures.Panel.heat(sgn, "RdBu_r", signed=True, caption="signed attr"),
                 figures.Panel(image=overlays[m], caption="overlay")])
        for m, (title, mag, sgn) in maps.items()], ["input", "heat map |attr|", "signed attribution", "overlay"],
        note="scaled per method")
    words = figures.figure_labels(fig)
    for word in ("GradientShap", "Saliency", "Test sample #3 (class 7)", "heat map |attr|", "signed attribution",
                 "overlay", "scaled per method"):
        assert any(word in w for w in words), word
    assert len(fig.axes) == 2 * 4 + 2 * 2  # 8 tiles and one colour bar per heat map
    bars = fig.axes[8:]
    limits = sorted(tuple(np.round(b.get_ylim(), 6)) for b in bars)
    peak_gs, peak_sal = (float(np.abs(signed[m]).max()) for m in ("gradient_shap", "saliency"))
    for peak in (peak_gs, peak_sal):  # |attr| bars run 0..peak, signed bars −peak..peak
        assert (0.0, round(peak, 6)) in limits and (round(-peak, 6), round(peak, 6)) in limits
    png = figures.saliency_figure("t", x_tile, maps, "inferno", "RdBu_r", overlays)
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.width > 4 * 100 and img.height > 2 * 100
    # the labels travel inside the file too (PNG text), for a reviewer's search and for the browser test
    assert img.text["Title"] == "t"
    for word in ("GradientShap", "Saliency", "heat map |attr|", "signed attribution", "overlay", "|attr|"):
        assert word in img.text["Description"].split(" | "), word
    assert img.text["Software"].startswith("LFX Explorer ")


@pytest.mark.parametrize("method", ["tracin", "influence", "grad_dot"])
def test_signed_methods_name_opponents(method: str) -> None:
    roles = example_roles(method, np.array([3.0, 0.0, -2.0, 1e-12]))
    assert list(roles) == ["proponent", "neutral", "opponent", "neutral"]
    assert bottom_meaning(method).startswith("opponents")


def test_simplex_zero_weights_are_unused_and_latent_methods_near_far() -> None:
    assert list(example_roles("simplex", np.array([0.6, 0.4, 1e-5, 0.0]))) == ["used", "used", "unused", "unused"]
    assert "arbitrary" in bottom_meaning("simplex")
    assert list(example_roles("dknn", np.array([4.0, 3.0, 2.0, 1.0]))) == ["near", "near", "far", "far"]
    assert len(example_roles("cosine", np.array([]))) == 0


@pytest.mark.parametrize("method", ["tracin", "simplex", "dknn"])
def test_role_codes_and_counts_match_the_named_roles(method: str) -> None:
    from lfx_engine.example_importance import role_codes, role_counts

    scores = np.random.default_rng(0).normal(size=501) * (np.arange(501) % 3 > 0)  # zeros too: neutral / unused
    codes, names = role_codes(method, scores)
    roles = example_roles(method, scores)
    assert [names[c] for c in codes] == list(roles)
    expected = {str(r): int(c) for r, c in zip(*np.unique(roles.astype(str), return_counts=True))}
    assert role_counts(codes, names) == expected and list(role_counts(codes, names)) == sorted(expected)


@pytest.mark.parametrize("n, k", [(1, 3), (7, 2), (40, 10), (1000, 8), (5000, 1), (5000, 0)])
def test_ranking_ends_equal_the_ends_of_a_stable_full_sort(n: int, k: int) -> None:
    """Without sorting the row: the same positions, in the same order, ties broken by position as the full sort."""
    from lfx_engine.example_importance import ranking_ends

    rng = np.random.default_rng(n + k)
    for scores in (rng.normal(size=n), rng.integers(-3, 3, size=n).astype(float), np.zeros(n)):
        order = np.argsort(-scores, kind="stable")
        top, bottom = ranking_ends(scores, k)
        kk = min(k, n)
        assert np.array_equal(top, order[:kk]) and np.array_equal(bottom, order[max(kk, n - k):])
