"""Training (Adam + early stopping + TracIn checkpoints), safetensors checkpoint IO and the model zoo."""
from lfx_engine.training.io import (
    CheckpointFile,
    atomic_write_bytes,
    atomic_write_text,
    file_sha256,
    load_checkpoint,
    load_state_dict,
    read_checkpoint_metadata,
    save_checkpoint,
)
from lfx_engine.training.objectives import (
    ClassificationObjective,
    Objective,
    ReconstructionObjective,
    VAEObjective,
    make_objective,
)
from lfx_engine.training.trainer import FitResult, evaluate, fit
from lfx_engine.training.zoo import (
    ZOO,
    ZooEntry,
    get_entry,
    list_entries,
    load_entry,
    read_manifest,
    select_entries,
    tracin_checkpoint_paths,
    train_entry,
    update_manifest,
)

__all__ = [
    "ZOO", "CheckpointFile", "ClassificationObjective", "FitResult", "Objective", "ReconstructionObjective",
    "VAEObjective", "ZooEntry", "atomic_write_bytes", "atomic_write_text", "evaluate", "file_sha256", "fit",
    "get_entry", "list_entries", "load_checkpoint", "load_entry", "load_state_dict", "make_objective",
    "read_checkpoint_metadata", "read_manifest", "save_checkpoint", "select_entries", "tracin_checkpoint_paths",
    "train_entry", "update_manifest",
]
