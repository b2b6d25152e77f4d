"""Feature visualisation of the explorer (METHOD §7.5, PRACTICE §4): torch-lucent renders of latent units and conv channels."""
from __future__ import annotations

import copy
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from lfx_engine import cache
from lfx_engine.catalogue import BUILTIN_SOURCES
from lfx_engine.errors import ParameterError
from lfx_engine.explorer._core import ExplorerCore


class LucentViews(ExplorerCore):
    """torch-lucent images that maximise a latent unit or a conv channel, cached on disk."""

    # torch-lucent feature visualisation (METHOD §7.5, PRACTICE §4)
    LUCENT_LR = 5e-2

    def lucent_targets(self, name: str) -> list[dict[str, Any]]:
        """What torch-lucent can maximise in an image encoder: its latent units, then each conv layer's channels.

        Each target: ``layer`` ('latent' or the conv module's path in the encoder), ``title``, ``units``.
        """
        choice = self.choice(name)
        if self.is_series(choice.dataset):
            raise ParameterError("torch-lucent optimises images; it does not apply to a 1-D series encoder")
        reason = self.entry(name).unsupported.get("lucent")
        if reason:
            raise ParameterError(f"feature visualisation does not apply: {reason}")
        encoder = cast(nn.Module, self.model(name).encoder)
        what = "posterior mean μ" if choice.task in ("betavae", "btcvae", "vae") else "representation"
        targets = [{"layer": "latent", "title": f"latent units ({what}, d = {choice.latent_dim})",
                    "units": int(choice.latent_dim)}]
        for path, module in encoder.named_modules():
            if isinstance(module, nn.Conv2d):
                targets.append({"layer": path, "title": f"conv channel of encoder.{path} "
                                f"(Conv2d {module.in_channels}→{module.out_channels})",
                                "units": int(module.out_channels)})
        return targets

    def _lucent_setup(self, name: str, layer: str, unit: int, steps: int, seed: int, leaky_relu: bool,
                      lr: float) -> tuple[nn.Module, dict[str, Any]]:
        targets = {t["layer"]: t for t in self.lucent_targets(name)}
        if layer not in targets:
            raise ParameterError(f"unknown target layer {layer!r}; choose from {', '.join(targets)}")
        n_units = targets[layer]["units"]
        if isinstance(unit, bool) or not isinstance(unit, (int, np.integer)) or not 0 <= int(unit) < n_units:
            raise ParameterError(f"unit must lie in 0..{n_units - 1} for {layer}, got {unit!r}")
        for label, value, top in (("steps", steps, 20_000), ("seed", seed, 2 ** 31 - 1)):
            low = 1 if label == "steps" else 0
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= int(value) <= top:
                raise ParameterError(f"{label} must be an integer in {low}..{top}, got {value!r}")
        if not np.isfinite(float(lr)) or float(lr) <= 0:
            raise ParameterError(f"the learning rate must be a positive number, got {lr!r}")
        choice = self.choice(name)
        x = self.test_data(name)[0]
        encoder = cast(nn.Module, self.model(name).encoder)
        vae_mu = layer == "latent" and choice.task in ("betavae", "btcvae") and choice.source in BUILTIN_SOURCES
        # a VAE's μ units use run_lucid's exact key, so the app and `reproduce lucid` share their renders
        module = encoder if vae_mu else _LucentProbe(encoder, "" if layer == "latent" else layer)
        parts: dict[str, Any]
        parts = {"experiment": "lucid", "model": name, "sha256": self.entry(name).sha256,
                 "layer": "encoder_mu" if vae_mu else f"probe:{layer}", "channel": int(unit),
                 "seed": int(seed) + int(unit), "steps": int(steps), "lr": float(lr), "leaky_relu": bool(leaky_relu),
                 "size": int(x.shape[-1]), "channels": int(x.shape[1]),
                 "recipe": "fft image, no decorrelation, no transforms, no preprocess"}
        return module, parts

    def lucent_cached(self, name: str, layer: str, unit: int, steps: int = 256, seed: int = 0,
                      leaky_relu: bool = False, lr: float = LUCENT_LR) -> bool:
        """Whether :meth:`lucent_render` for these arguments is on disk (instant)."""
        from lfx_engine.experiments.common import CACHE_VERSION

        _, parts = self._lucent_setup(name, layer, unit, steps, seed, leaky_relu, lr)
        return cache.is_cached("lucid", {"cache_version": CACHE_VERSION, **parts})

    def lucent_render(self, name: str, layer: str, unit: int, steps: int = 256, seed: int = 0,
                      leaky_relu: bool = False, lr: float = LUCENT_LR) -> np.ndarray:
        """torch-lucent image (H, W, C) in [0, 1] maximising the mean of ``unit`` of ``layer``; disk-cached.

        Renders with the experiments' ``render_unit`` (METHOD §7.5 recipe) on a deep copy; unit j uses
        seed ``seed + j`` like ``reproduce lucid``. Cached by (checkpoint sha256, layer, unit, steps, seed,
        options), so a re-render is instant.
        """
        from lfx_engine.experiments.common import cached_arrays
        from lfx_engine.experiments.lucid import render_unit

        module, parts = self._lucent_setup(name, layer, unit, steps, seed, leaky_relu, lr)
        return cached_arrays(None, "lucid", parts, lambda: {"image": render_unit(
            module, int(unit), channels=parts["channels"], size=parts["size"], steps=int(steps), lr=float(lr),
            seed=parts["seed"], leaky_relu=bool(leaky_relu))})["image"]

    def lucent_step_seconds(self, name: str, layer: str, leaky_relu: bool = False) -> float:
        """Measured seconds per lucent optimisation step for this target (a short timed render; memoised)."""
        import time

        from lfx_engine.experiments.lucid import _lucent, render_unit

        speeds = self.__dict__.setdefault("_lucent_speed", {})
        key = (name, self.entry(name).sha256, layer, bool(leaky_relu))
        if key not in speeds:
            module, parts = self._lucent_setup(name, layer, 0, 8, 0, leaky_relu, self.LUCENT_LR)
            _lucent()  # the first import of torch-lucent/kornia is not a per-step cost
            start = time.perf_counter()
            render_unit(module, 0, channels=parts["channels"], size=parts["size"], steps=8, seed=0,
                        leaky_relu=leaky_relu)
            speeds[key] = (time.perf_counter() - start) / 8
        return float(speeds[key])

    def lucent_activation(self, name: str, layer: str, unit: int, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """The target's activation (unit value, or channel mean for a conv layer) for inputs ``x`` (N, C, H, W)."""
        self._lucent_setup(name, layer, unit, 1, 0, False, self.LUCENT_LR)  # validates the target
        encoder = cast(nn.Module, self.model(name).encoder)
        # a private copy: the probe hooks a layer, and other sessions use the shared model concurrently
        probe = _LucentProbe(copy.deepcopy(encoder), "" if layer == "latent" else layer)
        x = torch.as_tensor(np.asarray(x, dtype=np.float32))
        self.check_input(name, x)
        with torch.inference_mode():
            out = probe.eval()(x.to(self.device))[:, int(unit)]
        return out.flatten(1).mean(dim=1).cpu().numpy() if out.dim() > 1 else out.cpu().numpy()


class _LucentProbe(nn.Module):
    """Exposes one layer of an encoder as the output of a module named ``mu``.

    ``render_unit`` wraps what it renders as ``encoder`` and maximises lucent's
    ``encoder_mu`` channel, so any conv layer (or the latent output, path ``""``)
    of any image encoder can be visualised with the experiments' recipe. The
    forward hook lives only during one forward pass of this (deep-copied) probe.
    """

    def __init__(self, encoder: nn.Module, path: str) -> None:
        super().__init__()
        self.net = encoder
        self.path = path
        self.mu = nn.Identity()
        encoder.get_submodule(path)  # fail early on an unknown layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        captured: dict[str, torch.Tensor] = {}
        handle = self.net.get_submodule(self.path).register_forward_hook(
            lambda _module, _inputs, output: captured.__setitem__("out", output))
        try:
            self.net(x)
        finally:
            handle.remove()
        return self.mu(captured["out"])
