"""Your own models and datasets: the project file (``lfx.toml``) and its loaders.

* :mod:`.schema` — parse and validate a project file, problems with line numbers
* :mod:`.datasets` — image folders, ``.npz`` arrays, CSV/TSV series
* :mod:`.models` — factories with safetensors/state-dict weights, ``torch.export`` archives
* :mod:`.loading` — build and probe a model into a catalogue entry
* :mod:`.cli` — ``lfx check`` and ``lfx serve``

From a notebook, :func:`lfx_engine.register_dataset` and :func:`lfx_engine.register_model`
do what a project file does.
"""
from lfx_engine.project.schema import ProjectConfig, parse_project

__all__ = ["ProjectConfig", "parse_project"]
