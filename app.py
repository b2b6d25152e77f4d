"""LFX Explorer: a Streamlit app over the label-free explainability engine.

Run with ``streamlit run app.py``. This file is the router: it declares every
page (``st.navigation``), draws the sidebar's page links itself (Streamlit's own
list is off in ``.streamlit/config.toml``: on a fresh server's first run it would
flash the raw ``pages/`` files), restores selections from the URL once per session
and mirrors them back after each run so any view can be shared as a link.

Nothing here imports the engine (torch, captum, the catalogue: seconds on a fresh server): the page links
and the first page's text are drawn at once. Home loads the engine itself, under a spinner after its
introduction; the Glossary needs none; any other page waits for it under a spinner here.
"""
from __future__ import annotations

import importlib
import sys

import streamlit as st

from lfx_ui import report, router, state
from lfx_ui.jobs import stopped_notice

st.set_page_config(page_title="LFX Explorer", page_icon=":material/search_insights:", layout="wide")

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

#: Pages that draw their first content without the engine (Home loads it after its introduction).
ENGINE_FREE_START = {"", "home", "glossary"}

state.load_from_url()
page = st.navigation(PAGES, position="hidden")
router.sidebar_links(PAGES)
try:
    with router.routing():
        stopped_notice()
        report.start()
        state.forget_bindings()
        if page.url_path not in ENGINE_FREE_START and "lfx_ui.engine" not in sys.modules:
            with st.spinner("Loading the engine: the first page after the server starts takes a few seconds…"):
                importlib.import_module("lfx_ui.engine")
        page.run()
finally:
    # also after st.stop() in a page (e.g. a missing dataset), so the link still names the selection
    state.write_to_url()
# after the page: its figures are registered, so the report holds them all
report.sidebar_button(page.title, page.url_path)
