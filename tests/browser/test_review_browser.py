"""Issue 14's review fixes in a real browser: the HTML report opened offline, Stop, signed heat maps, links."""
from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from browser.helpers import TIMEOUT_MS, open_page, snapshot, wait_idle

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
