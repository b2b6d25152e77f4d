"""Label-free feature importance (METHOD.md §1): any captum method applied to the
auxiliary function ``g_x(x̃) = ⟨f(x), f(x̃)⟩``.

The wrapper :class:`LabelFreeModule` receives ``f(x)`` through captum's
``additional_forward_args``. Captum expands those arguments in step with the
inputs for every method (IG concatenates whole-batch α blocks, NoiseTunnel and
GradientShap use ``repeat_interleave``, DeepLift stacks inputs and baselines,
Occlusion repeats perturbations), so each enlarged row stays paired with its own
example's representation: the GradientShap pairing defect of the earlier code
(§1.3) cannot happen.
"""
from __future__ import annotations

import warnings
from typing import Any, cast

import torch
from captum.attr import Attribution
from torch import nn

from ..errors import ParameterError
from ._utils import (
    ProgressFn,
    baseline_rows,
    check_inputs,
    chunks,
    eval_module,
    format_baselines,
    no_leftover_hooks,
    resolve_device,
    rnn_backward_ok,
    resolve_internal_batch_size,
    seeded,
)
from .methods import RANDOM, MethodSpec, get_method, spec_from_class

# captum's DeepLift announces its (temporary) hooks on every call; we remove them ourselves.
warnings.filterwarnings("ignore", message="Setting forward, backward hooks", category=UserWarning)

__all__ = [
    "LabelFreeModule",
    "ShiftedInput",
    "encoder_vs_full_attribution",
    "label_free_attribution",
    "random_attribution",
    "resolve_method",
]


class LabelFreeModule(nn.Module):
    """Scalar auxiliary function ``(module(x̃) * fx).sum(1)`` for a fixed, detached ``fx``.

    Works on any module whose output is ``(N, ...)`` (an encoder's latent, a
    classifier's logits): both sides are flattened per row.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x_tilde: torch.Tensor, fx: torch.Tensor) -> torch.Tensor:
        out = self.module(x_tilde)
        if not isinstance(out, torch.Tensor):
            raise ParameterError(
                "the explained module must return one tensor (N, d); wrap it so that it does"
            )
        if out.shape[0] != fx.shape[0]:
            raise RuntimeError(
                f"label-free pairing broken: {out.shape[0]} rows of f(x~) against {fx.shape[0]} of f(x)"
            )
        return (out.reshape(out.shape[0], -1) * fx.reshape(fx.shape[0], -1)).sum(dim=1)


class ShiftedInput(nn.Module):
    """``h(δ, x̄, *rest) = module(x̄ + δ, *rest)``.

    GradientShap treats ``baselines`` as a distribution and draws rows at random,
    so per-example baselines would be mismatched. Explaining ``h`` at
    ``δ = x − x̄`` from the zero baseline, with ``x̄`` passed as an additional
    forward argument, gives exactly GradientShap with paired baselines.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, delta: torch.Tensor, x_bar: torch.Tensor, *rest: Any) -> torch.Tensor:
        return self.module(x_bar + delta, *rest)


def resolve_method(method: str | MethodSpec | type[Attribution]) -> MethodSpec:
    """A registered name, a MethodSpec, or any captum Attribution class → MethodSpec."""
    if isinstance(method, MethodSpec):
        return method
    if isinstance(method, str):
        return get_method(method)
    return spec_from_class(method)


def attribute_chunk(
    module: nn.Module,
    spec: MethodSpec,
    x: torch.Tensor,
    x_bar: torch.Tensor,
    extra_args: tuple,
    target: torch.Tensor | None,
    kwargs: dict[str, Any],
) -> torch.Tensor:
    """Run ``spec`` on one chunk: ``x`` (n rows), baselines ``x_bar`` (1 or n rows)."""
    kw = dict(kwargs)
    rows = x.shape[0] * (int(kw.get("nt_samples", 1)) if "nt_type" in kw else 1)
    resolve_internal_batch_size(kw, rows)
    if target is not None:
        kw["target"] = target
    inputs = x
    explained = module
    if spec.uses_baselines:
        if spec.draws_baselines and x_bar.shape[0] > 1:
            explained = ShiftedInput(module)
            inputs = x - x_bar
            extra_args = (x_bar, *extra_args)
            kw["baselines"] = torch.zeros_like(x[:1])
        elif spec.draws_baselines:
            kw["baselines"] = x_bar
        else:
            kw["baselines"] = x_bar.expand_as(x)
    if extra_args:
        kw["additional_forward_args"] = extra_args
    assert spec.factory is not None  # only the random control has none, and its callers handle it first
    attributor = spec.factory(explained)
    inputs = inputs.detach().requires_grad_(True)
    with no_leftover_hooks(explained):
        out = attributor.attribute(inputs, **kw)
    if isinstance(out, tuple):
        out = out[0]
    return out.detach()


def random_attribution(inputs: torch.Tensor, seed: int | None = 0) -> torch.Tensor:
    """The control: i.i.d. N(0,1) scores of the inputs' shape, reproducible from ``seed``."""
    gen = torch.Generator()
    if seed is not None:
        gen.manual_seed(int(seed))
    else:
        gen.seed()
    return torch.randn(tuple(inputs.shape), generator=gen, dtype=torch.float32)


def label_free_attribution(
    encoder: nn.Module,
    inputs: torch.Tensor,
    method: str | MethodSpec | type[Attribution] = "integrated_gradients",
    baselines: torch.Tensor | float | None = None,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    progress: ProgressFn | None = None,
    seed: int | None = 0,
    **method_kwargs: Any,
) -> torch.Tensor:
    """Label-free attribution ``b(f, x) = a(g_x, x)`` of every example; input-shaped, on CPU.

    ``encoder`` is any module mapping ``(N, ...)`` to ``(N, d)``: a model's
    encoder, or a whole classifier to explain its logits (§7.6). ``method`` is a
    registered name (:func:`list_methods`), a :class:`MethodSpec` or a captum
    ``Attribution`` class; ``method_kwargs`` override its defaults.
    ``baselines``: None (zeros), a scalar, ``(1,*shape)`` shared or ``(N,*shape)``
    per example. Runs in chunks of ``batch_size`` examples on ``device``
    (default :func:`lfx_engine.config.default_device`), calling
    ``progress(done, total)`` after each. Stochastic methods are seeded with
    ``seed`` (global RNG states are restored afterwards).

    A module in training mode (or on another device) is explained through an
    eval-mode deep copy; the caller's module is never switched, moved or changed.
    """
    check_inputs(inputs, batch_size)
    spec = resolve_method(method)
    n = inputs.shape[0]
    if spec.name == RANDOM and spec.factory is None:
        out = random_attribution(inputs, seed)
        if progress is not None:
            progress(n, n)
        return out
    dev = resolve_device(device)
    module = eval_module(encoder, dev)
    wrapper = LabelFreeModule(module)
    x_bar_all = format_baselines(baselines, inputs)
    kwargs = spec.kwargs_for(tuple(inputs.shape[1:]), method_kwargs)
    results: list[torch.Tensor] = []
    with torch.inference_mode(False), torch.enable_grad(), seeded(seed, dev), rnn_backward_ok(module, dev):
        for start, stop in chunks(n, int(batch_size)):
            x = inputs[start:stop].detach().to(dev).clone()
            x_bar = baseline_rows(x_bar_all, start, stop).to(dev).clone()
            with torch.no_grad():
                fx = module(x).detach()
            attr = attribute_chunk(wrapper, spec, x, x_bar, (fx,), None, kwargs)
            results.append(attr.cpu())
            if progress is not None:
                progress(stop, n)
    return torch.cat(results, dim=0)


def encoder_vs_full_attribution(
    model: nn.Module,
    inputs: torch.Tensor,
    method: str | MethodSpec | type[Attribution] = "gradient_shap",
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Label-free attributions of ``model.encoder`` and of the whole ``model`` (§7.6).

    Both go through the auxiliary function (``⟨logits(x), logits(x̃)⟩`` for the
    full classifier, not the predicted-class logit), with the same seed and
    baselines. Returns ``(encoder_attr, full_attr)``.
    """
    if not hasattr(model, "encoder"):
        raise ParameterError("the model has no `encoder` attribute")
    enc = label_free_attribution(cast(nn.Module, model.encoder), inputs, method, **kwargs)
    full = label_free_attribution(model, inputs, method, **kwargs)
    return enc, full
