"""The training loop: Adam, early stopping on a held-out loss, TracIn checkpoints on disk.

Protocol (METHOD §5): Adam (lr 1e-3, weight decay 1e-5), shuffled minibatches
from a seeded generator, early stopping with patience 10 on the held-out loss,
keeping the best weights. The held-out loss is computed in eval mode with the
pretext perturbation applied explicitly from a generator re-seeded at every
evaluation, so every epoch sees the same perturbed held-out inputs.

TracIn checkpoints (METHOD §3): the full model state is written **after** epoch
``e`` for ``e = 0, tracin_every, 2·tracin_every, ...`` (0-based; "after epoch 0"
means after the first pass over the data), i.e. at most 10 files for 100
epochs, fewer with early stopping. Their paths are returned and belong in the
model's metadata.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor, nn

from lfx_engine.config import default_device
from lfx_engine.errors import ParameterError
from lfx_engine.training.io import save_checkpoint
from lfx_engine.training.objectives import Objective

EpochProgress = Callable[[int, int, float, float], None]
BatchProgress = Callable[[int, int, float], None]
# keep the whole training set on the GPU when it is at most this large
MAX_DEVICE_RESIDENT_BYTES = 4 * 1024 ** 3


@dataclass
class FitResult:
    """Outcome of :func:`fit`. ``history`` has one dict per epoch (epoch, train_loss, val_loss, components)."""

    best_val_loss: float
    best_epoch: int
    epochs_trained: int
    stopped_early: bool
    history: list[dict[str, Any]]
    wall_time_s: float
    tracin_checkpoints: list[str] = field(default_factory=list)
    tracin_epochs: list[int] = field(default_factory=list)
    best_val_components: dict[str, float] = field(default_factory=dict)
    device: str = "cpu"
    diverged: bool = False


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ParameterError(f"{name} must be a positive integer, got {value!r}")
    return value


def _batches(n: int, batch_size: int, order: Optional[Tensor]):
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        yield (order[start:stop] if order is not None else slice(start, stop))


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Optional[Tensor], objective: Objective, *, batch_size: int = 500,
             seed: int = 0, device: Optional[Union[str, torch.device]] = None) -> dict[str, float]:
    """Mean held-out loss (and components) in eval mode, perturbations drawn from a generator seeded with ``seed``.

    Leaves the model in eval mode. Returns ``{"loss": ..., **components}``.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.eval()
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    n = x.shape[0]
    if n == 0:
        raise ParameterError("cannot evaluate on an empty held-out set")
    totals: dict[str, float] = {}
    for index in _batches(n, batch_size, None):
        xb = x[index].to(device, non_blocking=True)
        yb = y[index].to(device, non_blocking=True) if y is not None else None
        loss, components = objective.eval_loss(model, xb, yb, generator)
        weight = xb.shape[0]
        totals["loss"] = totals.get("loss", 0.0) + float(loss) * weight
        for key, value in components.items():
            totals[key] = totals.get(key, 0.0) + float(value) * weight
    return {key: value / n for key, value in totals.items()}


def fit(model: nn.Module, train_x: Tensor, train_y: Optional[Tensor], val_x: Tensor, val_y: Optional[Tensor],
        objective: Objective, *, epochs: int, batch_size: int, lr: float = 1e-3, weight_decay: float = 1e-5,
        patience: Optional[int] = 10, seed: int = 0, shuffle: bool = True,
        device: Optional[Union[str, torch.device]] = None, tracin_every: Optional[int] = 10,
        tracin_dir: Optional[Union[str, Path]] = None, tracin_storage_dtype: str = "float32",
        progress: Optional[EpochProgress] = None, batch_progress: Optional[BatchProgress] = None,
        eval_batch_size: int = 500) -> FitResult:
    """Train ``model`` in place and leave it in eval mode with its best held-out weights.

    Seeds ``torch.manual_seed(seed)`` (perturbations, VAE sampling) and a
    separate generator for shuffling; seed the model initialisation yourself
    before building it. ``progress(epochs_done, epochs, train_loss, val_loss)``
    is called after each epoch, ``batch_progress(done, total, running_loss)``
    after each batch. TracIn checkpoints are written only when ``tracin_dir`` is
    given (see the module docstring). ``patience=None`` disables early stopping.
    """
    epochs = _positive_int("epochs", epochs)
    batch_size = _positive_int("batch_size", batch_size)
    if patience is not None:
        patience = _positive_int("patience", patience)
    if tracin_every is not None and tracin_every != 0:
        tracin_every = _positive_int("tracin_every", tracin_every)
    if train_x.shape[0] == 0 or val_x.shape[0] == 0:
        raise ParameterError("training and held-out sets must both be non-empty")
    if objective.needs_labels and (train_y is None or val_y is None):
        raise ParameterError(f"the {objective.name} objective needs labels for training and held-out data")
    if not (lr > 0 and math.isfinite(lr)) or weight_decay < 0:
        raise ParameterError(f"lr must be positive and weight_decay non-negative, got {lr}, {weight_decay}")

    device = torch.device(device) if device is not None else default_device()
    start_time = time.perf_counter()
    torch.manual_seed(seed)
    shuffle_gen = torch.Generator().manual_seed(seed)
    model.to(device)
    resident = device.type != "cpu" and train_x.element_size() * train_x.nelement() <= MAX_DEVICE_RESIDENT_BYTES
    if resident:
        train_x = train_x.to(device)
        train_y = train_y.to(device) if train_y is not None else None
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)

    n = train_x.shape[0]
    n_batches = math.ceil(n / batch_size)
    history: list[dict[str, Any]] = []
    tracin_paths: list[str] = []
    tracin_epochs: list[int] = []
    best_val, best_epoch, best_components = math.inf, -1, {}
    best_state: Optional[dict[str, Tensor]] = None
    stale = 0
    stopped_early = diverged = False
    val_seed = seed + 1

    for epoch in range(epochs):
        model.train()
        order = torch.randperm(n, generator=shuffle_gen) if shuffle else None
        if order is not None and resident:
            order = order.to(device)
        running, seen = 0.0, 0
        for done, index in enumerate(_batches(n, batch_size, order), start=1):
            xb = train_x[index].to(device, non_blocking=True)
            yb = train_y[index].to(device, non_blocking=True) if train_y is not None else None
            loss, _ = objective.train_loss(model, xb, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running += float(loss.detach()) * xb.shape[0]
            seen += xb.shape[0]
            if batch_progress is not None:
                batch_progress(done, n_batches, running / seen)
        train_loss = running / seen
        val = evaluate(model, val_x, val_y, objective, batch_size=eval_batch_size, seed=val_seed, device=device)
        val_loss = val.pop("loss")
        history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, **val})

        if tracin_dir is not None and tracin_every and epoch % tracin_every == 0:
            path = Path(tracin_dir) / f"epoch_{epoch:03d}.safetensors"
            save_checkpoint(model, path, {"kind": "tracin", "epoch": epoch, "train_loss": train_loss,
                                          "val_loss": val_loss}, storage_dtype=tracin_storage_dtype)
            tracin_paths.append(str(path))
            tracin_epochs.append(epoch)

        if progress is not None:
            progress(epoch + 1, epochs, train_loss, val_loss)
        if not math.isfinite(train_loss):
            diverged = True
            break
        if math.isfinite(val_loss) and val_loss < best_val:
            best_val, best_epoch, best_components = val_loss, epoch, dict(val)
            best_state = copy.deepcopy({k: v.detach() for k, v in model.state_dict().items()})
            stale = 0
        else:
            stale += 1
            if patience is not None and stale >= patience:
                stopped_early = epoch + 1 < epochs
                break

    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return FitResult(best_val_loss=best_val, best_epoch=best_epoch, epochs_trained=len(history),
                     stopped_early=stopped_early, history=history, wall_time_s=time.perf_counter() - start_time,
                     tracin_checkpoints=tracin_paths, tracin_epochs=tracin_epochs,
                     best_val_components=best_components, device=str(device), diverged=diverged)
