"""The study pages' charts label what the runs support: mean ± std from three runs, the range below."""
from __future__ import annotations

import numpy as np
import pandas as pd

from lfx_ui.study_charts import correlation_heatmap


def _frame(n_runs: int, std: float, low: float | None = None, high: float | None = None) -> pd.DataFrame:
    row = {"task_a": "Reconstruction", "task_b": "Denoising", "mean": 0.3, "std": std, "n_runs": n_runs}
    if low is not None:
        row.update(low=low, high=high)
    return pd.DataFrame([row])


def _labels(chart) -> list[str]:
    return list(chart.data["label"])


def test_heatmap_labels_follow_the_number_of_runs() -> None:
    assert _labels(correlation_heatmap(_frame(5, 0.05, 0.2, 0.4), "x")) == ["0.30 ± 0.05"]
    assert _labels(correlation_heatmap(_frame(2, np.nan, 0.2, 0.4), "x")) == ["0.30 [0.20–0.40]"]
    assert _labels(correlation_heatmap(_frame(1, np.nan, 0.3, 0.3), "x")) == ["0.30"]
    assert _labels(correlation_heatmap(_frame(2, np.nan), "x")) == ["0.30"]  # results cached before the range


def test_noise_ceiling_table_orders_pairs_and_shows_ranges() -> None:
    from lfx_ui.study_charts import noise_ceiling_table

    against = pd.DataFrame([
        {"kind": "examples", "correlation": "pearson", "task_a": "Classification", "task_b": "Denoising",
         "cross_mean": 0.1, "cross_low": 0.05, "cross_high": 0.15, "verdict": "below the noise ceiling"},
        {"kind": "features", "correlation": "pearson", "task_a": "Inpainting", "task_b": "Denoising",
         "cross_mean": 0.5, "cross_low": 0.4, "cross_high": 0.6, "verdict": "not resolved"}])
    ceiling = pd.DataFrame([{"kind": k, "correlation": "pearson", "task": t, "value": v}
                            for k in ("features", "examples") for t, v in
                            (("Denoising", 0.7), ("Denoising", 0.5), ("Inpainting", 0.6), ("Classification", 0.3))])
    table = noise_ceiling_table(against, ceiling, "pearson")
    assert list(table["explanations"]) == ["features", "examples"]
    assert list(table["pair"]) == ["Denoising – Inpainting", "Denoising – Classification"]
    assert table["ceiling of the first task"][0] == "0.60 [0.50–0.70]" and table["verdict"][1].startswith("below")
    assert table["cross-task, mean [runs' range]"][0] == "0.50 [0.40–0.60]"
    assert noise_ceiling_table(against, ceiling.iloc[:0], "pearson").empty  # one run: no ceiling
    assert noise_ceiling_table(against, ceiling, "spearman").empty
