"""The explorer in a real browser (Debian's chromium via Playwright) against ``streamlit run app.py``.

Waits are state-based (the app's script-run state and visible elements), never sleeps.
Screenshots of every page (MNIST and ECG5000) land in ``tests/artifacts/`` (git-ignored):
home.png and saliency_deep_link.png come from the interaction tests, the rest from
``test_screenshot_every_page``.
"""
from __future__ import annotations

import os
import re

import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import Page, expect

from browser.helpers import (
    TIMEOUT_MS,
    gallery_button,
    nav,
    open_page,
    panel_images,
    select_option,
    snapshot,
    wait_idle,
)

pytestmark = pytest.mark.browser

DEEP_LINK = "saliency?dataset=mnist&model=mnist_dae_consistency&sample=5&methods=saliency"


def _heading(page: Page, text: str):
    return page.get_by_role("heading", name=text)


def test_pick_mnist_sample_in_gallery(page: Page, app_url: str, artifacts) -> None:
    open_page(page, app_url)
    expect(page.get_by_test_id("stDataFrame")).to_have_count(2)  # datasets and models
    snapshot(page, artifacts / "home.png")
    nav(page, "Saliency")
    select_option(page, "Dataset", "MNIST")
    expect(page.get_by_role("combobox", name="Dataset")).to_have_value("MNIST")
    gallery_button(page, 4).click()
    expect(_heading(page, "Test sample #4 (class 4)")).to_be_visible(timeout=TIMEOUT_MS)
    wait_idle(page)
    heat_maps = panel_images(page)
    expect(heat_maps).to_have_count(3)  # GradientShap, IG, Saliency (the default methods)
    first = heat_maps.first.locator("img")
    assert first.evaluate("img => img.complete && img.naturalWidth") >= 112  # upscaled on the server: crisp
    expect(page).to_have_url(re.compile(r".*/saliency\?.*dataset=mnist.*sample=4"))
    snapshot(page, artifacts / "saliency_gallery_pick.png")


def test_deep_link_reopens_the_view(page: Page, app_url: str, artifacts) -> None:
    open_page(page, f"{app_url}/{DEEP_LINK}")
    expect(_heading(page, "Test sample #5 (class 1)")).to_be_visible(timeout=TIMEOUT_MS)
    expect(panel_images(page)).to_have_count(1)  # only the linked method
    expect(page.get_by_test_id("stMultiSelect").filter(has_text="Saliency")).to_be_visible()
    expect(page.get_by_role("combobox", name="Encoder")).to_have_value("Consistency › denoising AE (run 1)")  # grouped by experiment
    assert "sample=5" in page.url and "methods=saliency" in page.url
    snapshot(page, artifacts / "saliency_deep_link.png")


def test_latent_map_point_pick(page: Page, app_url: str) -> None:
    open_page(page, f"{app_url}/saliency?dataset=mnist&model=mnist_dae_consistency&methods=saliency&sample=0")
    page.get_by_role("tab", name="Latent map").click()
    chart = page.get_by_test_id("stVegaLiteChart").first
    expect(chart).to_be_visible(timeout=TIMEOUT_MS)
    wait_idle(page)
    # Vega draws this 2000-point scatter on a canvas: click inside the dense middle of the plot area
    surface = chart.locator("canvas, svg.marks").first
    box = surface.bounding_box()
    picked = page.get_by_role("heading").filter(has_text=re.compile(r"^Test sample #([1-9]\d*) "))
    for fx, fy in [(0.42, 0.45), (0.47, 0.5), (0.37, 0.5), (0.52, 0.42), (0.45, 0.55), (0.6, 0.45)]:
        page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
        try:
            expect(picked).to_be_visible(timeout=5_000)
            break
        except AssertionError:
            continue  # the click fell between points
    expect(picked).to_be_visible(timeout=TIMEOUT_MS)
    wait_idle(page)
    index = re.search(r"#(\d+)", picked.inner_text()).group(1)
    expect(page).to_have_url(re.compile(rf".*sample={index}(&|$)"))


def test_bad_upload_shows_an_error(page: Page, app_url: str, tmp_path, artifacts) -> None:
    bad = tmp_path / "digit.png"
    bad.write_bytes(os.urandom(4096))  # random bytes behind a .png name
    open_page(page, f"{app_url}/saliency?dataset=mnist&model=mnist_dae_consistency&methods=saliency&sample=2")
    page.get_by_role("tab", name="Upload").click()
    uploader = page.get_by_test_id("stFileUploader")
    expect(uploader).to_be_visible(timeout=TIMEOUT_MS)
    uploader.locator("input[type='file']").set_input_files(str(bad))
    expect(page.get_by_test_id("stAlertContentError").filter(has_text="not a PNG or JPEG")).to_be_visible(
        timeout=TIMEOUT_MS)
    wait_idle(page)
    expect(page.get_by_test_id("stException")).to_have_count(0)
    expect(page.get_by_role("combobox", name="Encoder")).to_have_value(re.compile("denoising AE"))  # state kept
    snapshot(page, artifacts / "saliency_bad_upload.png")


def test_rgb_photo_upload_is_explained_at_once(page: Page, app_url: str, tmp_path, artifacts) -> None:
    """A colour photo of the wrong size: previewed, converted by default, and explained without any click."""
    photo = Image.new("RGB", (200, 150), (245, 240, 235))
    ImageDraw.Draw(photo).rectangle((80, 30, 110, 120), fill=(25, 20, 40))  # a dark "1" on light paper
    path = tmp_path / "photo_of_a_one.png"
    photo.save(path, format="PNG")
    open_page(page, f"{app_url}/saliency?dataset=mnist&model=mnist_dae_consistency&methods=saliency&sample=2")
    page.get_by_role("tab", name="Upload").click()
    uploader = page.get_by_test_id("stFileUploader")
    expect(uploader).to_be_visible(timeout=TIMEOUT_MS)
    uploader.locator("input[type='file']").set_input_files(str(path))
    expect(panel_images(page)).to_have_count(1, timeout=TIMEOUT_MS)  # the heat map of the one linked method
    wait_idle(page)
    expect(page.get_by_test_id("stImage").filter(has_text="as uploaded")).to_be_visible()
    expect(page.get_by_test_id("stImage").filter(has_text="what the model receives: 1×28×28")).to_be_visible()
    expect(page.get_by_role("checkbox", name=re.compile("Invert colours"))).to_be_checked()  # dark on light
    expect(page.get_by_test_id("stAlertContentError")).to_have_count(0)
    expect(page.get_by_test_id("stException")).to_have_count(0)
    snapshot(page, artifacts / "saliency_rgb_upload.png")


def test_figure_downloads_csv_and_png(page: Page, app_url: str, tmp_path) -> None:
    open_page(page, f"{app_url}/masking?dataset=mnist&model=mnist_dae_consistency&methods=saliency&sample=1")
    expect(page.get_by_test_id("stVegaLiteChart").first).to_be_visible(timeout=TIMEOUT_MS)
    files = {}
    for label in ("CSV", "PNG"):
        with page.expect_download(timeout=TIMEOUT_MS) as info:
            page.get_by_role("button", name=label, exact=True).first.click()
        files[label] = tmp_path / info.value.suggested_filename
        info.value.save_as(files[label])
    assert files["CSV"].read_text().splitlines()[0].startswith("method,percent,M,mean,ci_low,ci_high")
    assert files["PNG"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # rendered by vl-convert on click
    expect(page.get_by_test_id("stException")).to_have_count(0)


@pytest.mark.parametrize("path, stem", [
    ("masking?dataset=mnist&model=mnist_dae_consistency&sample=3", "masking_mnist"),
    ("examples?dataset=mnist&model=mnist_dae_consistency&sample=3", "examples_mnist"),
    ("saliency?dataset=ecg5000&model=ecg5000_lstm_ae&sample=3", "saliency_ecg5000"),
    ("examples?dataset=ecg5000&model=ecg5000_lstm_ae&sample=3", "examples_ecg5000"),
    ("pretext?dataset=mnist&sample=3", "pretext_mnist"),
    ("disentanglement?dataset=mnist&model=mnist_betavae_b1_run1&sample=3", "disentanglement_mnist"),
    ("lucent?dataset=mnist&model=mnist_betavae_b1_run1", "lucent_mnist"),
    ("encoder-vs-full?dataset=mnist&model=mnist_pretext_classification_run1&sample=3", "encoder_vs_full_mnist"),
])
def test_screenshot_every_page(page: Page, app_url: str, artifacts, path: str, stem: str) -> None:
    # (ECG masking is left to AppTest: its first IG pass over 100 LSTM inputs takes ~30 s on a busy CPU)
    open_page(page, f"{app_url}/{path}")
    expect(page.get_by_test_id("stException")).to_have_count(0)
    expect(page.get_by_test_id("stAlertContentError")).to_have_count(0)
    expect(page.get_by_test_id("stVegaLiteChart").or_(page.get_by_test_id("stImage")).first).to_be_visible()
    snapshot(page, artifacts / f"{stem}.png")
