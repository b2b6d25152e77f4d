"""Make sure every page script runs under ``app.py``'s router.

It also draws the sidebar's page links (:func:`sidebar_links`).

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

import sys
import threading
from contextlib import contextmanager
from typing import Iterator, Mapping, Sequence

import streamlit as st
from streamlit.navigation.page import StreamlitPage

from lfx_ui import sessions

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
    """Rerun through ``app.py`` when a page was started directly by the legacy pages mode.

    Under the router, the calling page's namespace is remembered for its session, to be emptied once the
    session has ended (:func:`lfx_ui.sessions.remember_page`).
    """
    if getattr(_LOCAL, "depth", 0) > 0:
        sessions.remember_page(sys._getframe(1).f_globals)
        return
    from streamlit.runtime.pages_manager import PagesManager

    PagesManager.uses_pages_directory = False
    st.rerun()


#: Key of the sidebar container that holds the page links (CSS class ``st-key-lfx_nav`` in the browser).
NAV_KEY = "lfx_nav"


def sidebar_links(sections: Mapping[str, Sequence[StreamlitPage]]) -> None:
    """The app's own page list at the top of the sidebar, one captioned group per section.

    Streamlit's automatic list is switched off (``client.showSidebarNavigation = false``): on a fresh server's
    first script run Streamlit lists every file of ``pages/`` (its legacy mode) before ``app.py`` can declare
    the real pages, and that raw list flashed at every cold start. These links exist only once ``app.py`` runs.
    """
    nav = st.sidebar.container(key=NAV_KEY, gap=None)
    for title, pages in sections.items():
        nav.caption(title)
        for page in pages:
            nav.page_link(page, label=page.title, icon=page.icon)
    st.sidebar.divider()
