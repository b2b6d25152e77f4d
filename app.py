"""LFX Explorer: a Streamlit app over the label-free explainability engine.

Run with ``streamlit run app.py``. This file is the router: it declares every
page (``st.navigation``), restores selections from the URL once per session and
mirrors them back after each run so any view can be shared as a link.
"""
from __future__ import annotations

import streamlit as st

from lfx_ui import router, state

st.set_page_config(page_title="LFX Explorer", page_icon=":material/search_insights:", layout="wide")

PAGES = {
    "Explore": [
        st.Page("pages/home.py", title="Home", icon=":material/home:", default=True, url_path="home"),
        st.Page("pages/saliency.py", title="Saliency", icon=":material/local_fire_department:", url_path="saliency"),
        st.Page("pages/masking.py", title="Masking shift", icon=":material/trending_down:", url_path="masking"),
        st.Page("pages/examples.py", title="Top examples", icon=":material/extension:", url_path="examples"),
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
page = st.navigation(PAGES)
try:
    with router.routing():
        page.run()
finally:
    # also after st.stop() in a page (e.g. a missing dataset), so the link still names the selection
    state.write_to_url()
