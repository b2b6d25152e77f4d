"""LFX Explorer engine: label-free feature and example importance for encoders.

Import the subpackages for the full API; the most used names are re-exported::

    from lfx_engine import load_split, build_model, label_free_attribution, dknn_scores

* :mod:`lfx_engine.data` — dataset registry, readers, splits, official downloads
* :mod:`lfx_engine.models` — the study's architectures, losses and pretext perturbations
* :mod:`lfx_engine.training` — trainer, safetensors checkpoints, the model zoo
* :mod:`lfx_engine.feature_importance` — captum methods made label-free, per-unit VAE maps
* :mod:`lfx_engine.example_importance` — DKNN, cosine, SimplEx, TracIn, Influence Functions
* :mod:`lfx_engine.metrics` — masking shift, similarity rates, correlations, disentanglement
* :mod:`lfx_engine.catalogue` — the one catalogue of zoo, project-file and registered models and datasets
* :mod:`lfx_engine.project` — project files (``lfx.toml``): your own encoders and datasets
"""
from lfx_engine.catalogue import Catalogue, register_dataset, register_model, unregister
from lfx_engine.data import balanced_subset, baseline, get_spec, list_datasets, load_split
from lfx_engine.errors import CheckpointError, DatasetUnavailableError, LFXError, ParameterError
from lfx_engine.example_importance import (
    cosine_scores,
    dknn_scores,
    encode,
    influence_scores,
    simplex_scores,
    tracin_scores,
)
from lfx_engine.feature_importance import (
    LabelFreeModule,
    aggregate_channels,
    label_free_attribution,
    list_methods,
    unit_attribution,
)
from lfx_engine.models import build_model

from lfx_engine.version import engine_version

__version__ = engine_version()

__all__ = [
    "Catalogue", "register_dataset", "register_model", "unregister",
    "CheckpointError", "DatasetUnavailableError", "LFXError", "LabelFreeModule", "ParameterError",
    "aggregate_channels", "balanced_subset", "baseline", "build_model", "cosine_scores", "dknn_scores",
    "encode", "get_spec", "influence_scores", "label_free_attribution", "list_datasets", "list_methods",
    "load_split", "simplex_scores", "tracin_scores", "unit_attribution",
]
