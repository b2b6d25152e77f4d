"""The model zoo: a declarative table of required checkpoints, their training recipes, and a manifest.

``ZOO`` lists every model the experiments need (METHOD §5, §7), with its
training recipe. ``train_entry`` trains one, writes ``<name>.safetensors`` (and
TracIn checkpoints under ``tracin/<name>/``) and records it in
``manifest.json`` next to them (default folder: ``config.checkpoint_dir()``).
``load_entry`` loads a trained model after checking its sha256 and
architecture.

Protocol choices, recorded per entry in the manifest: the held-out set used for
early stopping is a validation split carved from the training split with a
fixed seed (``VAL_SPLIT_SEED``), never the test split; minibatches are shuffled;
each run has its own seed (run r → seed r, ECG seed 42). Within a pretext run the four tasks also start
from different seeds (``pretext_seed``: reconstruction r, denoising r + 100, inpainting r + 200,
classification r + 300), so a shared initialisation cannot raise their cross-task correlations.
"""
from __future__ import annotations

import contextlib
import difflib
import datetime as _dt
import fnmatch
import hashlib
import json
import math
import os
import platform
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union, cast

import torch
from torch import Tensor, nn

from lfx_engine.config import checkpoint_dir, data_dir, default_device
from lfx_engine.errors import CheckpointError, DatasetUnavailableError, ParameterError
from lfx_engine.models.registry import build_model, resolve_arch_kwargs
from lfx_engine.training.io import atomic_write_text, file_sha256, load_checkpoint, save_checkpoint
from lfx_engine.training.objectives import make_objective
from lfx_engine.training.trainer import BatchProgress, EpochProgress, FitResult, evaluate, fit

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "lfx-zoo-manifest/1"
VAL_SPLIT_SEED = 0
TEST_EVAL_SEED = 0
DATASETS = ("mnist", "cifar10", "cifar100", "ecg5000", "dsprites")
AE_TASKS = ("reconstruction", "denoising", "inpainting")
VAE_TASKS = ("betavae", "btcvae")
BETAS = (1, 5, 10)
PRETEXT_TASKS = AE_TASKS + ("classification",)
PRETEXT_SEED_STRIDE = 100
PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class ZooEntry:
    """One required checkpoint and how to train it."""

    name: str
    dataset: str
    experiment: str            # consistency | pretext | disvae
    arch: str
    task: str                  # reconstruction | denoising | inpainting | classification | betavae | btcvae
    run: int
    seed: int
    latent_dim: int
    batch_size: int
    max_epochs: int
    beta: Optional[float] = None
    split: str = "train"
    test_split: Optional[str] = "test"
    val_fraction: float = 0.1
    resize32: bool = False
    tracin: bool = False
    shipped: bool = True
    extra_kwargs: tuple[tuple[str, Any], ...] = ()
    note: str = ""

    def arch_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``build_model(self.arch, ...)``."""
        kwargs: dict[str, Any] = {"latent_dim": self.latent_dim, **dict(self.extra_kwargs)}
        if self.task in AE_TASKS and self.arch != "ecg_lstm_ae":
            kwargs["pretext"] = self.task
        return kwargs

    def validate(self) -> None:
        """Refuse impossible recipes (unknown dataset, beta <= 0, latent_dim <= 0, ...)."""
        if self.dataset not in DATASETS:
            raise ParameterError(f"unknown dataset {self.dataset!r}; choose one of {DATASETS}")
        if isinstance(self.latent_dim, bool) or not isinstance(self.latent_dim, int) or self.latent_dim <= 0:
            raise ParameterError(f"latent_dim must be a positive integer, got {self.latent_dim!r}")
        if self.task in VAE_TASKS:
            if self.beta is None or not math.isfinite(self.beta) or self.beta <= 0:
                raise ParameterError(f"beta must be a positive number, got {self.beta!r}")
        elif self.beta is not None:
            raise ParameterError(f"beta only applies to VAE tasks, not {self.task!r}")
        for label, value in (("batch_size", self.batch_size), ("max_epochs", self.max_epochs)):
            if value <= 0:
                raise ParameterError(f"{label} must be positive, got {value}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ParameterError(f"val_fraction must lie in (0, 1), got {self.val_fraction}")
        resolve_arch_kwargs(self.arch, **self.arch_kwargs())


def pretext_seed(task: str, run: int) -> int:
    """The initialisation seed of one pretext model: distinct across the tasks of a run and across runs."""
    return run + PRETEXT_SEED_STRIDE * PRETEXT_TASKS.index(task)


def _build_zoo() -> dict[str, ZooEntry]:
    entries: list[ZooEntry] = []
    image = {
        # dataset: (ae arch, classifier arch, vae arch, d, vae d, pretext runs, VAE runs, shipped,
        #           extra classifier kwargs). CIFAR-10 has a third pretext run so that each task's noise
        #           ceiling rests on three pairs of runs, not one (issue 11).
        "mnist": ("mnist_ae", "mnist_classifier", "vae_mnist32", 4, 3, 5, 5, True, ()),
        "cifar10": ("cifar_ae", "cifar_classifier", "vae_cifar", 16, 16, 3, 2, True, ()),
        "cifar100": ("cifar_ae", "cifar_classifier", "vae_cifar", 16, 16, 2, 2, False, (("n_classes", 100),)),
    }
    for ds, (ae, clf, vae, d, vae_d, runs, vae_runs, shipped, clf_kwargs) in image.items():
        common: dict[str, Any] = dict(dataset=ds, batch_size=300, max_epochs=100, shipped=shipped)
        entries.append(ZooEntry(name=f"{ds}_dae_consistency", experiment="consistency", arch=ae, task="denoising",
                                run=1, seed=1, latent_dim=d, tracin=True, **common))
        for run in range(1, runs + 1):
            for task in AE_TASKS:
                entries.append(ZooEntry(name=f"{ds}_pretext_{task}_run{run}", experiment="pretext", arch=ae,
                                        task=task, run=run, seed=pretext_seed(task, run), latent_dim=d,
                                        **common))
            entries.append(ZooEntry(name=f"{ds}_pretext_classification_run{run}", experiment="pretext", arch=clf,
                                    task="classification", run=run, seed=pretext_seed("classification", run),
                                    latent_dim=d,
                                    extra_kwargs=clf_kwargs, **common))
        for loss in VAE_TASKS:
            for beta in BETAS:
                for run in range(1, vae_runs + 1):
                    entries.append(ZooEntry(name=f"{ds}_{loss}_b{beta}_run{run}", experiment="disvae", arch=vae,
                                            task=loss, beta=float(beta), run=run, seed=run, latent_dim=vae_d,
                                            resize32=(ds == "mnist"), **common))
    # dSprites: 3 runs per β; the β-TC-VAE has the study's 5, as its Pearson rise with β is the trend the study's
    # own models resolve (issue 11)
    dsprites_runs = {"betavae": 3, "btcvae": 5}
    for loss in VAE_TASKS:
        for beta in BETAS:
            for run in range(1, dsprites_runs[loss] + 1):
                entries.append(ZooEntry(name=f"dsprites_{loss}_b{beta}_run{run}", dataset="dsprites",
                                        experiment="disvae", arch="vae_dsprites", task=loss, beta=float(beta),
                                        run=run, seed=run, latent_dim=6, batch_size=500, max_epochs=100))
    entries.append(ZooEntry(
        name="ecg5000_lstm_ae", dataset="ecg5000", experiment="consistency", arch="ecg_lstm_ae",
        task="reconstruction", run=1, seed=42, latent_dim=64, batch_size=20, max_epochs=150,
        split="examples_train", test_split="examples_test", val_fraction=0.2, tracin=True,
        note="trained on examples_train (all beats, normal and abnormal) because consistency_examples needs "
             "that split; consistency_features uses ecg5000_lstm_ae_features"))
    entries.append(ZooEntry(
        name="ecg5000_lstm_ae_features", dataset="ecg5000", experiment="consistency", arch="ecg_lstm_ae",
        task="reconstruction", run=1, seed=42, latent_dim=64, batch_size=20, max_epochs=150,
        split="features_train", test_split="features_val", val_fraction=0.2,
        note="trained on normal beats only (features_train), as the paper's consistency_features model (METHOD "
             "§7.1); tested on the held-out normal beats (features_val)"))
    return {entry.name: entry for entry in entries}


ZOO: dict[str, ZooEntry] = _build_zoo()


def get_entry(name: str) -> ZooEntry:
    """The zoo recipe called ``name``; ParameterError if unknown."""
    try:
        return ZOO[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), list(ZOO), n=3, cutoff=0.6)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ParameterError(f"unknown zoo entry {name!r}{hint}; `python -m lfx_engine zoo list` shows them all") \
            from None


def select_entries(pattern: str, dataset: Optional[str] = None, include_unshipped: bool = False) -> list[ZooEntry]:
    """Entries matching a name, a glob (``mnist_pretext_*``) or ``all``, optionally restricted to a dataset.

    ``all`` skips entries that are not shipped (CIFAR-100) unless
    ``include_unshipped`` or ``dataset`` asks for them.
    """
    if dataset is not None and dataset not in DATASETS:
        raise ParameterError(f"unknown dataset {dataset!r}; choose one of {DATASETS}")
    if pattern == "all":
        chosen = [e for e in ZOO.values() if e.shipped or include_unshipped or dataset is not None]
    elif any(ch in pattern for ch in "*?["):
        chosen = [e for e in ZOO.values() if fnmatch.fnmatchcase(e.name, pattern)]
        if not chosen:
            raise ParameterError(f"no zoo entry matches {pattern!r}; `python -m lfx_engine zoo list` shows them all")
    else:
        chosen = [get_entry(pattern)]
    if dataset is not None:
        chosen = [e for e in chosen if e.dataset == dataset]
        if not chosen:
            raise ParameterError(f"no zoo entry matching {pattern!r} uses dataset {dataset!r}")
    return chosen


# --------------------------------------------------------------------------- manifest


def manifest_path(root: Optional[PathLike] = None) -> Path:
    """``<root>/manifest.json``, root defaulting to ``config.checkpoint_dir()``."""
    return Path(root) / MANIFEST_NAME if root is not None else checkpoint_dir() / MANIFEST_NAME


def read_manifest(root: Optional[PathLike] = None) -> dict[str, Any]:
    """The manifest as a dict ``{"format", "entries": {name: entry}}``; empty when none exists yet."""
    path = manifest_path(root)
    if not path.is_file():
        return {"format": MANIFEST_FORMAT, "entries": {}}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"the zoo manifest {path} is corrupt ({exc}); restore it from git or re-train") \
            from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("entries"), dict):
        raise CheckpointError(f"the zoo manifest {path} has an unexpected layout")
    return manifest


@contextlib.contextmanager
def _manifest_lock(path: Path) -> Iterator[None]:
    """Serialise read-modify-write of the manifest across processes (POSIX advisory lock)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def update_manifest(entry: dict[str, Any], root: Optional[PathLike] = None) -> Path:
    """Insert or replace ``entry`` (keyed by ``entry["name"]``) in the manifest, atomically."""
    return update_manifest_entries([entry], root)


def update_manifest_entries(entries: list[dict[str, Any]], root: Optional[PathLike] = None) -> Path:
    """Insert or replace several entries in one atomic rewrite of the manifest (under its lock)."""
    if any(not entry.get("name") for entry in entries):
        raise ParameterError("a manifest entry needs a name")
    path = manifest_path(root)
    with _manifest_lock(path):
        manifest = read_manifest(path.parent)
        manifest["format"] = MANIFEST_FORMAT
        for entry in entries:
            manifest["entries"][entry["name"]] = entry
        manifest["entries"] = dict(sorted(manifest["entries"].items()))
        atomic_write_text(path, json.dumps(manifest, indent=1, sort_keys=False) + "\n")
    return path


def list_entries(root: Optional[PathLike] = None) -> list[dict[str, Any]]:
    """Every zoo recipe (plus any extra trained model in the manifest), with ``trained`` and its manifest record.

    Only records that pass the manifest schema count as trained (:func:`.manifest.valid_records`).
    """
    from lfx_engine.training.manifest import valid_records

    trained, _ = valid_records(manifest_path(root).parent)
    rows = []
    for name, recipe in ZOO.items():
        row = {**asdict(recipe), "trained": name in trained}
        row.update(trained.get(name, {}))
        rows.append(row)
    for name, record in trained.items():
        if name not in ZOO:
            rows.append({**record, "trained": True})
    return rows


def _manifest_record(name: str, root: Optional[PathLike]) -> tuple[dict[str, Any], Path]:
    base = manifest_path(root).parent
    if not base.is_dir() and name in ZOO:
        raise CheckpointError(f"the checkpoint folder {base} does not exist; set LFX_CHECKPOINT_DIR to the folder "
                              f"holding the zoo's manifest.json (a checkout's checkpoints/), or train into it with "
                              f"`lfx train {name}`")
    from lfx_engine.training.manifest import valid_records

    records, problems = valid_records(base)
    record = records.get(name)
    for bad, problem in problems:
        if bad in (name, MANIFEST_NAME):
            raise CheckpointError(f"zoo entry {name!r} cannot be loaded: {problem} ({manifest_path(root)})")
    if record is None:
        if name in ZOO:
            raise CheckpointError(f"zoo entry {name!r} is not trained yet (no record in {manifest_path(root)}); "
                                  f"run `python -m lfx_engine train {name}`")
        raise ParameterError(f"unknown zoo entry {name!r}; `python -m lfx_engine zoo list` shows them all")
    return record, base


def load_entry(name: str, root: Optional[PathLike] = None,
               device: Optional[Union[str, torch.device]] = None) -> nn.Module:
    """Load a trained zoo model (eval mode), verifying its sha256 and architecture against the manifest."""
    record, base = _manifest_record(name, root)
    return load_checkpoint(base / record["file"], record["arch"], expected_sha256=record["sha256"], device=device,
                           **record.get("arch_kwargs", {}))


def tracin_checkpoint_paths(name: str, root: Optional[PathLike] = None) -> list[tuple[int, Path, str]]:
    """``(epoch, path, sha256)`` of each TracIn checkpoint of a trained entry, in epoch order.

    Load each with ``load_checkpoint(path, arch, expected_sha256=sha)`` or
    ``io.load_state_dict`` for ``torch.func.functional_call``.
    """
    record, base = _manifest_record(name, root)
    return [(item["epoch"], base / item["file"], item["sha256"]) for item in record.get("tracin_checkpoints", [])]


# --------------------------------------------------------------------------- training


def _load_split(dataset: str, split: str) -> tuple[Tensor, Tensor]:
    """``(x, y)`` of a dataset split via ``lfx_engine.data`` (imported lazily; tests replace this function)."""
    try:
        from lfx_engine.data import load_split
    except ImportError as exc:
        raise DatasetUnavailableError(f"the data package could not be imported ({exc}); datasets cannot be loaded") \
            from None
    data = load_split(dataset, split)
    return data.x, data.y


def _resize_to_32(x: Tensor) -> Tensor:
    from lfx_engine.data import resize_to_32

    return resize_to_32(x)


def _data_fingerprint(dataset: str, x: Tensor, y: Optional[Tensor]) -> dict[str, Any]:
    """sha256 of the dataset's source files when the data package names them, else of the loaded arrays."""
    try:
        from lfx_engine.data import get_spec

        spec = get_spec(dataset)
        files = getattr(spec, "files", None) or getattr(spec, "filenames", None)
        if files:
            hashes = {}
            for item in files:
                name = getattr(item, "name", item)
                path = Path(item) if Path(str(item)).is_absolute() else data_dir() / str(name)
                if not path.is_file():
                    raise FileNotFoundError(path)
                hashes[path.name] = file_sha256(path)
            return {"data_sha256": hashes, "data_sha256_of": "source files"}
    except Exception:  # fall back to hashing what was loaded
        pass
    digest = hashlib.sha256(x.detach().cpu().contiguous().numpy().tobytes())
    if y is not None:
        digest.update(y.detach().cpu().contiguous().numpy().tobytes())
    return {"data_sha256": digest.hexdigest(), "data_sha256_of": "loaded float32 training split (x then y)"}


def _split_train_val(n: int, val_fraction: float) -> tuple[Tensor, Tensor]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(VAL_SPLIT_SEED))
    n_val = max(1, int(round(n * val_fraction)))
    if n - n_val < 1:
        raise ParameterError(f"a split of {n} examples is too small to carve a validation set from")
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def _mean_baseline(train_x: Tensor, x: Tensor, loss_name: str) -> float:
    """Loss of always predicting the mean training image/beat (a trivial reference for AE losses)."""
    mean = train_x.mean(0, keepdim=True)
    diff = mean - x
    return float(diff.abs().mean()) if loss_name == "l1" else float((diff ** 2).mean())


def _rel(path: Path, base: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(base.resolve()))
    except ValueError:
        return str(Path(path).resolve())


def _round(value: float) -> float:
    return float(f"{value:.6g}") if math.isfinite(value) else value


def default_command(entry: ZooEntry, epochs: Optional[int], max_train: Optional[int]) -> str:
    """The CLI line that (re)trains ``entry`` with the given overrides."""
    parts = ["python -m lfx_engine train", entry.name]
    if epochs is not None:
        parts.append(f"--epochs {epochs}")
    if max_train is not None:
        parts.append(f"--max-train {max_train}")
    return " ".join(parts)


def train_entry(entry: Union[str, ZooEntry], *, epochs: Optional[int] = None, max_train: Optional[int] = None,
                device: Optional[Union[str, torch.device]] = None, out_dir: Optional[PathLike] = None,
                storage_dtype: str = "float32", command: Optional[str] = None, tracin_every: int = 10,
                progress: Optional[EpochProgress] = None, batch_progress: Optional[BatchProgress] = None,
                on_fit: Optional[Callable[[FitResult], None]] = None, kl_warmup: int = 0) -> dict[str, Any]:
    """Train one zoo entry, write its checkpoint (+ TracIn checkpoints), update the manifest; return the record.

    ``tracin_every``: save a TracIn checkpoint after every that many epochs
    (METHOD: 10; shorter CPU runs use fewer so TracIn still sums several).
    ``epochs`` overrides the recipe's maximum; ``max_train`` caps the training,
    held-out and test sets to that many examples each (quick runs; recorded as
    ``full_recipe: false``). ``kl_warmup``: VAE entries' linear KL warm-up, in optimiser steps (0: none;
    recorded as ``kl_warmup_steps``).
    """
    entry = get_entry(entry) if isinstance(entry, str) else entry
    entry.validate()
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs <= 0):
        raise ParameterError(f"--epochs must be a positive integer, got {epochs!r}")
    if max_train is not None and (not isinstance(max_train, int) or max_train < 2):
        raise ParameterError(f"--max-train must be an integer >= 2, got {max_train!r}")
    root = Path(out_dir) if out_dir is not None else checkpoint_dir()
    device = torch.device(device) if device is not None else default_device()
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ParameterError("--device cuda was requested but no CUDA device is available")
    n_epochs = epochs if epochs is not None else entry.max_epochs
    if isinstance(tracin_every, bool) or not isinstance(tracin_every, int) or tracin_every <= 0:
        raise ParameterError(f"--tracin-every must be a positive integer, got {tracin_every!r}")

    x, y = _load_split(entry.dataset, entry.split)
    if entry.resize32:
        x = _resize_to_32(x)
    fingerprint = _data_fingerprint(entry.dataset, x, y)
    train_idx, val_idx = _split_train_val(x.shape[0], entry.val_fraction)
    if max_train is not None:
        train_idx, val_idx = train_idx[:max_train], val_idx[:max_train]
    uses_labels = entry.task == "classification"
    train_x, val_x = x[train_idx], x[val_idx]
    train_y = y[train_idx].long() if uses_labels else None
    val_y = y[val_idx].long() if uses_labels else None
    del x, y

    torch.manual_seed(entry.seed)
    model = build_model(entry.arch, **entry.arch_kwargs())
    objective = make_objective(entry.task, model, beta=entry.beta, dataset_size=train_x.shape[0],
                               kl_warmup=kl_warmup)
    # TracIn checkpoints go to a scratch folder that replaces the old one only once training succeeded
    tracin_final = root / "tracin" / entry.name
    tracin_dir = root / "tracin" / f".{entry.name}.partial" if entry.tracin else None
    if tracin_dir is not None and tracin_dir.exists():
        shutil.rmtree(tracin_dir)
    if tracin_dir is not None:
        tracin_dir.mkdir(parents=True)
    result = fit(model, train_x, train_y, val_x, val_y, objective, epochs=n_epochs, batch_size=entry.batch_size,
                 seed=entry.seed, shuffle=True, device=device, tracin_every=tracin_every, tracin_dir=tracin_dir,
                 tracin_storage_dtype=storage_dtype, progress=progress, batch_progress=batch_progress)
    if on_fit is not None:
        on_fit(result)

    metrics: dict[str, Any] = {"best_val_loss": _round(result.best_val_loss),
                               "val_components": {k: _round(v) for k, v in result.best_val_components.items()}}
    loss_name = getattr(model, "loss_name", "")
    if loss_name in ("mse", "l1"):
        metrics["baseline_val_loss"] = _round(_mean_baseline(train_x, val_x, loss_name))
    if uses_labels:
        metrics["val_accuracy"] = metrics["val_components"].get("accuracy")
    if entry.test_split is not None:
        try:
            tx, ty = _load_split(entry.dataset, entry.test_split)
        except DatasetUnavailableError as exc:
            metrics["test_note"] = f"test split unavailable: {exc}"
        else:
            if entry.resize32:
                tx = _resize_to_32(tx)
            if max_train is not None:
                tx, ty = tx[:max_train], ty[:max_train]
            test = evaluate(model, tx, ty.long() if uses_labels else None, objective, seed=TEST_EVAL_SEED,
                            device=device)
            metrics["test_loss"] = _round(test.pop("loss"))
            metrics["test_components"] = {k: _round(v) for k, v in test.items()}
            if uses_labels:
                metrics["test_accuracy"] = metrics["test_components"].get("accuracy")
            if loss_name in ("mse", "l1"):
                metrics["baseline_test_loss"] = _round(_mean_baseline(train_x, tx, loss_name))
    if entry.task in VAE_TASKS:
        metrics["rec"] = metrics["val_components"].get("rec")
        metrics["kl"] = metrics["val_components"].get("kl")

    tracin_records = []
    if tracin_dir is not None:
        if tracin_final.exists():
            shutil.rmtree(tracin_final)
        os.replace(tracin_dir, tracin_final)
        for epoch, path in zip(result.tracin_epochs, result.tracin_checkpoints):
            moved = tracin_final / Path(path).name
            tracin_records.append({"epoch": epoch, "file": _rel(moved, root), "sha256": file_sha256(moved)})
    arch_kwargs = dict(cast(dict[str, Any], model.arch_kwargs))  # set by build_model (a plain attribute)
    record: dict[str, Any] = {
        "name": entry.name,
        "dataset": entry.dataset,
        "experiment": entry.experiment,
        "arch": entry.arch,
        "arch_kwargs": arch_kwargs,
        "task": entry.task,
        "loss": {"mse": "mse", "l1": "l1", "cross_entropy": "cross_entropy"}.get(loss_name, entry.task),
        "beta": entry.beta,
        "run": entry.run,
        "seed": entry.seed,
        "latent_dim": entry.latent_dim,
        "batch_size": entry.batch_size,
        **({"kl_warmup_steps": kl_warmup} if kl_warmup else {}),
        "max_epochs": n_epochs,
        "recipe_max_epochs": entry.max_epochs,
        "epochs_trained": result.epochs_trained,
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "diverged": result.diverged,
        **metrics,
        "optimizer": {"name": "adam", "lr": 1e-3, "weight_decay": 1e-5, "patience": 10},
        "data": {
            "split": entry.split,
            "resized_to_32": entry.resize32,
            "validation": f"{entry.val_fraction:.0%} of '{entry.split}' held out (seed {VAL_SPLIT_SEED}) for early "
                          f"stopping; the test split is never used for training decisions",
            "val_fraction": entry.val_fraction,
            "val_split_seed": VAL_SPLIT_SEED,
            "n_train": int(train_x.shape[0]),
            "n_val": int(val_x.shape[0]),
            "shuffle": True,
            "test_split": entry.test_split,
            "max_train": max_train,
            **fingerprint,
        },
        "full_recipe": max_train is None and n_epochs == entry.max_epochs,
        "note": entry.note,
        "history": {"train_loss": [_round(h["train_loss"]) for h in result.history],
                    "val_loss": [_round(h["val_loss"]) for h in result.history]},
        "command": command or default_command(entry, epochs, max_train),
        "storage_dtype": storage_dtype,
        "tracin_checkpoints": tracin_records,
        "tracin_every": tracin_every if entry.tracin else None,
        "tracin_epoch_convention": (f"saved after 0-based epoch e for e = 0, {tracin_every}, {2 * tracin_every}, ..."
                                    if entry.tracin else None),
        "wall_time_s": round(result.wall_time_s, 2),
        "device": result.device,
        "torch_version": torch.__version__,
        "platform": platform.platform(),
        "trained_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    meta = {k: v for k, v in record.items() if k not in ("history",)}
    saved = save_checkpoint(model, root / f"{entry.name}.safetensors", meta, storage_dtype=storage_dtype)
    record["file"] = _rel(saved.path, root)
    record["sha256"] = saved.sha256
    record["size_bytes"] = saved.size_bytes
    if storage_dtype != "float32":
        reloaded = load_checkpoint(saved.path, entry.arch, expected_sha256=saved.sha256, **arch_kwargs)
        record["storage_check"] = storage_explanation_check(model, reloaded, val_x[:16])
    update_manifest(record, root)
    return record


def storage_explanation_check(original: nn.Module, stored: nn.Module, x: Tensor) -> dict[str, Any]:
    """How much reduced-precision storage changes explanations: the label-free IG maps
    (per-unit GradientShap maps for VAEs) of the in-memory model vs the reloaded one.

    Returns the largest relative L2 difference and the smallest Pearson r over the examples.
    """
    from lfx_engine.feature_importance import label_free_attribution, unit_attribution

    original = original.cpu().eval()
    stored = stored.cpu().eval()
    is_vae = hasattr(original, "logvar_head")
    explain = (lambda m: unit_attribution(m.encoder, x, "gradient_shap", device="cpu")) if is_vae else \
        (lambda m: label_free_attribution(m.encoder, x, "integrated_gradients", device="cpu"))
    a = explain(original).reshape(len(x), -1).double()
    b = explain(stored).reshape(len(x), -1).double()
    rel = ((a - b).norm(dim=1) / a.norm(dim=1).clamp_min(1e-12)).max().item()
    ac, bc = a - a.mean(dim=1, keepdim=True), b - b.mean(dim=1, keepdim=True)
    r = ((ac * bc).sum(dim=1) / (ac.norm(dim=1) * bc.norm(dim=1)).clamp_min(1e-12)).min().item()
    return {"method": "unit gradient_shap" if is_vae else "label-free integrated_gradients", "n": len(x),
            "max_relative_l2_diff": round(rel, 6), "min_pearson": round(r, 6)}
