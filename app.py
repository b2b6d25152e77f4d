"""LFX Explorer: a Streamlit app over the label-free explainability engine.

Run with ``streamlit run app.py``. This file is the router: it declares every
page (``st.navigation``), draws the sidebar's page links itself (Streamlit's own
list is off in ``.streamlit/config.toml``: on a fresh server's first run it would
flash the raw ``pages/`` files), restores selections from the URL once per session
and mirrors them back after each run so any view can be shared as a link.
"""
from __future__ import annotations

import sys

import streamlit as st

st.set_page_config(page_title="LFX Explorer", page_icon=":material/search_insights:", layout="wide")
# The first visit to a fresh server imports torch, captum and the engine (seconds): say so at once instead of
# a blank page. Later runs find the modules loaded and show nothing.
_starting = st.empty()
if "lfx_ui.engine" not in sys.modules:
    _starting.info("Starting LFX Explorer: loading the engine (first visit after the server starts)…",
                   icon=":material/hourglass_top:")
from lfx_ui import report, router, state  # noqa: E402 - after the start-up message, on purpose
from lfx_ui.engine import stopped_notice  # noqa: E402

_starting.empty()

PAGES = {
    "Explore": [
        st.Page("pages/home.py", title="Home", icon=":material/home:", default=True, url_path="home"),
        st.Page("pages/saliency.py", title="Saliency", icon=":material/local_fire_department:", url_path="saliency"),
        st.Page("pages/masking.py", title="Masking shift", icon=":material/trending_down:", url_path="masking"),
        st.Page("pages/examples.py", title="Top examples", icon=":material/extension:", url_path="examples"),
        st.Page("pages/embedding.py", title="Embedding", icon=":material/bubble_chart:", url_path="embedding"),
        st.Page("pages/compare.py", title="Compare", icon=":material/compare_arrows:", url_path="compare"),
    ],
    "Study": [
        st.Page("pages/pretext.py", title="Pretext correlations", icon=":material/grid_on:", url_path="pretext"),
        st.Page("pages/disentanglement.py", title="Disentanglement", icon=":material/scatter_plot:",
                url_path="disentanglement"),
        st.Page("pages/lucent.py", title="Feature visualisation (Lucent)", icon=":material/visibility:",
                url_path="lucent"),
        st.Page("pages/encoder_vs_full.py", title="Encoder vs full model", icon=":material/compare:",
                url_path="encoder-vs-full"),
    ],
    "Help": [
        st.Page("pages/glossary.py", title="Glossary", icon=":material/menu_book:", url_path="glossary"),
    ],
}

state.load_from_url()
page = st.navigation(PAGES, position="hidden")
router.sidebar_links(PAGES)
try:
    with router.routing():
        stopped_notice()
        report.start()
        state.forget_bindings()
        page.run()
finally:
    # also after st.stop() in a page (e.g. a missing dataset), so the link still names the selection
    state.write_to_url()
# after the page: its figures are registered, so the report holds them all
report.sidebar_button(page.title, page.url_path)
