"""One engine object for interactive exploration (the app's "cached engine").

:class:`Explorer` serves a browsing session from the one catalogue of models and
datasets (the zoo, the user's project files, Python registrations): the test
inputs a model is explained on, one-sample attributions (immediate), and
dataset-wide results (masking curves, example-importance matrices, studies)
computed once and kept in the disk cache, keyed by the weights' hash, the data's
fingerprint, the engine version and the parameters. It knows nothing about
Streamlit; the app wraps one instance in ``st.cache_resource``.

Each view's engine side is a module of its own: :mod:`.features`, :mod:`.masking`,
:mod:`.examples`, :mod:`.studies`, :mod:`.lucent`, :mod:`.embedding`, over :mod:`._core`.
"""
from __future__ import annotations

from lfx_engine.errors import LFXError
from lfx_engine.explorer._core import (
    EXAMPLE_METHODS,
    FEATURE_METHODS,
    METHOD_TITLES,
    ModelChoice,
    pin_mmap_threshold,
    trim_memory,
)
from lfx_engine.explorer.embedding import EmbeddingViews
from lfx_engine.explorer.examples import ExampleViews
from lfx_engine.explorer.lucent import LucentViews
from lfx_engine.explorer.masking import MaskingViews
from lfx_engine.explorer.studies import StudyViews


class Explorer(EmbeddingViews, MaskingViews, ExampleViews, StudyViews, LucentViews):
    """Datasets, models and cached explanations for one app process."""


__all__ = ["EXAMPLE_METHODS", "FEATURE_METHODS", "METHOD_TITLES", "Explorer", "LFXError", "ModelChoice",
           "pin_mmap_threshold", "trim_memory"]
