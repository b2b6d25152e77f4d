"""Sanity checks of attribution methods: the model-randomisation test (Adebayo et al., 2018).

An explanation that looks the same for a trained encoder and for the same
architecture with random weights explains the input, not the model. The
masking experiment ranks features with such a randomised encoder and measures
the shift on the trained one as a control.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import ParameterError

__all__ = ["randomised_copy"]


def randomised_copy(module: nn.Module, seed: int = 0) -> nn.Module:
    """A deep copy of ``module`` with every parameter re-drawn by its layer's own initialiser (seeded).

    Every submodule with ``reset_parameters`` (linear, convolution, recurrent,
    normalisation layers, whose running statistics are reset too) is
    re-initialised; the copy is in eval mode and the caller's module is
    untouched. A module with a parameter that no layer initialiser resets is refused.
    """
    copied = copy.deepcopy(module)
    resettable = [m for m in copied.modules() if callable(getattr(m, "reset_parameters", None))]
    covered = {id(p) for m in resettable for p in m.parameters(recurse=False)}
    left = [name for name, p in copied.named_parameters() if id(p) not in covered]
    if left:
        raise ParameterError(f"{type(module).__name__} has parameters no layer initialiser resets "
                             f"({', '.join(left[:3])}{'…' if len(left) > 3 else ''}); the randomisation control "
                             "needs standard layers")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        # nn.Module declares neither method: call what the getattr checks above found
        for m in resettable:
            getattr(m, "reset_parameters")()
        for m in copied.modules():
            if callable(getattr(m, "reset_running_stats", None)):
                getattr(m, "reset_running_stats")()
    return copied.eval()
