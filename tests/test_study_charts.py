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
