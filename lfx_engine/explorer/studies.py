"""The Study pages' engine side: pretext correlations, disentanglement, encoder vs full model, traversals."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch

from lfx_engine import cache
from lfx_engine.catalogue import BUILTIN_SOURCES
from lfx_engine.errors import ParameterError
from lfx_engine.explorer._core import (
    ModelChoice,
    Progress,
    _arrays_to_frame,
    _close_figures,
    _frame_to_arrays,
)
from lfx_engine.explorer.features import FeatureViews


class StudyViews(FeatureViews):
    """The experiments of ``lfx_engine.experiments`` on a test subset, cached by every checkpoint and parameter."""

    # ------------------------------------------------------------------ study pages (experiments layer)
    # The Study pages run the experiments of ``lfx_engine.experiments`` on a test subset. Their heavy
    # intermediates share the disk cache with `python -m lfx_engine reproduce`; the final tables are also
    # cached here (``study_*`` namespaces), keyed by every checkpoint's sha256 and the parameters.

    def study_hub(self) -> Any:
        """A :class:`~lfx_engine.experiments.ModelHub` that shares this explorer's loaded, eval-mode models."""
        from lfx_engine.experiments.common import ModelHub

        hub = ModelHub(device=self.device)
        hub.load = self.model  # type: ignore[method-assign]  # the documented override point
        return hub

    def _study_key(self, study: str, names: Sequence[str], **params: Any) -> dict[str, Any]:
        from lfx_engine.experiments.common import CACHE_VERSION

        entries = {n: self.entry(n) for n in sorted(names)}
        shas = {n: e.sha256 for n, e in entries.items()}
        data = {d: self.catalogue.fingerprint(d) for d in sorted({e.dataset for e in entries.values()})}
        return {"study": study, "cache_version": CACHE_VERSION, "models": shas, "data": data, **params}

    @staticmethod
    def _check_subset(n_test: int | None) -> None:
        if n_test is not None and (isinstance(n_test, bool) or not isinstance(n_test, (int, np.integer))
                                   or n_test < 1):
            raise ParameterError(f"the number of test inputs must be a positive integer, got {n_test!r}")

    def pretext_runs(self, dataset: str) -> tuple[list[int], list[int]]:
        """(runs with all four pretext models trained, runs with only some of them)."""
        from lfx_engine.experiments.pretext import complete_runs

        return complete_runs(self.study_hub(), dataset)

    def pretext_models(self, dataset: str, run: int) -> dict[str, str]:
        """Task → trained model of one pretext run, in METHOD §7.3 order (untrained tasks left out)."""
        from lfx_engine.experiments.pretext import TASKS, entry_name

        trained = {m.name for m in self.models(dataset, experiment="pretext")}
        return {t: entry_name(dataset, t, run) for t in TASKS if entry_name(dataset, t, run) in trained}

    def _pretext_key(self, dataset: str, n_test: int | None, n_train: int) -> dict[str, Any] | None:
        from lfx_engine.experiments.pretext import TASKS, entry_name

        runs, _ = self.pretext_runs(dataset)
        names = [entry_name(dataset, t, r) for r in runs for t in TASKS]
        return (self._study_key("pretext", names, dataset=dataset, n_test=n_test, n_train=n_train,
                                tables="summary+ceiling") if runs else None)

    def pretext_cached(self, dataset: str, n_test: int | None = 500, n_train: int = 1000) -> bool:
        """Whether :meth:`pretext_study` for these arguments is on disk (instant)."""
        key = self._pretext_key(dataset, n_test, n_train)
        return key is not None and cache.is_cached("study_pretext", key)

    def pretext_study(self, dataset: str, n_test: int | None = 500, n_train: int = 1000,
                      progress: Progress = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
        """METHOD §7.3 on the first ``n_test`` test inputs (None: all), over every complete run; cached.

        Returns ``summary`` (kind, correlation, task_a, task_b, mean, std, low, high, n_runs), ``correlations``
        (one row per run and cell), ``noise_ceiling`` (each task against itself, one row per pair of runs),
        ``against_ceiling`` (each cross-task pair against both tasks' ceilings, with a verdict), ``notes`` (list
        of str) and ``n_test`` (inputs used).
        """
        from lfx_engine.experiments.pretext import run_pretext

        self._check_subset(n_test)
        key = self._pretext_key(dataset, n_test, n_train) or {"study": "pretext", "dataset": dataset, "runs": []}

        def compute() -> dict[str, np.ndarray]:
            result = run_pretext(dataset, models=self.study_hub(), n_test=n_test, n_train=n_train, n_overlays=0,
                                 device=self.device, progress=progress, log=log)
            _close_figures(result.figures)
            return (_frame_to_arrays("summary__", result.tables["summary"])
                    | _frame_to_arrays("correlations__", result.tables["correlations"])
                    | _frame_to_arrays("ceiling__", result.tables["noise_ceiling"])
                    | _frame_to_arrays("against__", result.tables["against_ceiling"])
                    | {"notes": np.array(result.notes, dtype=str), "n_test": np.array(result.params["n_test"])})

        arrays = cache.cached("study_pretext", key, compute)
        return {"summary": _arrays_to_frame("summary__", arrays),
                "correlations": _arrays_to_frame("correlations__", arrays),
                "noise_ceiling": _arrays_to_frame("ceiling__", arrays),
                "against_ceiling": _arrays_to_frame("against__", arrays),
                "notes": [str(n) for n in arrays["notes"]], "n_test": int(arrays["n_test"])}

    def vae_models(self, dataset: str | None = None, source: str | None = None) -> list[ModelChoice]:
        """Trained β-VAEs / β-TC-VAEs (ours, the study's or both), ordered by loss, β and run."""
        models = [m for m in self.models(dataset, experiment="disvae") if source is None or m.source == source]
        return sorted(models, key=lambda m: (m.dataset, m.task, float(m.beta or 0), m.run))

    def user_vaes(self, dataset: str | None = None) -> list[ModelChoice]:
        """The user's VAEs (project files, registrations) whose units can be explained (images, gradients)."""
        return [m for m in self.models(dataset, tasks=("vae",))
                if m.source not in BUILTIN_SOURCES and self.entry(m.name).supports("disentanglement")]

    def has_decoder(self, name: str) -> bool:
        """Whether the model decodes latent codes (traversals, free decoding)."""
        model = self.model(name)
        return getattr(model, "decode", None) is not None or getattr(model, "decoder", None) is not None

    def _unit_metrics_args(self, name: str, n_test: int | None) -> dict[str, Any]:
        from lfx_engine.experiments.disvae import SPEARMAN_MAX_PIXELS

        self._check_subset(n_test)
        entry = self.entry(name)
        if not entry.supports("disentanglement"):
            raise ParameterError(f"unit metrics do not apply to {name}: {entry.unsupported['disentanglement']}")
        x = self.test_data(name)[0]
        x = x if n_test is None else x[:n_test]
        return {"hub": self.study_hub(), "name": name, "dataset": entry.dataset, "x": x, "seed": 0, "chunk": 500,
                "n_maps": 1, "spearman_max_pixels": SPEARMAN_MAX_PIXELS, "batch_size": 256, "device": self.device,
                "identity": {"sha256": entry.sha256, "data": self.catalogue.fingerprint(entry.dataset)}}

    def vae_unit_metrics_cached(self, name: str, n_test: int | None = 200) -> bool:
        """Whether :meth:`vae_unit_metrics` for these arguments is on disk (instant)."""
        from lfx_engine.experiments.common import CACHE_VERSION
        from lfx_engine.experiments.disvae import unit_metrics_parts

        args = self._unit_metrics_args(name, n_test)
        parts = unit_metrics_parts(name, len(args["x"]), args["identity"], seed=args["seed"], chunk=args["chunk"],
                                   n_maps=args["n_maps"], spearman_max_pixels=args["spearman_max_pixels"])
        return cache.is_cached("exp_disvae_metrics", {"cache_version": CACHE_VERSION, **parts})

    def vae_unit_metrics(self, name: str, n_test: int | None = 200) -> dict[str, float]:
        """METHOD §4's five unit-map metrics of one VAE (a user's, say) on its first ``n_test`` test inputs; cached.

        The same computation as ``reproduce disvae`` runs for each zoo VAE (per-unit GradientShap with the zero
        baseline, streamed).
        """
        from lfx_engine.experiments.disvae import METRICS, unit_metrics

        arrays = unit_metrics(None, **self._unit_metrics_args(name, n_test))
        return {metric: float(value) for metric, value in zip(METRICS, arrays["metrics"])}

    def _disvae_key(self, dataset: str, n_test: int | None, source: str = "zoo") -> dict[str, Any] | None:
        names = [m.name for m in self.vae_models(dataset, source)]
        return (self._study_key("disvae", names, dataset=dataset, n_test=n_test, n_null=self.DISVAE_NULL_MODELS)
                if names else None)

    #: Randomly initialised VAEs measured beside the trained ones on the Disentanglement page (the null model).
    DISVAE_NULL_MODELS = 3

    def disvae_cached(self, dataset: str, n_test: int | None = 200, source: str = "zoo") -> bool:
        """Whether :meth:`disvae_study` for these arguments is on disk (instant)."""
        key = self._disvae_key(dataset, n_test, source)
        return key is not None and cache.is_cached("study_disvae", key)

    def disvae_study(self, dataset: str, n_test: int | None = 200, progress: Progress = None,
                     log: Callable[[str], None] | None = None, source: str = "zoo") -> dict[str, Any]:
        """METHOD §7.4's five metrics of every trained VAE of ``dataset`` on the first ``n_test`` test inputs.

        Returns ``metrics`` (one row per model), ``summary`` (mean, std over runs per loss × β),
        ``comparison`` (with the reproduction study's §8 values) and ``notes``; cached.
        """
        from lfx_engine.experiments.disvae import run_disvae

        self._check_subset(n_test)
        key = self._disvae_key(dataset, n_test, source) or {"study": "disvae", "dataset": dataset, "models": [],
                                                            "source": source}

        def compute() -> dict[str, np.ndarray]:
            result = run_disvae(dataset, models=self.study_hub(), model_source=source, n_test=n_test, n_maps=1,
                                maps_for_runs=(), n_null=self.DISVAE_NULL_MODELS,
                                device=self.device, progress=progress, log=log)
            _close_figures(result.figures)
            return {**{k: v for t in ("metrics", "summary", "comparison")
                       for k, v in _frame_to_arrays(f"{t}__", result.tables[t]).items()},
                    "notes": np.array(result.notes, dtype=str), "warnings": np.array(result.warnings, dtype=str)}

        arrays = cache.cached("study_disvae", key, compute)
        out: dict[str, Any] = {t: _arrays_to_frame(f"{t}__", arrays) for t in ("metrics", "summary", "comparison")}
        out["notes"] = [str(n) for n in arrays["notes"]]
        out["warnings"] = [str(w) for w in arrays.get("warnings", ())]
        return out

    @staticmethod
    def disvae_reference(dataset: str) -> pd.DataFrame:
        """The reproduction study's disentanglement values (METHOD §8): metric, loss, beta, mean, std."""
        from lfx_engine.experiments.disvae import REFERENCE

        rows = [{"metric": metric, "loss": loss, "beta": float(beta), "mean": mean,
                 "std": np.nan if std is None else std}
                for metric, per_dataset in REFERENCE.items()
                for (loss, beta), (mean, std) in per_dataset.get(dataset, {}).items()]
        return pd.DataFrame(rows, columns=["metric", "loss", "beta", "mean", "std"])

    def decode(self, name: str, z: np.ndarray | torch.Tensor) -> np.ndarray:
        """Decoder output for latent codes ``z`` (N, d): images (N, C, H, W) in [0, 1] for image models."""
        model = self.model(name)
        decode = getattr(model, "decode", None) or getattr(model, "decoder", None)
        if decode is None:
            raise ParameterError(f"{name} has no decoder (a classifier); pick an autoencoder or a VAE")
        z = torch.as_tensor(np.asarray(z, dtype=np.float32))
        d = self.choice(name).latent_dim
        if z.dim() != 2 or (d and z.shape[1] != d) or not torch.isfinite(z).all():
            raise ParameterError(f"latent codes must be finite and of shape (N, {d}), got {tuple(z.shape)}")
        with torch.inference_mode():
            return decode(z.to(self.device)).cpu().numpy()

    def traversal(self, name: str, index: int, unit: int, values: Sequence[float]) -> np.ndarray:
        """Latent traversal: test input ``index``'s code with unit ``unit`` set to each of ``values``, decoded.

        Returns ``(len(values), C, H, W)``; the other units keep the input's posterior mean.
        """
        x, _ = self.sample(name, index)
        z = torch.from_numpy(self.latent(name, x))
        d = z.shape[1]
        if isinstance(unit, bool) or not isinstance(unit, (int, np.integer)) or not 0 <= int(unit) < d:
            raise ParameterError(f"unit must lie in 0..{d - 1}, got {unit!r}")
        vals = np.asarray(list(values), dtype=np.float64)
        if vals.ndim != 1 or not 1 <= vals.size <= 256 or not np.isfinite(vals).all():
            raise ParameterError("traversal values must be 1 to 256 finite numbers")
        codes = z.repeat(vals.size, 1)
        codes[:, int(unit)] = torch.from_numpy(vals).float()
        return self.decode(name, codes)

    def classifier_models(self, dataset: str | None = None) -> list[ModelChoice]:
        """Trained pretext classifiers (the encoder-vs-full study's models), by run."""
        return sorted(self.models(dataset, experiment="pretext", tasks=("classification",)), key=lambda m: m.run)

    def _evf_key(self, dataset: str, n_test: int | None) -> dict[str, Any] | None:
        names = [m.name for m in self.classifier_models(dataset)]
        return self._study_key("encoder_vs_full", names, dataset=dataset, n_test=n_test) if names else None

    def encoder_vs_full_cached(self, dataset: str, n_test: int | None = 500) -> bool:
        """Whether :meth:`encoder_vs_full_study` for these arguments is on disk (instant)."""
        key = self._evf_key(dataset, n_test)
        return key is not None and cache.is_cached("study_encoder_vs_full", key)

    def encoder_vs_full_study(self, dataset: str, n_test: int | None = 500, progress: Progress = None,
                              log: Callable[[str], None] | None = None) -> dict[str, Any]:
        """METHOD §7.6 over every trained classifier on the first ``n_test`` test inputs; cached.

        Returns ``summary`` (per method: mean, ci95 = 1.96·SEM over classifiers, reference_mean,
        reference_ci95), ``per_model`` and ``notes``.
        """
        from lfx_engine.experiments.encoder_vs_full import run_encoder_vs_full

        self._check_subset(n_test)
        key = self._evf_key(dataset, n_test) or {"study": "encoder_vs_full", "dataset": dataset, "models": []}

        def compute() -> dict[str, np.ndarray]:
            result = run_encoder_vs_full(dataset, models=self.study_hub(), n_test=n_test, device=self.device,
                                         progress=progress, log=log)
            return (_frame_to_arrays("summary__", result.tables["summary"])
                    | _frame_to_arrays("per_model__", result.tables["per_model"])
                    | {"notes": np.array(result.notes, dtype=str)})

        arrays = cache.cached("study_encoder_vs_full", key, compute)
        return {"summary": _arrays_to_frame("summary__", arrays), "per_model": _arrays_to_frame("per_model__", arrays),
                "notes": [str(n) for n in arrays["notes"]]}

    def encoder_vs_full_maps(self, name: str, x: torch.Tensor, method: str,
                             seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Label-free maps of a classifier's encoder and of the full classifier (§7.6), and their per-input
        Pearson over live pixels: ``(encoder_attr, full_attr, r (N,))``."""
        from lfx_engine.experiments.encoder_vs_full import METHODS
        from lfx_engine.feature_importance import encoder_vs_full_attribution
        from lfx_engine.metrics import masked_pixel_correlation

        if method not in METHODS:
            raise ParameterError(f"unknown method {method!r}; the study compares {', '.join(METHODS)}")
        if self.choice(name).task != "classification":
            raise ParameterError(f"{name} is not a classifier; the encoder-vs-full study explains classifiers")
        self.check_input(name, x)
        enc, full = encoder_vs_full_attribution(self.model(name), x, method, baselines=None, seed=seed,
                                                device=self.device)
        return enc.numpy(), full.numpy(), masked_pixel_correlation(enc, full, x)
