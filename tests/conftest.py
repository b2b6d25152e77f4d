"""Shared pytest fixtures: real-data location, seeds, small thread counts."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = (REPO_ROOT.parent / "shared" / "data").resolve()
# LFX_DATA_DIR as the test run started: fixtures of some suites point it at generated data for a while.
ORIGINAL_DATA_DIR = os.environ.get("LFX_DATA_DIR")

# The study's imported models live in a user folder: tests start from an empty one (suites that test the
# importer write their own), so a developer's imports never change what the tests see.
os.environ["LFX_STUDY_DIR"] = tempfile.mkdtemp(prefix="lfx-study-test-")
SHARED_FACT = (REPO_ROOT.parent / "shared" / "fact").resolve()

# Small models: one thread is as fast and leaves the other core to the app server of browser tests.
torch.set_num_threads(1)


def real_data_dir() -> Path | None:
    """The folder holding the real dataset bundles, or None when absent."""
    env = ORIGINAL_DATA_DIR
    for candidate in ([Path(env)] if env else []) + [SHARED_DATA]:
        if candidate.is_dir() and any(candidate.iterdir()):
            return candidate.resolve()
    return None


@pytest.fixture
def shared_data(monkeypatch) -> Path:
    """Point LFX_DATA_DIR at the real data, or skip the test when it is absent."""
    folder = real_data_dir()
    if folder is None:
        pytest.skip("real datasets not found (set LFX_DATA_DIR or place ../shared/data)")
    monkeypatch.setenv("LFX_DATA_DIR", str(folder))
    return folder


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under ``LFX_NO_SKIPS=1`` (set by ``.ci/run``) a skipped test fails: CI must not pass without its data."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and os.environ.get("LFX_NO_SKIPS") == "1":
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped, and LFX_NO_SKIPS=1 forbids skips (CI needs what the test needs): {reason}"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory) -> dict[str, str]:
    """The app tests' tiny real zoo (``tests/browser/tiny_zoo.py``), trained once per session."""
    from browser.tiny_zoo import build_tiny_zoo, find_real_data

    data = find_real_data()
    if data is None:
        pytest.skip("real datasets not found (set LFX_DATA_DIR or place ../shared/data)")
    return build_tiny_zoo(tmp_path_factory.mktemp("lfx_app_zoo"), data)


@pytest.fixture
def tiny_app_env(tiny_zoo, monkeypatch) -> dict[str, str]:
    """Point the app at the tiny zoo (its checkpoints, a private cache) for one test."""
    for key, value in tiny_zoo.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return tiny_zoo
