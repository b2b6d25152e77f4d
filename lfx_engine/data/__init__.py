"""Datasets: registry, bundle readers, splits and subsets, official downloads.

Typical use::

    from lfx_engine.data import load_split, baseline, balanced_subset
    test = load_split("mnist", "test")          # Split(x (10000,1,28,28) float32 in [0,1], y int64)
    x_bar = baseline("ecg5000")                  # (1,140,1): mean of the normal training beats

Files are read from :func:`lfx_engine.config.data_dir` (``LFX_DATA_DIR``);
``python -m lfx_engine data fetch NAME`` downloads a missing dataset. Loaded
splits are cached and shared: do not modify their tensors in place.
"""
from lfx_engine.data.registry import DatasetSpec, get_spec, list_datasets
from lfx_engine.data.splits import Split, baseline, clear_cache, holdout_split, load_split
from lfx_engine.data.subsets import (
    balanced_subset,
    balanced_subset_indices,
    ecg_example_subsets,
    resize_to_32,
)

__all__ = [
    "DatasetSpec",
    "Split",
    "balanced_subset",
    "balanced_subset_indices",
    "baseline",
    "clear_cache",
    "ecg_example_subsets",
    "get_spec",
    "holdout_split",
    "list_datasets",
    "load_split",
    "resize_to_32",
]
