"""Small widgets shared by the pages (bound to the persistent selection in :mod:`lfx_ui.state`)."""
from __future__ import annotations

import streamlit as st

from lfx_ui import images, state
from lfx_ui.engine import current_sample, get_explorer


def sample_picker(name: str, page: str, container=None) -> int:
    """A number input for the shared test-sample index, with the sample's tile and class; returns the index."""
    explorer = get_explorer()
    box = container or st
    sample = current_sample(name)
    size = explorer.test_size(name)
    key = f"{page}_sample"
    if st.session_state.get(key) != sample:  # follow the shared selection; never out of range
        st.session_state[key] = sample

    def _sync() -> None:
        if st.session_state.get(key) is not None:  # an emptied field keeps the current sample
            state.user_set("sample", int(st.session_state[key]))

    box.number_input(f"Test sample # (0–{size - 1})", min_value=0, max_value=size - 1, value=None, step=1,
                     key=key,
                     on_change=_sync, help="A position in the model's test split, shared with the other pages.")
    x, label = explorer.sample(name, sample)
    dataset = explorer.choice(name).dataset
    box.image(images.thumbnail(x[0].numpy(), size=112), output_format="PNG",
              caption=f"#{sample} · class {explorer.label_name(dataset, label)}")
    box.page_link("pages/saliency.py", label="Pick visually", icon=":material/local_fire_department:")
    return sample
