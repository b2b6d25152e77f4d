"""The one app launcher (``lfx_ui.launch``): its command line, and that launching imports no Streamlit."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from lfx_ui import launch


def test_the_streamlit_command_line() -> None:
    served = launch.streamlit_command("app.py", 8600, None, watch_files=True)
    assert served[1:4] == ["-m", "streamlit", "run"] and served[served.index("--server.port") + 1] == "8600"
    assert "--server.address" not in served and "--server.fileWatcherType" not in served  # Streamlit's defaults
    tested = launch.streamlit_command("app.py", 8600)
    assert tested[tested.index("--server.address") + 1] == "127.0.0.1"
    assert tested[tested.index("--server.fileWatcherType") + 1] == "none"
    assert tested[tested.index("--browser.gatherUsageStats") + 1] == "false"


def test_launching_imports_neither_streamlit_nor_the_engine() -> None:
    code = "import sys, lfx_ui.launch, lfx_engine.project.cli as c; print(sorted(m for m in ('streamlit', 'torch') " \
           "if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "streamlit" not in out.stdout


def test_a_server_that_dies_is_reported() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(RuntimeError, match="exited early with code 3"):
        launch.wait_healthy(f"http://127.0.0.1:{launch.free_port()}", proc, timeout=30)
