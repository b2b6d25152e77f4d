"""The app's sessions and the engine memory they use: given back when they end (issue 12 §5).

The engine is one object per server process (:func:`lfx_ui.engine.get_explorer`), shared by every session: no
session owns a model or a dataset. Each script run names its session to the engine
(``Explorer.bind_user``), which records who used what. A daemon thread (:class:`SessionJanitor`) checks every
few seconds which sessions are still connected. What none of the open sessions has used for
``LFX_RELEASE_AFTER_S`` seconds (default 30) is given back: models, dataset splits, their resizes and fitted
indices are dropped and the freed pages returned to the operating system; once no session is left,
Streamlit's data caches are emptied too. Between two checks, ``LFX_MEMORY_MB`` bounds what the engine holds
(least recently used out first).

A page's variables (the test split it drew from, say) live in its script's namespace, which the session keeps
reachable through the page's widget callbacks, fragments and report figures. Streamlit keeps a closed tab's
session for a reconnect (``server.disconnectedSessionTTL``, 2 minutes, dropped only when another session comes
or goes), and its runtime loop keeps the last session it served until the next one connects. So a session
disconnected for ``LFX_RELEASE_AFTER_S`` is closed for good (a reconnect after that opens a new session; the
URL still holds the view) and the namespace of its last page is emptied (:func:`remember_page`).

Only :mod:`streamlit` is imported here: ``app.py`` draws the first page before the engine is loaded.
"""
from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from lfx_engine.explorer import Explorer

LOG = logging.getLogger("lfx_ui")
#: Seconds that what only ended sessions used stays in memory (a reload of the page finds it still there).
DEFAULT_RELEASE_AFTER_S = 30.0
#: Longest wait between two checks of the sessions.
CHECK_EVERY_S = 5.0

#: The namespace of each session's last page run (emptied when the session is closed).
_PAGES: dict[str, dict[str, Any]] = {}
_PAGES_LOCK = threading.Lock()


def release_after_s() -> float:
    """``LFX_RELEASE_AFTER_S``: seconds after its last use by a session that has ended before memory goes back."""
    raw = os.environ.get("LFX_RELEASE_AFTER_S", "")
    try:
        value = float(raw) if raw else DEFAULT_RELEASE_AFTER_S
    except ValueError:
        value = DEFAULT_RELEASE_AFTER_S
    return value if value >= 0 else DEFAULT_RELEASE_AFTER_S


def check_every_s() -> float:
    """Seconds between two checks: at most :data:`CHECK_EVERY_S`, shorter for a short release delay."""
    return min(CHECK_EVERY_S, max(0.2, release_after_s() / 2))


def session_id() -> str | None:
    """The id of the session whose script run is calling (None outside a script run)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx(suppress_warning=True)
    return ctx.session_id if ctx is not None else None


def remember_page(namespace: dict[str, Any], session: str | None = None) -> None:
    """Keep the namespace of a page run of ``session`` (default: the calling one), to empty it once the session
    is closed.

    Only the last run's is kept: the namespaces of earlier runs are garbage once the session's widgets and
    fragments point at the new one.
    """
    session = session or session_id()
    if session is not None:
        with _PAGES_LOCK:
            _PAGES[session] = namespace


def page_sessions() -> set[str]:
    """Sessions whose last page namespace is kept."""
    with _PAGES_LOCK:
        return set(_PAGES)


def forget_page(session: str) -> None:
    """Empty the namespace of ``session``'s last page run: its variables (arrays, tensors) become garbage."""
    with _PAGES_LOCK:
        namespace = _PAGES.pop(session, None)
    if namespace is not None:
        namespace.clear()


def runtime_is_active(session: str) -> bool | None:
    """Whether ``session`` is still connected to this server; None when there is no server (scripts).

    Under Streamlit's AppTest the runtime is a mock whose answer is not a bool: every session counts as open.
    """
    from streamlit import runtime

    if not runtime.exists():
        return None
    answer = runtime.get_instance().is_active_session(session)
    return answer if isinstance(answer, bool) else None


def runtime_close(session: str) -> None:
    """Close a disconnected session that Streamlit keeps for a reconnect: its state, uploads and images go.

    ``Runtime.clear_user_info_for_session`` is Streamlit's thread-safe way to close a stored session (on the
    server's event loop) and to refuse a later resume of it; the session has no user info to clear here.
    """
    from streamlit import runtime

    close = getattr(runtime.get_instance(), "clear_user_info_for_session", None) if runtime.exists() else None
    if close is not None:  # older Streamlit: the session waits for its disconnectedSessionTTL instead
        close(session)


def clear_data_caches() -> None:
    """Empty Streamlit's ``st.cache_data`` caches (attributions, maps, curves of the sessions that ended)."""
    import streamlit as st

    st.cache_data.clear()


def trim_memory() -> None:
    """Collect garbage and return freed heap pages to the operating system (the engine's helper)."""
    from lfx_engine.explorer import trim_memory as trim

    trim()


class SessionJanitor:
    """Watches the app's sessions and gives back what only ended sessions used."""

    def __init__(self, explorer: Explorer, is_active: Callable[[str], bool | None] = runtime_is_active,
                 close: Callable[[str], None] = runtime_close,
                 on_idle: Callable[[], None] = clear_data_caches) -> None:
        self.explorer = explorer
        self._is_active = is_active
        self._close = close
        self._on_idle = on_idle
        self._sessions: set[str] = set()
        #: when each session was first seen disconnected
        self._ended: dict[str, float] = {}
        self._trim = False
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        #: bytes of engine memory given back so far, and the sessions closed
        self.released = 0
        self.closed = 0

    def seen(self, session: str) -> None:
        """A script run of ``session`` is using the engine."""
        with self._lock:
            self._sessions.add(session)

    def sessions(self) -> set[str]:
        """The sessions seen (engine users and page runs) and not closed yet."""
        with self._lock:
            return self._sessions | page_sessions()

    def sweep(self) -> int:
        """One check: close the sessions disconnected for the release delay, give back what no open session
        used lately; returns the engine bytes given back."""
        now = time.monotonic()
        delay = release_after_s()
        states = {s: self._is_active(s) for s in self.sessions()}
        active = [s for s, state in states.items() if state is not False]  # unknown (no server) counts as open
        for session, state in states.items():
            if state is False:
                self._ended.setdefault(session, now)
            else:
                self._ended.pop(session, None)  # reconnected
        gone = [s for s, since in self._ended.items() if now - since >= delay]
        for session in gone:
            self._close(session)
            forget_page(session)
            del self._ended[session]
            with self._lock:
                self._sessions.discard(session)
        self.closed += len(gone)
        freed = self.explorer.release(unused_for=delay, active_users=active)
        if freed or gone:
            self.released += freed
            if not active:
                self._on_idle()
            LOG.info("gave back %.0f MB of engine memory and closed %d ended session(s); %d open", freed / 2 ** 20,
                     len(gone), len(active))
        if self._trim and not freed:
            trim_memory()  # what the sessions closed at the last check held is garbage by now
        self._trim = bool(gone)
        return freed

    def start(self) -> None:
        """Check in a daemon thread from now on (once), until :meth:`stop` or the interpreter's exit.

        The thread is stopped and joined at exit (``atexit``): a daemon thread still sweeping while the interpreter
        finalises is killed inside torch's C++ frees, which aborts the process once Ray's terminate handler is
        installed (a CI run did exactly that after all its tests had passed).
        """
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="lfx-memory", daemon=True)
        self._thread.start()
        _STARTED.add(self)
        atexit.register(self.stop)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop checking: wait for a check under way to finish (at most ``timeout`` seconds)."""
        self._stopping.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping.wait(check_every_s()):
            try:
                self.sweep()
            except Exception:  # noqa: BLE001 - the thread must survive one failed check
                LOG.exception("giving back engine memory failed")


#: Janitors whose thread was started (weakly held).
_STARTED: "weakref.WeakSet[SessionJanitor]" = weakref.WeakSet()


def stop_all_janitors(timeout: float = 30.0) -> None:
    """Stop every janitor thread of the process. Dataset splits are cached process-wide, so a janitor left
    running by one engine (a test's app run) would give back splits another engine is using."""
    for janitor in list(_STARTED):
        janitor.stop(timeout)
