"""Metrics: masking + representation shift, similarity rates, pooled correlations,
disentanglement of per-unit saliency maps."""
from .correlation import (
    latex_table,
    masked_pixel_correlation,
    mean_std,
    mean_std_table,
    spread_label,
    spread_name,
    map_agreement,
    pooled_correlation_matrix,
)
from .disentanglement import (
    METRICS,
    DisentanglementAccumulator,
    disentanglement_metrics,
    off_diagonal_mean,
)
from .masking import (
    DEFAULT_PERCENTS,
    feature_count,
    importance_scores,
    mask_inputs,
    mean_ci,
    representation_shift,
    shift_curve,
    topk_mask,
)
from .similarity import DEFAULT_FRACTIONS, similarity_rates

__all__ = [
    "DEFAULT_FRACTIONS",
    "DEFAULT_PERCENTS",
    "METRICS",
    "DisentanglementAccumulator",
    "disentanglement_metrics",
    "feature_count",
    "importance_scores",
    "latex_table",
    "mask_inputs",
    "masked_pixel_correlation",
    "mean_ci",
    "mean_std",
    "mean_std_table",
    "spread_label",
    "spread_name",
    "off_diagonal_mean",
    "map_agreement",
    "pooled_correlation_matrix",
    "representation_shift",
    "shift_curve",
    "similarity_rates",
    "topk_mask",
]
