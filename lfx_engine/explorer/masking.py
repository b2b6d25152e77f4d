"""Masking shift of the explorer (METHOD §7.1): dataset-wide curves (cached) and one sample's masked views."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from lfx_engine import cache
from lfx_engine.errors import ParameterError
from lfx_engine.explorer._core import Progress, _arrays_to_frame, _frame_to_arrays
from lfx_engine.explorer.features import FeatureViews
from lfx_engine.feature_importance import label_free_attribution
from lfx_engine.metrics import shift_curve
from lfx_engine.metrics.masking import DEFAULT_PERCENTS, feature_count, mask_inputs


class MaskingViews(FeatureViews):
    """Representation shift when each input's most important features are masked."""

    def masking_curves(self, name: str, methods: Sequence[str], n_samples: int = 200,
                       progress: Progress = None) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Representation shift vs % masked for each method and the random control, on the first
        ``n_samples`` test inputs. Returns (summary with 95% CI, per-example long table); cached."""
        methods = [m for m in methods if m != "random"]
        for method in methods:
            self._check_feature_method(name, method)
        x_all, _ = self.test_data(name)
        if not 1 <= n_samples <= len(x_all):
            raise ParameterError(f"n_samples must lie in 1..{len(x_all)}, got {n_samples}")
        x = x_all[:n_samples]
        steps = len(methods) + 1

        def compute() -> dict[str, np.ndarray]:
            encoder = self.model(name).encoder
            attrs = {}
            total = steps * n_samples
            for i, method in enumerate(methods):
                # per-chunk progress: attributions dominate the cost (IG on an LSTM takes seconds per chunk)
                step = (lambda done, _t, i=i: progress(i * n_samples + done, total)) if progress else None
                attrs[method] = label_free_attribution(encoder, x, method, baselines=self.baseline_for(name, x),
                                                       device=self.device, progress=step)
            summary, per_ex = shift_curve(encoder, x, attrs, baseline=self.baseline_for(name, x),
                                          include_random=True, device=self.device, return_per_example=True)
            if progress:
                progress(total, total)
            return _frame_to_arrays("s_", summary) | _frame_to_arrays("e_", per_ex)

        arrays = cache.cached("masking", self._key(name, methods=sorted(methods), n=n_samples), compute)
        return _arrays_to_frame("s_", arrays), _arrays_to_frame("e_", arrays)

    def sample_masking_curve(self, name: str, index: int, methods: Sequence[str]) -> pd.DataFrame:
        """Representation shift vs % masked for one test sample (immediate)."""
        index = self._check_index(name, index)
        x_all, _ = self.test_data(name)
        x = x_all[index: index + 1]
        for method in methods:
            self._check_feature_method(name, method)
        encoder = self.model(name).encoder
        attrs = {m: label_free_attribution(encoder, x, m, baselines=self.baseline_for(name, x), device=self.device)
                 for m in methods if m != "random"}
        return shift_curve(encoder, x, attrs, baseline=self.baseline_for(name, x), include_random=True,
                           device=self.device)

    def masking_cached(self, name: str, methods: Sequence[str], n_samples: int = 200) -> bool:
        """Whether :meth:`masking_curves` for these arguments is already on disk (instant)."""
        methods = [m for m in methods if m != "random"]
        return cache.is_cached("masking", self._key(name, methods=sorted(methods), n=n_samples))

    def masked_views(self, name: str, x: torch.Tensor, method: str,
                     percents: Sequence[float] = DEFAULT_PERCENTS, seed: int = 0) -> tuple[np.ndarray, list[int]]:
        """One input with its own top-M features (by ``method``) set to the baseline, for each percent.

        Returns ``(views (len(percents), *input_shape), M per percent)``; ``method='random'``
        masks the random control's features (same seeded draw as :meth:`masking_curves`).
        """
        self.check_input(name, x)
        x = x[:1]
        if method == "random":
            gen = torch.Generator().manual_seed(int(seed))
            shape = (1, 1, *x.shape[2:]) if x.dim() == 4 else (1, x.shape[1])
            scores = torch.randn(shape, generator=gen)
        else:
            scores = torch.as_tensor(self.attribute(name, x, method, seed=seed))
        p_total = feature_count(x)
        x_bar = self.baseline_for(name, x)
        views, counts = [], []
        for pct in percents:
            if not 0 <= float(pct) <= 100:
                raise ParameterError(f"percent must lie in 0..100, got {pct}")
            m = int(float(pct) * p_total / 100 + 1e-9)
            views.append(mask_inputs(x, scores, m, baseline=x_bar)[0])
            counts.append(m)
        return torch.stack(views).numpy(), counts
