"""Glossary: the terms of the app in plain words, each with where it appears (data in :mod:`lfx_ui.glossary`)."""
from __future__ import annotations

import streamlit as st

from lfx_ui import glossary, router

router.ensure_routed()
st.title("Glossary")
st.caption("The methods, controls and metrics of this app in a few words each, and where you meet them. The same "
           "definitions appear as help texts (the ⓘ icons) on the pages.")
query = st.text_input("Search the glossary", key="glossary_query", placeholder="e.g. LiSSA, noise ceiling, β",
                      help="Matches the term, its definition and where it appears (case-insensitive).")
found = glossary.search(query)
if not found:
    st.warning(f"No entry mentions “{query.strip()}”. Try a shorter word, e.g. a method's name.")
for section in glossary.SECTIONS:
    entries = {name: t for name, t in found.items() if t.section == section}
    if not entries:
        continue
    st.subheader(section)
    for name, term in entries.items():
        st.markdown(f"**{glossary.markdown(name)}** — {glossary.markdown(term.definition)}  \n"
                    f":gray[*Where you see it:* {glossary.markdown(term.where)}]")
