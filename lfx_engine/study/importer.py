"""``lfx zoo import-study PATH``: the reproduction study's trained models as catalogue entries.

Reads a local clone of the study's repository (or any folder with its layout,
:mod:`lfx_engine.study.layout`), loads every model file with
``torch.load(..., weights_only=True)`` (never unpickling anything else),
renames its keys onto our architectures (:mod:`lfx_engine.study.convert`), and
writes safetensors files plus a zoo manifest to the study folder
(``LFX_STUDY_DIR``, a user folder: the study's repository has no licence, so
converted weights never go into the project's repository).

Each record is marked ``source: "study"`` and keeps where it came from: the
repository, the commit, the original path and the original file's sha256. A
file that is missing, foreign or corrupt is reported and skipped; the others
still import.
"""
from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from lfx_engine.errors import CheckpointError, LFXError, ParameterError
from lfx_engine.models import build_model, resolve_arch_kwargs
from lfx_engine.study.convert import convert_state
from lfx_engine.study.layout import FIRST_CLASSIFIER_COMMIT, StudyFile, expected_files

REPOSITORY = "https://github.com/jwagenbach/FACT"
#: Files larger than this are not model files of the study (its largest is about 4 MB).
MAX_FILE_BYTES = 64 * 1024 * 1024


@dataclass
class ImportReport:
    """What an import did: the records written, the files skipped (with why), the folder."""

    out: Path
    commit: str
    imported: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def missing(self) -> list[str]:
        return [path for path, why in self.skipped if why == "missing"]

    @property
    def refused(self) -> list[tuple[str, str]]:
        """Skipped files that exist but could not be used (foreign, corrupt, mismatched)."""
        return [(path, why) for path, why in self.skipped if why != "missing"]

    def summary(self) -> str:
        text = f"imported {len(self.imported)} model(s) into {self.out}"
        if self.skipped:
            text += f"; skipped {len(self.skipped)} ({len(self.missing)} missing, {len(self.refused)} unusable)"
        return text


def _git_commit(root: Path) -> str:
    if not (root / ".git").exists() or shutil.which("git") is None:
        return ""
    try:
        done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    out = done.stdout.strip()
    return out if done.returncode == 0 and len(out) == 40 else ""


def _git_blob(root: Path, commit: str, path: str) -> bytes | None:
    """``path`` at ``commit`` of the clone at ``root`` (None when git, the commit or the file is unavailable)."""
    if not (root / ".git").exists() or shutil.which("git") is None:
        return None
    try:
        done = subprocess.run(["git", "-C", str(root), "show", f"{commit}:{path}"], capture_output=True, timeout=60,
                              check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 and len(done.stdout) <= MAX_FILE_BYTES else None


def _read(root: Path, spec: StudyFile) -> tuple[bytes | None, str]:
    """The file's bytes and where they came from; ``(None, why)`` when it cannot be read."""
    file = root / spec.path
    if file.is_file():
        if file.stat().st_size > MAX_FILE_BYTES:
            return None, f"larger than {MAX_FILE_BYTES // 2**20} MB: not one of the study's model files"
        try:
            return file.read_bytes(), spec.path
        except OSError as exc:
            return None, f"cannot be read ({exc.strerror or type(exc).__name__})"
    if spec.variant == "2023-01-19":
        # a clone has these files in its history: the classifiers' first commit
        original = spec.path.replace("TrainedModels-2023-01-19/", "TrainedModels/", 1)
        blob = _git_blob(root, FIRST_CLASSIFIER_COMMIT, original)
        if blob is not None:
            return blob, f"{FIRST_CLASSIFIER_COMMIT[:7]}:{original}"
    return None, "missing"


def _load_weights_only(data: bytes) -> Any:
    """``torch.load(weights_only=True)`` of the bytes; CheckpointError saying what the file is when it fails."""
    if not data.startswith((b"PK\x03\x04", b"\x80")):
        raise CheckpointError("not a PyTorch file (neither a zip archive nor a pickle)")
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or truncated files
        if "weights only load failed" in str(exc).lower():
            raise CheckpointError("holds Python objects that a weights-only load refuses (it was not loaded)") \
                from None
        raise CheckpointError(f"corrupt or truncated PyTorch file ({type(exc).__name__})") from None


def _record(spec: StudyFile, kwargs: dict[str, Any], file: str, sha: str, size: int, origin: str,
            original_sha: str, commit: str) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "name": spec.name, "dataset": spec.dataset, "experiment": spec.experiment, "arch": spec.arch,
        "arch_kwargs": kwargs, "task": spec.task, "run": spec.run, "latent_dim": spec.latent_dim,
        "file": file, "sha256": sha, "size_bytes": size, "storage_dtype": "float32", "tracin_checkpoints": [],
        "source": "study", "full_recipe": True,
        "trained_by": "the reproduction study's authors (GPU; up to 100 epochs, early stopping)",
        "study": {"repository": REPOSITORY, "commit": commit or "unknown", "path": spec.path, "read_from": origin,
                  "sha256": original_sha, "variant": spec.variant,
                  "imported_at": datetime.now(timezone.utc).isoformat(timespec="seconds")},
    }
    if spec.beta is not None:
        rec["beta"] = spec.beta
        rec["loss"] = spec.task
    if spec.experiment == "consistency":
        rec["used_by"] = ["consistency_features" if spec.name.endswith("_features") else "consistency_examples"]
        rec["note"] = "the study published no TracIn checkpoints for this model"
    if spec.variant == "2023-01-19":
        rec["note"] = ("as first committed (6dcbc1c, 2023-01-19): trained while the classifier ended in Linear + "
                       "Softmax under cross-entropy; the file holds the Linear layer only")
    return rec


def import_study(path: str | Path, out: str | Path | None = None, *, commit: str | None = None,
                 progress: Optional[Callable[[int, int, str], None]] = None) -> ImportReport:
    """Convert every model file of the study's layout under ``path`` into ``out`` (default: ``LFX_STUDY_DIR``)."""
    from lfx_engine.config import REPO_ROOT, in_checkout, study_dir, writable_folder
    from lfx_engine.training.io import save_checkpoint
    from lfx_engine.training.zoo import update_manifest_entries

    root = Path(path).expanduser()
    if not root.is_dir():
        raise ParameterError(f"{root} is not a folder; give the path of a local clone of {REPOSITORY}")
    if not (root / "results").is_dir() and not (root / "TrainedModels").is_dir():
        raise ParameterError(f"{root} has neither results/ nor TrainedModels/: it is not a clone of the study's "
                             f"repository ({REPOSITORY})")
    target = Path(out).expanduser().resolve() if out is not None else study_dir()
    if in_checkout() and (target == REPO_ROOT.resolve() or REPO_ROOT.resolve() in target.parents):
        raise ParameterError(f"{target} is inside the project's repository; the study's repository has no licence, "
                             "so its converted weights must go to a user folder (LFX_STUDY_DIR or --out)")
    target = writable_folder(target, "the study folder (LFX_STUDY_DIR or --out)")
    report = ImportReport(out=target, commit=commit or _git_commit(root) or "unknown")
    specs = expected_files()
    records = []
    for i, spec in enumerate(specs):
        if progress is not None:
            progress(i, len(specs), spec.path)
        data, origin = _read(root, spec)
        if data is None:
            report.skipped.append((spec.path, origin))
            continue
        try:
            state = _load_weights_only(data)
            kwargs = resolve_arch_kwargs(spec.arch, **spec.arch_kwargs)
            converted = convert_state(spec.arch, kwargs, state)
            for key, tensor in converted.items():
                if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                    raise CheckpointError(f"tensor {key} holds NaN or infinite values")
            model = build_model(spec.arch, **kwargs)
            model.load_state_dict(converted, strict=True)
            saved = save_checkpoint(model, target / f"{spec.name}.safetensors",
                                    {"source": "study", "study_path": spec.path, "study_commit": report.commit})
        except (LFXError, RuntimeError, ValueError) as exc:
            report.skipped.append((spec.path, str(exc)))
            continue
        records.append(_record(spec, kwargs, saved.path.name, saved.sha256, saved.size_bytes, origin,
                               hashlib.sha256(data).hexdigest(), report.commit))
    if records:
        update_manifest_entries(records, target)
    report.imported = records
    if progress is not None:
        progress(len(specs), len(specs), "")
    return report
