"""Start the app's Streamlit server as a process and wait until it answers (``lfx serve``, tests, benches).

Standard library only: whoever launches the app (the CLI, the browser tests, ``bench/bench_app.py``) must not
import Streamlit or the engine to do so.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO, Optional, Union

#: Seconds a fresh server may take to answer its health check (a cold 2-core machine imports torch first).
HEALTH_TIMEOUT_S = 120.0


def streamlit_command(app: Union[str, Path], port: int, address: Optional[str] = "127.0.0.1",
                      watch_files: bool = False) -> list[str]:
    """The ``python -m streamlit run APP`` command line: headless, no usage statistics, no file watcher unless
    ``watch_files``."""
    command = [sys.executable, "-m", "streamlit", "run", str(app), "--server.headless", "true",
               "--browser.gatherUsageStats", "false", "--server.port", str(port)]
    if address:
        command += ["--server.address", address]
    if not watch_files:
        command += ["--server.fileWatcherType", "none"]
    return command


def free_port() -> int:
    """A TCP port free on this machine now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def is_healthy(url: str) -> bool:
    """Whether the Streamlit server at ``url`` answers ``ok`` on ``/_stcore/health``."""
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
            return bool(answer.read().decode().strip() == "ok")
    except OSError:
        return False


def wait_healthy(url: str, proc: Optional[subprocess.Popen] = None, timeout: float = HEALTH_TIMEOUT_S,
                 poll_s: float = 0.1) -> None:
    """Poll the health check until it answers; ``RuntimeError`` when ``proc`` exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"streamlit exited early with code {proc.returncode}")
        if is_healthy(url):
            return
        time.sleep(poll_s)  # polling a server socket, not waiting on a page
    raise RuntimeError(f"streamlit did not become healthy within {timeout:.0f} s")


def launch(folder: Union[str, Path], env: dict[str, str], log: Union[str, Path, None] = None,
           app: str = "app.py") -> tuple[subprocess.Popen, str]:
    """Start ``streamlit run APP`` in ``folder`` on a free local port (output to ``log``); not waited for.

    ``env`` is added to this process's environment. Returns the process and its base URL.
    """
    port = free_port()
    out: Union[int, IO[str]] = open(log, "w") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(streamlit_command(app, port), cwd=folder, env={**os.environ, **env},
                            stdout=out, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}"


def start(folder: Union[str, Path], env: dict[str, str], log: Union[str, Path], app: str = "app.py",
          timeout: float = HEALTH_TIMEOUT_S) -> tuple[subprocess.Popen, str]:
    """:func:`launch`, then wait until healthy; on failure the process is stopped and the log's tail raised."""
    proc, url = launch(folder, env, log, app)
    try:
        wait_healthy(url, proc, timeout)
    except RuntimeError as exc:
        stop(proc)
        raise RuntimeError(f"the app did not start ({exc}); its log:\n{Path(log).read_text()[-3000:]}") from None
    return proc, url


def stop(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """Terminate the server, killing it if it does not exit within ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
