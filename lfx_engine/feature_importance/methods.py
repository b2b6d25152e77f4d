"""Registry of the attribution methods the engine can wrap (captum-style).

Each entry is a :class:`MethodSpec`: how to build the captum attribution object
around a module, its default ``attribute`` keyword arguments, and two facts the
rest of the engine relies on: whether the method takes ``baselines`` and whether
it is *linear in the explained function* (METHOD.md §1.1: gradient,
Input×Gradient, IG, GradientShap, DeepLift and Occlusion are; Saliency is not,
because of its ``abs``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from captum.attr import (
    Attribution,
    DeepLift,
    GradientShap,
    InputXGradient,
    IntegratedGradients,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from torch import nn

from ..errors import ParameterError

__all__ = [
    "MethodSpec",
    "RANDOM",
    "default_occlusion_kwargs",
    "get_method",
    "list_methods",
    "register_method",
    "spec_from_class",
]

#: Name of the seeded i.i.d. N(0,1) control ("random mask" curve).
RANDOM = "random"


@dataclass(frozen=True)
class MethodSpec:
    """How to run one attribution method.

    * ``factory(module)`` builds the captum object explaining ``module``
      (``None`` only for the random control, which needs no model).
    * ``default_kwargs`` are passed to ``attribute``; caller kwargs override them.
    * ``shape_kwargs(example_shape)`` adds defaults that depend on the shape of one
      example (e.g. Occlusion's window), overridable by the caller too.
    * ``draws_baselines``: captum samples the baseline rows at random (GradientShap),
      so per-example baselines need the shift reparametrisation of
      :func:`lfx_engine.feature_importance.label_free_attribution`.
    """

    name: str
    factory: Callable[[nn.Module], Attribution] | None
    default_kwargs: Mapping[str, Any] = field(default_factory=dict)
    uses_baselines: bool = False
    linear: bool = False
    stochastic: bool = False
    draws_baselines: bool = False
    shape_kwargs: Callable[[tuple[int, ...]], dict[str, Any]] | None = None
    description: str = ""

    def kwargs_for(self, example_shape: tuple[int, ...], overrides: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults, then shape-dependent defaults, then the caller's overrides."""
        kwargs = dict(self.default_kwargs)
        if self.shape_kwargs is not None:
            kwargs.update(self.shape_kwargs(tuple(example_shape)))
        kwargs.update(overrides)
        return kwargs


def default_occlusion_kwargs(example_shape: tuple[int, ...]) -> dict[str, Any]:
    """Occlusion window per input rank.

    Images ``(C,H,W)``: a ``C×4×4`` patch moved by 2 pixels (overlapping windows,
    every pixel covered). Sequences ``(T,F)``: 7 time steps × all features moved by
    1 step. Anything else: single features.
    """
    if len(example_shape) == 3:
        c, h, w = example_shape
        return {
            "sliding_window_shapes": (c, min(4, h), min(4, w)),
            "strides": (c, min(2, h), min(2, w)),
            "perturbations_per_eval": 8,
        }
    if len(example_shape) == 2:
        t, f = example_shape
        return {
            "sliding_window_shapes": (min(7, t), f),
            "strides": (1, f),
            "perturbations_per_eval": 8,
        }
    return {
        "sliding_window_shapes": tuple(1 for _ in example_shape),
        "perturbations_per_eval": 8,
    }


def _smoothgrad_saliency(module: nn.Module) -> Attribution:
    return NoiseTunnel(Saliency(module))


def _smoothgrad_ig(module: nn.Module) -> Attribution:
    return NoiseTunnel(IntegratedGradients(module))


_REGISTRY: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec, overwrite: bool = False) -> None:
    """Add a method to the registry (``overwrite=True`` to replace one)."""
    if spec.name in _REGISTRY and not overwrite:
        raise ParameterError(f"attribution method {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec


def list_methods() -> list[str]:
    """Names of the registered attribution methods."""
    return sorted(_REGISTRY)


def get_method(name: str) -> MethodSpec:
    """The spec registered under ``name``; a ParameterError lists the valid names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ParameterError(
            f"unknown attribution method {name!r}; choose one of {', '.join(list_methods())} "
            "or pass a captum Attribution class"
        ) from None


def spec_from_class(cls: type[Attribution]) -> MethodSpec:
    """A spec for any captum ``Attribution`` class taking the model as sole argument.

    Baselines are passed when the class's ``attribute`` accepts them; GradientShap
    subclasses get the paired-baseline treatment. Linearity is unknown, so False.
    """
    import inspect

    if not (isinstance(cls, type) and issubclass(cls, Attribution)):
        raise ParameterError(f"{cls!r} is not a captum Attribution class")
    params = inspect.signature(cls.attribute).parameters
    return MethodSpec(
        name=cls.__name__,
        factory=cls,
        uses_baselines="baselines" in params,
        stochastic=issubclass(cls, (GradientShap, NoiseTunnel)),
        draws_baselines=issubclass(cls, GradientShap),
        description=f"user-supplied captum class {cls.__name__}",
    )


for _spec in (
    MethodSpec(
        "saliency", Saliency, {"abs": True},
        description="absolute gradient |J_f(x)^T f(x)|",
    ),
    MethodSpec(
        "integrated_gradients", IntegratedGradients,
        {"n_steps": 50, "method": "gausslegendre", "internal_batch_size": "auto"},
        uses_baselines=True, linear=True,
        description="Integrated Gradients, 50 Gauss-Legendre steps",
    ),
    MethodSpec(
        "gradient_shap", GradientShap, {"n_samples": 5, "stdevs": 0.0},
        uses_baselines=True, linear=True, stochastic=True, draws_baselines=True,
        description="GradientShap, 5 samples, no noise, one baseline (Monte-Carlo IG)",
    ),
    MethodSpec(
        "deeplift", DeepLift, {}, uses_baselines=True, linear=True,
        description="DeepLift (Rescale rule) on the wrapper",
    ),
    MethodSpec(
        "input_x_gradient", InputXGradient, {}, linear=True,
        description="input times gradient",
    ),
    MethodSpec(
        "occlusion", Occlusion, {}, uses_baselines=True, linear=True,
        shape_kwargs=default_occlusion_kwargs,
        description="occlusion with a C×4×4 (images) or 7×F (sequences) window",
    ),
    MethodSpec(
        "smoothgrad", _smoothgrad_saliency,
        {"nt_type": "smoothgrad", "nt_samples": 10, "stdevs": 0.15, "abs": True},
        stochastic=True,
        description="SmoothGrad: NoiseTunnel over Saliency (10 samples, sigma 0.15)",
    ),
    MethodSpec(
        "smoothgrad_ig", _smoothgrad_ig,
        {"nt_type": "smoothgrad", "nt_samples": 10, "stdevs": 0.15, "n_steps": 50,
         "method": "gausslegendre", "internal_batch_size": "auto"},
        uses_baselines=True, linear=True, stochastic=True,
        description="SmoothGrad over Integrated Gradients (10 samples, sigma 0.15)",
    ),
    MethodSpec(
        RANDOM, None, {}, stochastic=True,
        description="control: seeded i.i.d. N(0,1) scores, independent of the model",
    ),
):
    register_method(_spec)
