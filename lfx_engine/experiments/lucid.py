"""lucid (METHOD.md §7.5): feature visualisation of the VAE latent units with torch-lucent.

For the run-1 β-VAEs (β = 1, 5, 10) of MNIST (d=3) and CIFAR (d=16), one image
per unit j maximises the mean of μ_j (lucent's ``channel("encoder_mu", j)`` on
the μ head). Recipe of PRACTICE.md §4, no package patch: an FFT image of the
input size W with C channels and a sigmoid (no colour decorrelation),
``preprocess=False``, integer ``fixed_image_size=W`` (no upsampling to 224), no
transforms, Adam lr 5e-2, 1000 steps. Rendering happens on a deep copy of the
encoder in eval mode (lucent leaves hooks behind); the trained ReLU is kept
unless ``leaky_relu=True`` (the study's LeakyReLU(0.1) swap).
"""
from __future__ import annotations

import copy
import time
import warnings
from typing import Any, Sequence, cast

import numpy as np
import pandas as pd
import torch
from torch import nn

from lfx_engine.catalogue import source_prefix
from lfx_engine.data import get_spec
from lfx_engine.example_importance import encode
from lfx_engine.experiments.common import (
    ExperimentResult,
    ExperimentSkipped,
    LogFn,
    ModelHub,
    check_model_source,
    study_hint,
    ProgressFn,
    Reporter,
    cached_arrays,
    check_positive_int,
    image_for_display,
    new_figure,
    require_dataset,
)
from lfx_engine.experiments.disvae import test_inputs

EXPERIMENT = "lucid"
LAYER = "encoder_mu"
BETAS = (1, 5, 10)
#: Smaller run for a CPU (``--quick``): 256 optimisation steps.
QUICK: dict[str, Any] = {"steps": 256}


class _EncoderOnly(nn.Module):
    """Holds an encoder copy under the name ``encoder`` so lucent calls its μ layer ``encoder_mu``."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


def _swap_relu(module: nn.Module, slope: float = 0.1) -> int:
    """Replace every ``nn.ReLU`` inside ``module`` by ``LeakyReLU(slope)`` in place; returns the count."""
    count = 0
    for child_name, child in module.named_children():
        if isinstance(child, nn.ReLU):
            setattr(module, child_name, nn.LeakyReLU(slope))
            count += 1
        else:
            count += _swap_relu(child, slope)
    return count


def _lucent() -> tuple[Any, Any, Any, torch.device]:
    """Import torch-lucent (silencing kornia's torch.jit deprecation warnings) and its device."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from lucent.optvis import objectives, param, render
        from lucent.optvis.param import spatial
    return objectives, param, render, spatial.device


def render_unit(encoder: nn.Module, unit: int, *, channels: int, size: int, steps: int = 1000, lr: float = 5e-2,
                seed: int = 0, leaky_relu: bool = False) -> np.ndarray:
    """One lucent render maximising mean μ_unit: float32 ``(H, W, C)`` in [0,1].

    Works on a deep copy of ``encoder`` in eval mode on lucent's device, so the
    caller's module is never hooked, moved or modified.
    """
    check_positive_int("steps", steps)
    objectives, param, render, lucent_device = _lucent()
    wrapper = _EncoderOnly(copy.deepcopy(encoder)).to(lucent_device).eval()
    if leaky_relu:
        _swap_relu(wrapper)
    for p in wrapper.parameters():
        p.requires_grad_(False)
    with torch.random.fork_rng(devices=[lucent_device] if lucent_device.type == "cuda" else [],
                               device_type="cuda"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(seed)
        images = render.render_vis(
            wrapper, objectives.channel(LAYER, unit),
            param_f=lambda: param.image(size, channels=channels),
            optimizer=lambda params: torch.optim.Adam(params, lr=lr),
            preprocess=False, fixed_image_size=size, transforms=[], thresholds=(steps,),
            show_image=False, progress=False,
        )
    return np.asarray(images[-1][0], dtype=np.float32)


def run_lucid(
    dataset: str,
    *,
    models: ModelHub | None = None,
    model_source: str = "zoo",
    betas: Sequence[float] = BETAS,
    run: int = 1,
    loss: str = "betavae",
    steps: int = 1000,
    lr: float = 5e-2,
    seed: int = 0,
    leaky_relu: bool = False,
    n_stats: int = 1000,
    use_cache: bool = True,
    progress: ProgressFn | None = None,
    log: LogFn | None = None,
    device: torch.device | str | None = None,
) -> ExperimentResult:
    """One render per latent unit of each run-``run`` β-VAE of ``dataset``; grid β × unit.

    Unit j is rendered with seed ``seed + j``. ``n_stats`` test images give
    the typical range of μ_j, to which the render's activation is compared.
    ``device`` is unused: torch-lucent renders on its own device (CUDA when
    available). Tables: ``renders`` (β, unit, activation of the render, test μ_j
    statistics); arrays: ``renders_b<β>`` ``(d, H, W, C)``.
    """
    start = time.perf_counter()
    require_dataset(EXPERIMENT, dataset)
    check_positive_int("steps", steps)
    hub = models or ModelHub()
    prefix = source_prefix(check_model_source(model_source))
    names = {b: f"{prefix}{dataset}_{loss}_b{b:g}_run{run}" for b in betas}
    present = {b: n for b, n in names.items() if hub.has(n)}
    if not present and prefix:
        raise ExperimentSkipped(EXPERIMENT, dataset, f"no run-{run} study {loss} of {dataset}; {study_hint(dataset)}")
    if not present:
        raise ExperimentSkipped(EXPERIMENT, dataset, f"no trained run-{run} {loss} of {dataset} "
                                f"({', '.join(names.values())}) in {hub.root}; train with "
                                f"`python -m lfx_engine train '{dataset}_{loss}_b*_run{run}'`")
    result = ExperimentResult(EXPERIMENT, dataset, n_runs=1)
    missing = [n for b, n in names.items() if b not in present]
    if missing:
        result.notes.append(f"not trained, left out: {', '.join(missing)}")
    spec = get_spec(dataset)
    channels = spec.input_shape[0]
    size = 32 if dataset != "dsprites" else 64
    x_stats = test_inputs(dataset, n_stats)
    total = sum(int(hub.record(n).get("latent_dim") or 0) for n in present.values())
    report = Reporter(progress, log, total=total)
    _, _, _, lucent_device = _lucent()
    rows = []
    for beta, name in present.items():
        model = hub.load(name)
        encoder = cast(nn.Module, model.encoder)
        sha = hub.record(name)["sha256"]
        mu_test = encode(encoder, x_stats).numpy()
        renders = []
        d = mu_test.shape[1]
        for j in range(d):
            report.log(f"{EXPERIMENT}/{dataset}: {name} unit {j + 1}/{d} ({steps} steps)")
            parts = {"experiment": EXPERIMENT, "model": name, "sha256": sha, "layer": LAYER, "channel": j,
                     "seed": seed + j, "steps": steps, "lr": lr, "leaky_relu": leaky_relu, "size": size,
                     "channels": channels, "recipe": "fft image, no decorrelation, no transforms, no preprocess"}
            image = cached_arrays(result, "lucid", parts, lambda: {"image": render_unit(
                encoder, j, channels=channels, size=size, steps=steps, lr=lr, seed=seed + j,
                leaky_relu=leaky_relu)}, use_cache)["image"]
            renders.append(image)
            report.step()
        stack = np.stack(renders)  # (d, H, W, C)
        with torch.no_grad():
            mu_render = encoder(torch.from_numpy(stack).permute(0, 3, 1, 2).contiguous()
                                .to(next(model.parameters()).device)).cpu().numpy()
        for j in range(d):
            rows.append({"model": name, "beta": float(beta), "unit": j, "steps": steps, "lr": lr, "seed": seed + j,
                         "leaky_relu": leaky_relu, "activation": float(mu_render[j, j]),
                         "test_mu_mean": float(mu_test[:, j].mean()), "test_mu_std": float(mu_test[:, j].std()),
                         "test_mu_max": float(mu_test[:, j].max()),
                         "exceeds_test_max": bool(mu_render[j, j] > mu_test[:, j].max()),
                         "image_min": float(stack[j].min()), "image_max": float(stack[j].max())})
        result.arrays[f"renders_b{beta:g}"] = stack
        result.checkpoints.append(hub.describe(name))

    table = pd.DataFrame(rows)
    result.tables = {"renders": table}
    result.figures = {"lucid_grid": _grid(result.arrays, spec.title, loss, run)}
    result.summary = {"n_renders": len(table), "all_finite_in_unit_range": bool(
        all(np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1 for a in result.arrays.values())),
        "share_exceeding_test_max": float(table["exceeds_test_max"].mean()) if len(table) else None}
    result.params = {"models": list(present.values()), "betas": [float(b) for b in present], "loss": loss, "run": run,
                     "layer": LAYER, "objective": "channel(encoder_mu, j): maximise mean μ_j",
                     "param": f"lucent param.image({size}, channels={channels}) (FFT, sigmoid, no decorrelation)",
                     "render_vis": {"preprocess": False, "fixed_image_size": size, "transforms": [],
                                    "thresholds": [steps]},
                     "optimizer": f"Adam lr {lr}", "steps": steps,
                     "activation": "LeakyReLU(0.1) swap" if leaky_relu else "trained ReLU",
                     "n_stats": len(x_stats), "device": str(lucent_device)}
    result.seeds = {"render_seed": f"{seed} + unit index"}
    if steps != 1000:
        result.notes.append(f"{steps} optimisation steps (full protocol: 1000)")
    result.wall_time_s = time.perf_counter() - start
    return result


def _grid(arrays: dict[str, np.ndarray], title: str, loss: str, run: int) -> Any:
    """Rows = β, columns = units."""
    keys = list(arrays)
    d = max(a.shape[0] for a in arrays.values())
    fig, axes = new_figure(len(keys), d, cell=1.1)
    for r, key in enumerate(keys):
        stack = arrays[key]
        axes[r, 0].set_ylabel(f"β={key.split('_b')[-1]}", fontsize=8)
        for j in range(stack.shape[0]):
            img = image_for_display(np.transpose(stack[j], (2, 0, 1)))
            axes[r, j].imshow(img, cmap="gray", vmin=0, vmax=1)
            if r == 0:
                axes[0, j].set_title(f"unit {j}", fontsize=7)
        for j in range(stack.shape[0], d):
            axes[r, j].axis("off")
    fig.suptitle(f"lucid: {title} {loss} run {run}, one render per unit of μ", fontsize=9)
    return fig
