"""A user's own encoder in a real browser: ``lfx serve lfx.toml`` (the worked example), then Saliency on it.

The server is started exactly as the README tells a user, with ``lfx serve``; the
test then picks the user's dataset and model in the sidebar, clicks a gallery tile
and waits for the heat maps. The time from starting ``lfx serve`` to the first
saliency map is written to ``tests/artifacts/own_encoder_timing.json`` (reported,
never asserted).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

import pytest
from playwright.sync_api import Page, expect

from browser.conftest import REPO, _chromium_available, stop_app
from lfx_ui.launch import free_port, wait_healthy
from browser.helpers import TIMEOUT_MS, gallery_button, open_page, panel_images, select_option, snapshot, wait_idle
from browser.tiny_zoo import find_real_data
from project_fixture import build_example_project

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``lfx serve`` on the worked example; yields (base URL, the moment the command started)."""
    if not _chromium_available():
        pytest.skip("chromium not found (apt-get install chromium)")
    data = find_real_data()
    assert data is not None, "the real datasets are missing: set LFX_DATA_DIR or place ../shared/data"
    root = tmp_path_factory.mktemp("own_encoder_browser")
    project = build_example_project(root / "project", data)
    port = free_port()
    env = {**os.environ, "LFX_DATA_DIR": str(data), "LFX_CHECKPOINT_DIR": str(REPO / "checkpoints"),
           "LFX_CACHE_DIR": str(root / "cache"), "LFX_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    log = open(root / "serve.log", "w")  # noqa: SIM115 - closed with the process
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "lfx_engine", "serve", str(project), "--port", str(port),
                             "--address", "127.0.0.1"], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, timeout=120)
    except Exception:
        stop_app(proc)
        raise RuntimeError(f"lfx serve did not start; its log:\n{(root / 'serve.log').read_text()[-3000:]}") from None
    yield url, started
    stop_app(proc)
    log.close()
    # `lfx serve` becomes the server itself: stopping it stops Streamlit, no orphan keeps the port
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).close()
        except OSError:
            break
        time.sleep(0.2)  # polling a server socket
    else:
        raise AssertionError("the Streamlit server outlived `lfx serve`")


def test_saliency_on_a_user_model(page: Page, served, artifacts) -> None:
    url, started = served
    open_page(page, f"{url}/saliency")
    select_option(page, "Dataset", "digits")
    select_option(page, "Encoder", "Your models › Small conv AE (your autoencoder)")  # grouped
    button = gallery_button(page, 5)
    label = button.inner_text()
    button.click()
    expect(page.get_by_role("heading", name="Test sample #5 (class")).to_be_visible(timeout=TIMEOUT_MS)
    wait_idle(page)
    heat_maps = panel_images(page)
    expect(heat_maps).to_have_count(3)  # GradientShap, IG, Saliency (the default methods)
    first_map = time.monotonic() - started
    assert heat_maps.first.locator("img").evaluate("img => img.complete && img.naturalWidth") >= 112
    assert "model=small_ae" in page.url and "dataset=digits" in page.url and "sample=5" in page.url
    assert label.startswith("#5 · ")
    snapshot(page, artifacts / "own_encoder_saliency.png")
    (artifacts / "own_encoder_timing.json").write_text(json.dumps(
        {"from_lfx_serve_to_first_saliency_map_s": round(first_map, 2)}, indent=1) + "\n")
