"""Label-free feature importance: captum methods on the auxiliary function
``g_x(x̃) = ⟨f(x), f(x̃)⟩``, channel aggregation and per-unit (VAE) attribution."""
from .aggregation import AGGREGATIONS, aggregate_channels, channel_axis
from .label_free import (
    LabelFreeModule,
    ShiftedInput,
    encoder_vs_full_attribution,
    label_free_attribution,
    random_attribution,
    resolve_method,
)
from .methods import (
    RANDOM,
    MethodSpec,
    default_occlusion_kwargs,
    get_method,
    list_methods,
    register_method,
    spec_from_class,
)
from .sanity import randomised_copy
from .units import unit_attribution

__all__ = [
    "AGGREGATIONS",
    "LabelFreeModule",
    "MethodSpec",
    "RANDOM",
    "ShiftedInput",
    "aggregate_channels",
    "channel_axis",
    "default_occlusion_kwargs",
    "encoder_vs_full_attribution",
    "get_method",
    "label_free_attribution",
    "list_methods",
    "random_attribution",
    "randomised_copy",
    "register_method",
    "resolve_method",
    "spec_from_class",
    "unit_attribution",
]
