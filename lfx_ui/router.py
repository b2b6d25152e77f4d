"""Make sure every page script runs under ``app.py``'s router.

The page scripts live in ``pages/`` (fixed by the product card). Streamlit still
honours its legacy pages-directory mode for a process's first script run (and
for every ``AppTest`` run) until ``st.navigation`` has been called once: a deep
link such as ``/saliency?sample=5`` would then execute ``pages/saliency.py``
*without* ``app.py``, skipping the URL → selection restore. A page calls
:func:`ensure_routed` first; outside the router it switches Streamlit to
``st.navigation`` mode (what ``st.navigation`` itself does) and reruns, so the
router handles the same URL.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

import streamlit as st

_LOCAL = threading.local()


@contextmanager
def routing() -> Iterator[None]:
    """Mark the current script thread as running a page through the router."""
    _LOCAL.depth = getattr(_LOCAL, "depth", 0) + 1
    try:
        yield
    finally:
        _LOCAL.depth -= 1


def ensure_routed() -> None:
    """Rerun through ``app.py`` when a page was started directly by the legacy pages mode."""
    if getattr(_LOCAL, "depth", 0) > 0:
        return
    from streamlit.runtime.pages_manager import PagesManager

    PagesManager.uses_pages_directory = False
    st.rerun()
