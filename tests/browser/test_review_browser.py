"""Issue 14's review fixes in a real browser: the HTML report opened offline, Stop, signed heat maps, links,
the dataset switch, labelled exports and a cold start without the raw page list."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from playwright.sync_api import Page, expect

from browser.conftest import start_app, stop_app
from browser.helpers import (
    TIMEOUT_MS,
    nav,
    open_page,
    panel_images,
    select_option,
    sidebar_nav,
    snapshot,
    wait_idle,
)

BASE = "dataset=mnist&model=mnist_dae_consistency"


def test_html_report_opens_offline_with_its_figures(page: Page, app_url: str, tmp_path, artifacts) -> None:
    open_page(page, f"{app_url}/masking?{BASE}&methods=saliency&sample=1&mask_n=20")
    expect(page.get_by_test_id("stVegaLiteChart").first).to_be_visible(timeout=TIMEOUT_MS)
    wait_idle(page)
    with page.expect_download(timeout=TIMEOUT_MS) as info:
        page.get_by_role("button", name="Report (HTML)").click()
    path = tmp_path / info.value.suggested_filename
    info.value.save_as(path)
    assert path.name == "lfx_report_masking.html"
    # a reviewer opens it with no network at all
    reader = page.context.new_page()
    page.context.set_offline(True)
    reader.goto(path.as_uri())
    expect(reader.locator("h1")).to_have_text("Masking shift")
    expect(reader.locator("section")).to_have_count(4)
    charts = reader.locator("section .chart svg")
    expect(charts).to_have_count(2)
    assert all(box["width"] > 200 and box["height"] > 100 for box in
               (charts.nth(i).bounding_box() for i in range(2)))
    assert reader.locator("section .chart svg path, section .chart svg line").count() > 10  # curves are drawn
    picture = reader.locator("section img").first
    assert picture.evaluate("img => img.complete && img.naturalWidth") > 200  # the masked inputs' PNG decoded
    expect(reader.locator("table.settings")).to_contain_text("mask_n")
    link = reader.get_by_role("link", name=re.compile("masking")).first.get_attribute("href")
    assert link.startswith(f"{app_url}/masking?") and "mask_n=20" in link and "sample=1" in link
    reader.screenshot(path=str(artifacts / "report_masking.png"), full_page=True)
    page.context.set_offline(False)
    # the report's link reopens the view
    reader.goto(link)
    wait_idle(reader)
    expect(reader.get_by_role("slider").first).to_have_value("20", timeout=TIMEOUT_MS)
    reader.close()


def test_stop_ends_a_running_job_and_nothing_restarts(page: Page, app_url: str, artifacts) -> None:
    # no wait for the run to end: it is the job being stopped
    page.goto(f"{app_url}/masking?{BASE}&methods=integrated_gradients,gradient_shap&sample=0&mask_n=2000")
    stop = page.get_by_role("button", name="Stop")
    expect(stop).to_be_visible(timeout=TIMEOUT_MS)
    stop.click()
    expect(page.get_by_text("stopped before they finished")).to_be_visible(timeout=TIMEOUT_MS)
    wait_idle(page)
    expect(page.get_by_text(re.compile("Stopped: the masking curves"))).to_be_visible()
    expect(page.get_by_test_id("stException")).to_have_count(0)
    expect(page.get_by_role("button", name="Compute the masking curves")).to_be_visible()
    snapshot(page, artifacts / "masking_stopped.png")


def test_signed_maps_and_colour_bars(page: Page, app_url: str, artifacts) -> None:
    open_page(page, f"{app_url}/saliency?{BASE}&methods=saliency,integrated_gradients&sample=3&sal_cmap=viridis")
    expect(page.get_by_test_id("stImage").filter(has_text="signed attribution")).to_have_count(
        2, timeout=TIMEOUT_MS)
    expect(page.get_by_test_id("stImage").filter(has_text=re.compile(r"0\s+…\s+\d"))).to_have_count(2, timeout=TIMEOUT_MS)  # |attr|
    expect(page.get_by_test_id("stImage").filter(has_text=re.compile(r"−\S+\s+·\s+0\s+·\s+\+"))).to_have_count(2, timeout=TIMEOUT_MS)  # signed
    page.get_by_test_id("stButtonGroup").get_by_text("magnitude", exact=True).click()
    wait_idle(page)
    expect(page.get_by_test_id("stImage").filter(has_text="signed attribution")).to_have_count(
        0, timeout=TIMEOUT_MS)
    expect(page).to_have_url(re.compile(r".*sal_view=magnitude"))
    expect(page).to_have_url(re.compile(r".*sal_cmap=viridis"))
    snapshot(page, artifacts / "saliency_signed.png")


def test_dataset_switch_remembers_the_sample_and_warns_of_nothing(page: Page, app_url: str, artifacts) -> None:
    """MNIST #5000 → ECG5000 (no such sample: a note, no warning) → MNIST brings #5000 back; no link warning."""
    open_page(page, f"{app_url}/saliency?{BASE}&methods=saliency&sample=5000")
    expect(page.get_by_role("heading", name=re.compile(r"^Test sample #5000 "))).to_be_visible(timeout=TIMEOUT_MS)
    select_option(page, "Dataset", "ECG5000")
    expect(page.get_by_role("heading", name=re.compile(r"^Test sample #0 "))).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.get_by_test_id("stAlertContentInfo").filter(
        has_text="Sample #5000 is not in this test split")).to_be_visible()
    expect(page.get_by_test_id("stAlertContentInfo").filter(has_text="Switching back to MNIST brings #5000 back")
           ).to_be_visible()
    expect(page.get_by_text("The link asked for")).to_have_count(0)  # the false warning of the review
    expect(page.get_by_test_id("stAlertContentWarning")).to_have_count(0)
    expect(page).to_have_url(re.compile(r".*dataset=ecg5000.*sample=0(&|$)"))
    snapshot(page, artifacts / "dataset_switch_ecg.png")
    select_option(page, "Dataset", "MNIST")
    expect(page.get_by_role("heading", name=re.compile(r"^Test sample #5000 "))).to_be_visible(timeout=TIMEOUT_MS)
    expect(page.get_by_test_id("stAlertContentWarning")).to_have_count(0)
    expect(page.get_by_test_id("stAlertContentInfo").filter(has_text="not in this test split")).to_have_count(0)
    expect(page).to_have_url(re.compile(r".*dataset=mnist.*sample=5000(&|$)"))


def _download(page: Page, button, folder) -> Path:
    with page.expect_download(timeout=TIMEOUT_MS) as info:
        button.click()
    path = folder / info.value.suggested_filename
    info.value.save_as(path)
    return path


def test_saliency_exports_are_labelled_figures_and_signed_tables(page: Page, app_url: str, tmp_path) -> None:
    open_page(page, f"{app_url}/saliency?{BASE}&methods=saliency,integrated_gradients&sample=4")
    expect(page.get_by_role("heading", name="Test sample #4 (class 4)")).to_be_visible(timeout=TIMEOUT_MS)
    buttons = page.get_by_test_id("stDownloadButton")
    png = _download(page, buttons.filter(has_text="PNG").last, tmp_path)
    csv = _download(page, buttons.filter(has_text="CSV").last, tmp_path)
    figure = Image.open(png)
    assert figure.format == "PNG"
    assert "Test sample #4 (class 4)" in figure.text["Title"]
    labels = figure.text["Description"].split(" | ")
    for label in ("Saliency", "Integrated Gradients", "input", "heat map |attr|", "signed attribution", "overlay"):
        assert label in labels, label
    pixels = np.asarray(figure.convert("RGB")).astype(int)
    assert pixels.shape[1] > 4 * 150 and pixels.shape[0] > 2 * 150  # four columns, two method rows
    title_band = pixels[: pixels.shape[0] // 20]
    assert (title_band.sum(axis=2) < 200).sum() > 50  # dark title text above the tiles
    colourful = np.ptp(pixels, axis=2) > 80            # heat maps and their colour bars
    assert colourful.mean() > 0.02
    table = pd.read_csv(csv)
    assert {"method", "importance", "attribution"} <= set(table.columns)
    assert set(table["method"]) == {"saliency", "integrated_gradients"}
    assert (table["attribution"] < 0).any() and (table["attribution"] > 0).any()  # signed, not |attr|
    assert np.allclose(table["importance"], table["attribution"].abs(), atol=1e-6)


def test_top_examples_export_names_the_query_and_its_galleries(page: Page, app_url: str, tmp_path) -> None:
    open_page(page, f"{app_url}/examples?{BASE}&xmethods=dknn&sample=2")
    expect(page.get_by_test_id("stImage").first).to_be_visible(timeout=TIMEOUT_MS)
    png = _download(page, page.get_by_test_id("stDownloadButton").filter(has_text="PNG").first, tmp_path)
    figure = Image.open(png)
    assert "test #2" in figure.text["Title"] and "DKNN" in figure.text["Title"]
    labels = figure.text["Description"]
    assert "Test input" in labels and "most important" in labels and "least similar" in labels
    assert figure.width > 600


def test_a_fresh_server_lists_only_the_declared_pages(app_env, tmp_path, page: Page, artifacts) -> None:
    """Cold start: Streamlit's own list of the raw pages/ files never shows, not even before app.py runs."""
    proc, url = start_app(app_env, tmp_path / "streamlit.log")
    try:
        page.add_init_script("""
            window.__rawNav = 0;
            new MutationObserver(() => {
              if (document.querySelector("[data-testid='stSidebarNav']")) window.__rawNav += 1;
            }).observe(document, {subtree: true, childList: true});
        """)
        open_page(page, f"{url}/saliency?{BASE}&methods=saliency&sample=1")  # the very first run of the process
        links = sidebar_nav(page).get_by_test_id("stPageLink-NavLink")
        expect(links).to_have_count(11)
        titles = [t.strip().split("\n")[-1] for t in links.all_inner_texts()]  # after the icon's ligature name
        assert titles[:3] == ["Home", "Saliency", "Masking shift"] and titles[-1] == "Glossary"
        assert page.evaluate("window.__rawNav") == 0
        expect(sidebar_nav(page).get_by_text("encoder vs full", exact=True)).to_have_count(0)  # a raw file name
        expect(panel_images(page)).to_have_count(1, timeout=TIMEOUT_MS)
        snapshot(page, artifacts / "cold_start_saliency.png")
        nav(page, "Glossary")
        expect(page).to_have_url(re.compile(r".*/glossary"))
    finally:
        stop_app(proc)
