"""Masking shift of the explorer (METHOD §7.1): dataset-wide curves (cached) and one sample's masked views."""
from __future__ import annotations

from typing import Any, Sequence, cast

import numpy as np
import pandas as pd
import torch
from torch import nn

from lfx_engine import cache
from lfx_engine.errors import ParameterError
from lfx_engine.explorer._core import Progress, _arrays_to_frame, _frame_to_arrays
from lfx_engine.explorer.features import FeatureViews
from lfx_engine.feature_importance import label_free_attribution, randomised_copy
from lfx_engine.metrics import shift_curve
from lfx_engine.metrics.masking import DEFAULT_PERCENTS, feature_count, importance_scores, mask_inputs, topk_mask
from lfx_engine.metrics.masking_controls import (
    CONTROLS,
    INPUT_CONTROLS,
    control_areas,
    control_scores,
    random_init_key,
)


class MaskingViews(FeatureViews):
    """Representation shift when each input's most important features are masked."""

    def masking_curves(self, name: str, methods: Sequence[str], n_samples: int = 200,
                       progress: Progress = None, controls: Sequence[str] = ("random",)
                       ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Representation shift vs % masked for each method and each control, on the first ``n_samples``
        test inputs. Returns (summary with 95% CI, per-example long table); cached.

        ``controls`` (:data:`~lfx_engine.metrics.masking_controls.CONTROLS`): ``random`` is always
        included; ``random_init`` adds every method on a randomly re-initialised encoder
        (curves ``<method>_random_init``).
        """
        methods = [m for m in methods if m != "random"]
        for method in methods:
            self._check_feature_method(name, method)
        controls = sorted(set(controls) | {"random"})
        unknown = [c for c in controls if c not in CONTROLS]
        if unknown:
            raise ParameterError(f"unknown control(s) {unknown}; choose from {', '.join(CONTROLS)}")
        x_all, _ = self.test_data(name)
        if not 1 <= n_samples <= len(x_all):
            raise ParameterError(f"n_samples must lie in 1..{len(x_all)}, got {n_samples}")
        x = x_all[:n_samples]
        random_init = "random_init" in controls
        explained = [(m, False) for m in methods] + ([(m, True) for m in methods] if random_init else [])
        steps = len(explained) + 1

        def compute() -> dict[str, np.ndarray]:
            encoder = cast(nn.Module, self.model(name).encoder)
            twin = randomised_copy(encoder, seed=0) if random_init else None
            x_bar = self.baseline_for(name, x)
            scores = {}
            total = steps * n_samples
            for i, (method, on_twin) in enumerate(explained):
                # per-chunk progress: attributions dominate the cost (IG on an LSTM takes seconds per chunk)
                step = (lambda done, _t, i=i: progress(i * n_samples + done, total)) if progress else None
                key = random_init_key(method) if on_twin else method
                module = twin if on_twin else encoder
                assert module is not None  # a twin exists whenever on_twin (random_init)
                scores[key] = label_free_attribution(module, x, method, baselines=x_bar,
                                                     device=self.device, progress=step)
            for control in controls:
                if control in INPUT_CONTROLS:
                    scores[control] = control_scores(control, x, x_bar, seed=0)
            summary, per_ex = shift_curve(encoder, x, scores, baseline=x_bar, device=self.device,
                                          return_per_example=True)
            if progress:
                progress(total, total)
            return _frame_to_arrays("s_", summary) | _frame_to_arrays("e_", per_ex)

        arrays = cache.cached("masking", self._masking_key(name, methods, n_samples, controls), compute)
        return _arrays_to_frame("s_", arrays), _arrays_to_frame("e_", arrays)

    def masking_areas(self, per_example: pd.DataFrame, methods: Sequence[str],
                      controls: Sequence[str]) -> pd.DataFrame:
        """Area between each method's curve and each control's with a paired 95% interval and a verdict."""
        return control_areas(per_example, [m for m in methods if m != "random"], controls)

    def _masking_key(self, name: str, methods: Sequence[str], n_samples: int,
                     controls: Sequence[str] = ("random",)) -> dict[str, Any]:
        extra = sorted(set(controls) - {"random"})
        return self._key(name, methods=sorted(m for m in methods if m != "random"), n=n_samples,
                         **({"controls": extra} if extra else {}))

    def sample_masking_curve(self, name: str, index: int, methods: Sequence[str]) -> pd.DataFrame:
        """Representation shift vs % masked for one test sample (immediate)."""
        index = self._check_index(name, index)
        x_all, _ = self.test_data(name)
        x = x_all[index: index + 1]
        for method in methods:
            self._check_feature_method(name, method)
        encoder = cast(nn.Module, self.model(name).encoder)
        attrs = {m: label_free_attribution(encoder, x, m, baselines=self.baseline_for(name, x), device=self.device)
                 for m in methods if m != "random"}
        return shift_curve(encoder, x, attrs, baseline=self.baseline_for(name, x), include_random=True,
                           device=self.device)

    def masking_cached(self, name: str, methods: Sequence[str], n_samples: int = 200,
                       controls: Sequence[str] = ("random",)) -> bool:
        """Whether :meth:`masking_curves` for these arguments is already on disk (instant)."""
        return cache.is_cached("masking", self._masking_key(name, methods, n_samples, controls))

    def masked_views(self, name: str, x: torch.Tensor, method: str,
                     percents: Sequence[float] = DEFAULT_PERCENTS,
                     seed: int = 0) -> tuple[np.ndarray, list[int], np.ndarray]:
        """One input with its own top-M features (by ``method``) set to the baseline, for each percent.

        Returns ``(views (len(percents), *input_shape), M per percent, masks)``: ``masks`` is boolean,
        ``(len(percents), H, W)`` for images or ``(len(percents), T)`` for series, True where a feature was
        replaced (a view alone cannot show it where the input already equals the baseline, e.g. black pixels
        masked with a black baseline). ``method='random'`` masks the random control's features (same seeded
        draw as :meth:`masking_curves`).
        """
        self.check_input(name, x)
        x = x[:1]
        if method == "random":
            scores = control_scores("random", x, seed=seed)
        else:
            scores = torch.as_tensor(self.attribute(name, x, method, seed=seed))
        p_total = feature_count(x)
        x_bar = self.baseline_for(name, x)
        per_feature = importance_scores(scores, x)
        views, counts, masks = [], [], []
        for pct in percents:
            if not 0 <= float(pct) <= 100:
                raise ParameterError(f"percent must lie in 0..100, got {pct}")
            m = int(float(pct) * p_total / 100 + 1e-9)
            views.append(mask_inputs(x, scores, m, baseline=x_bar)[0])
            masks.append(topk_mask(per_feature, m)[0].reshape(x.shape[-2:] if x.dim() == 4 else x.shape[1:2]) == 0)
            counts.append(m)
        return torch.stack(views).numpy(), counts, torch.stack(masks).numpy()
