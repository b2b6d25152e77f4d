"""Locator helpers shared by the browser tests and ``bench/bench_app.py`` (no sleeps: state-based waits)."""
from __future__ import annotations

from playwright.sync_api import Page, expect

IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
RUNNING = "[data-testid='stApp'][data-test-script-state='running']"
TIMEOUT_MS = 90_000


def wait_idle(page: Page, timeout_ms: int = TIMEOUT_MS) -> None:
    """Wait until the script run is over and no status spinner remains."""
    page.wait_for_selector(IDLE, timeout=timeout_ms)
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=timeout_ms)


def open_page(page: Page, url: str, timeout_ms: int = TIMEOUT_MS) -> None:
    """Load a URL and wait for the first script run to finish (the page's title must be drawn)."""
    page.goto(url)
    page.wait_for_selector("[data-testid='stApp']", timeout=timeout_ms)
    expect(page.locator("h1").first).to_be_visible(timeout=timeout_ms)
    wait_idle(page, timeout_ms)


def gallery_button(page: Page, index: int):
    """The button under test sample ``index``'s thumbnail in the Saliency gallery."""
    return page.get_by_role("button", name=f"#{index} ·", exact=False).first


def panel_images(page: Page):
    """The Saliency panel's input / heat map / overlay images (captioned tiles)."""
    return page.get_by_test_id("stImage").filter(has_text="heat map")


def sidebar_nav(page: Page):
    """The app's own page links at the top of the sidebar (``lfx_ui.router.sidebar_links``)."""
    return page.get_by_test_id("stSidebar").locator(".st-key-lfx_nav")


def nav(page: Page, title: str) -> None:
    """Switch pages through the sidebar navigation and wait for the page."""
    sidebar_nav(page).get_by_text(title, exact=True).click()
    expect(page.locator("h1").filter(has_text=title).first).to_be_visible(timeout=TIMEOUT_MS)
    wait_idle(page)


def select_option(page: Page, label: str, option: str) -> None:
    """Choose ``option`` in the selectbox labelled ``label`` and wait for the rerun."""
    box = page.get_by_role("combobox", name=label)
    box.click()
    page.get_by_role("option", name=option, exact=True).click()
    expect(box).to_have_value(option, timeout=TIMEOUT_MS)
    wait_idle(page)


def snapshot(page: Page, path) -> None:
    """Screenshot of the whole page: the app scrolls inside its own container, so grow the viewport first."""
    size = page.viewport_size or {"width": 1400, "height": 1000}
    page.set_viewport_size({"width": size["width"], "height": 2400})
    wait_idle(page)
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(size)
