"""Stopping a running computation: the Stop button and the notice after it (pure Streamlit, no engine).

``app.py`` shows the notice before the engine is loaded, so it lives apart from :mod:`lfx_ui.engine`.
"""
from __future__ import annotations

from typing import Callable

import streamlit as st

_STOPPED = "_lfx_stopped"


def stop_button(key: str, what: str, flag: str | None = None) -> Callable[[], object]:
    """A **Stop** button for a running job; returns a function that removes it once the job is over.

    A click reruns the page, which ends the running script at its next progress update (Streamlit stops a
    run when a new one is requested); the page then says what was kept (:func:`stopped_notice`). ``flag``
    is set in the session state too, so a page that computes by itself can wait for a new request.
    """
    slot = st.empty()

    def stop() -> None:
        st.session_state[_STOPPED] = what
        if flag:
            st.session_state[flag] = True

    slot.button("Stop", key=key, icon=":material/stop_circle:", on_click=stop,
                help="Stop this computation. What finished before is kept in the disk cache.")
    return slot.empty


def stopped_notice() -> None:
    """After a Stop, say so once (the job that was stopped, and that finished parts stay cached)."""
    what = st.session_state.pop(_STOPPED, None)
    if what:
        st.info(f"Stopped: {what}. Parts finished before the stop are kept in the disk cache; start it again "
                "to go on from there.", icon=":material/stop_circle:")
