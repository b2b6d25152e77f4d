"""The paper's experiments (METHOD.md §7) as pure functions plus a results writer.

Each ``run_<experiment>(dataset, ...)`` takes its models from a
:class:`ModelHub` (trained zoo entries), caches heavy intermediates on disk
(keyed by checkpoint sha256 and parameters, shared with the app) and returns an
:class:`ExperimentResult`; :func:`write_result` puts it into
``<results>/<experiment>/<dataset>/``. ``python -m lfx_engine reproduce`` drives
them from the shell.

Names are imported lazily, so registering the ``reproduce`` command does not
load captum, altair or torch-lucent for every other command.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "EXPERIMENTS": "common",
    "EXPERIMENT_DATASETS": "common",
    "ExperimentResult": "common",
    "ExperimentSkipped": "common",
    "ModelHub": "common",
    "result_folder": "common",
    "write_result": "common",
    "write_skipped": "common",
    "run_consistency_features": "consistency_features",
    "run_consistency_examples": "consistency_examples",
    "run_pretext": "pretext",
    "run_disvae": "disvae",
    "run_lucid": "lucid",
    "render_unit": "lucid",
    "run_encoder_vs_full": "encoder_vs_full",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
