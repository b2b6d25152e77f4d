"""Real-browser fixtures: Debian's chromium driven by Playwright against ``streamlit run app.py``.

The app runs on a free port against a tiny real zoo (see ``tiny_zoo.py``) and
the real datasets; everything skips cleanly when chromium or the data is missing.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from browser.tiny_zoo import ENTRIES, STUDY_ENTRIES, build_tiny_zoo, find_real_data
from lfx_ui import launch

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM = os.environ.get("LFX_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def pytest_collection_modifyitems(items) -> None:
    """Every test in this folder drives a browser (``-m 'not browser'`` deselects them)."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)


def _chromium_available() -> bool:
    return Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is not None


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """Launch Debian's chromium headless (no Playwright browser download)."""
    if not _chromium_available():
        pytest.skip(f"chromium not found at {CHROMIUM} (apt-get install chromium)")
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, "viewport": {"width": 1400, "height": 1000}}


@pytest.fixture(scope="session")
def app_env(tmp_path_factory) -> dict[str, str]:
    """Environment of the app under test: the tiny zoo, a private cache, the real data."""
    if not _chromium_available():
        pytest.skip(f"chromium not found at {CHROMIUM}")
    data = find_real_data()
    if data is None:
        pytest.skip("real datasets not found (set LFX_DATA_DIR or place ../shared/data)")
    return build_tiny_zoo(tmp_path_factory.mktemp("lfx_browser_zoo"), data, ENTRIES + STUDY_ENTRIES)


def start_app(env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen, str]:
    """Start ``streamlit run app.py`` on a free port, one torch thread; returns (process, base URL)."""
    return launch.start(REPO, {**env, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}, log_path)


stop_app = launch.stop


@pytest.fixture(scope="session")
def app_url(app_env, tmp_path_factory) -> str:
    proc, url = start_app(app_env, tmp_path_factory.mktemp("lfx_browser_log") / "streamlit.log")
    yield url
    stop_app(proc)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
