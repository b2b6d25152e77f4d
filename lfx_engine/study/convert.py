"""Map the study's state dicts (the earlier ``lfxai`` key names) onto our architectures.

The tensors are the same (METHOD §5 fixes every shape); only names differ, and
the Burgess VAE's joint ``mu_logvar_gen`` layer is split into our separate μ and
log σ² heads. The study's layer interleaves its ``2d`` outputs (``view(-1, d,
2)``): μ_j is output ``2j`` and log σ²_j is output ``2j + 1``.

:func:`convert_state` returns our state dict and checks it against a freshly
built model: every key present, every shape equal, nothing left over.
"""
from __future__ import annotations

import re
from typing import Mapping

import torch
from torch import Tensor

from lfx_engine.errors import CheckpointError
from lfx_engine.models import build_model
from lfx_engine.training.io import state_dict_mismatch

#: (pattern, replacement) applied in order to each key, per architecture family.
_CONV_AE_RULES = [(r"^encoder\.encoder_cnn\.", "encoder.conv."), (r"^encoder\.encoder_lin\.", "encoder.lin."),
                  (r"^decoder\.decoder_lin\.", "decoder.lin."), (r"^decoder\.decoder_conv\.", "decoder.conv."),
                  (r"^lin_output\.0\.", "head.")]
_LSTM_RULES = [(r"^(encoder|decoder)\.rnn1\.", r"\1.lstm1."), (r"^(encoder|decoder)\.rnn2\.", r"\1.lstm2."),
               (r"^decoder\.output_layer\.", "decoder.out.")]


def _vae_rules(image_size: int) -> list[tuple[str, str]]:
    enc = ["conv1", "conv2", "conv3"] + (["conv_64"] if image_size == 64 else [])
    dec = (["convT_64"] if image_size == 64 else []) + ["convT1", "convT2", "convT3"]
    rules = [(rf"^encoder\.{name}\.", f"encoder.trunk.conv.{2 * i}.") for i, name in enumerate(enc)]
    rules += [(r"^encoder\.lin1\.", "encoder.trunk.lin.0."), (r"^encoder\.lin2\.", "encoder.trunk.lin.2.")]
    rules += [(r"^decoder\.lin1\.", "decoder.lin.0."), (r"^decoder\.lin2\.", "decoder.lin.2."),
              (r"^decoder\.lin3\.", "decoder.lin.4.")]
    rules += [(rf"^decoder\.{name}\.", f"decoder.conv.{2 * i}.") for i, name in enumerate(dec)]
    return rules


def _rename(state: Mapping[str, Tensor], rules: list[tuple[str, str]]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        new = key
        for pattern, repl in rules:
            new, n = re.subn(pattern, repl, new)
            if n:
                break
        out[new] = value
    return out


def _drop_shared_aliases(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Drop ``encoder_cnn.*``/``encoder_lin.*`` keys that repeat ``encoder.…`` (one module under two names).

    The classifiers as first committed registered their encoder's layers twice;
    the copies are the same tensors. Differing copies are refused.
    """
    out = {}
    for key, value in state.items():
        if key.startswith(("encoder_cnn.", "encoder_lin.")):
            twin = state.get(f"encoder.{key}")
            if twin is None or not torch.equal(twin, value):
                raise CheckpointError(f"{key} is not a copy of encoder.{key}; the file is not one of the study's")
            continue
        out[key] = value
    return out


def _split_mu_logvar(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """``encoder.mu_logvar_gen`` (interleaved 2d outputs) → ``encoder.mu`` + ``logvar_head``."""
    out = dict(state)
    for part in ("weight", "bias"):
        joint = out.pop(f"encoder.mu_logvar_gen.{part}", None)
        if joint is None:
            continue
        if joint.shape[0] % 2:
            raise CheckpointError(f"mu_logvar_gen.{part} has an odd number of outputs ({joint.shape[0]})")
        out[f"encoder.mu.{part}"] = joint[0::2].clone()
        out[f"logvar_head.{part}"] = joint[1::2].clone()
    return out


def convert_state(arch: str, arch_kwargs: Mapping[str, object], state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The study's ``state`` renamed for ``build_model(arch, **arch_kwargs)``; CheckpointError on any mismatch."""
    if not isinstance(state, Mapping) or not all(isinstance(k, str) and isinstance(v, Tensor)
                                                  for k, v in state.items()):
        raise CheckpointError("the file is not a state dict of tensors")
    if arch in ("mnist_ae", "mnist_classifier", "cifar_ae", "cifar_classifier"):
        converted = _rename(_drop_shared_aliases(state), _CONV_AE_RULES)
    elif arch == "ecg_lstm_ae":
        converted = _rename(state, _LSTM_RULES)
    elif arch in ("vae_mnist32", "vae_dsprites", "vae_cifar"):
        converted = _split_mu_logvar(_rename(state, _vae_rules(64 if arch == "vae_dsprites" else 32)))
    else:
        raise CheckpointError(f"no key mapping from the study's files to architecture {arch!r}")
    expected = build_model(arch, **arch_kwargs).state_dict()
    problem = state_dict_mismatch(expected, converted)
    if problem:
        raise CheckpointError(f"does not match our {arch} architecture: {problem}")
    return {k: v.detach().to(torch.float32) if v.is_floating_point() else v.detach() for k, v in converted.items()}
