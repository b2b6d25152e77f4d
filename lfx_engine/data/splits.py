"""Load dataset splits as tensors, with the split rules of METHOD.md §5-§6.

Split rules (all random splits use a private ``torch.Generator`` seeded as
below, so nothing touches the global RNG; each is identical to
``torch.utils.data.random_split(data, [n - n_held, n_held], generator=torch.Generator().manual_seed(seed))``,
i.e. rows come in the permutation's order):

* ``mnist``, ``cifar10``, ``cifar100``: the official ``train`` / ``test`` splits.
* ``ecg5000``: the UCR release's TRAIN rows (500) followed by its TEST rows (4,500)
  form the 5,000 beats (``extra['beat_index']`` is the position in that order).
  ``y`` is 0 for normal beats (UCR class 1) and 1 for abnormal ones (classes 2-5);
  ``extra['ucr_class']`` keeps the UCR class.

  - ``features_train`` / ``features_val``: the 2,919 normal beats split with seed 42,
    held-out part ``floor(20%)`` -> 2,336 / 583 (as METHOD.md §6).
  - ``features_test``: all 2,081 abnormal beats, in file order.
  - ``examples_train`` / ``examples_test``: all 5,000 beats split with seed 42,
    held-out ``floor(20%)`` -> 4,000 / 1,000. Aliases ``train`` / ``test``.
* ``dsprites``: all images of the bundle split with seed 1, held-out ``floor(10%)``:
  58,351 / 6,483 for the 64,834-image shared copy (663,552 / 73,728 for the full
  737,280). ``y`` is the shape latent; ``extra`` holds ``latents_classes``,
  ``latents_values`` (shape, scale, orientation, posX, posY) and ``original_indices``.

Loaded splits are cached in memory (keyed by data directory and file size/mtime,
so a re-fetched file is re-read; at most ``CACHE_SIZE`` splits, least recently used
out first). **The returned tensors are shared with the cache: treat them as
read-only** (``split.clone()`` before modifying in place). The cache reports what
it holds (:func:`cached_splits`) and gives a dataset back on request
(:func:`forget_split`): the explorer counts it in its memory budget.
"""
from __future__ import annotations

import functools
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from lfx_engine.config import data_dir
from lfx_engine.data.readers import (
    images_to_tensor,
    read_dsprites,
    read_keras_split,
    read_ucr_tables,
    require_files,
)
from lfx_engine.data.registry import get_spec, list_datasets

ECG_SPLIT_SEED = 42
ECG_HELDOUT_PERCENT = 20
DSPRITES_SPLIT_SEED = 1
DSPRITES_HELDOUT_PERCENT = 10
CACHE_SIZE = 12


@dataclass
class Split:
    """One split of a dataset: inputs ``x`` (float32), labels ``y`` (int64), per-row ``extra``.

    Every tensor in ``extra`` has the same first dimension as ``x``. A subset made
    with :meth:`subset` records its rows' positions in the parent split under
    ``extra['indices']``.
    """

    x: torch.Tensor
    y: torch.Tensor
    extra: dict[str, torch.Tensor] = field(default_factory=dict)
    dataset: str = ""
    split: str = ""

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, indices: torch.Tensor | Sequence[int]) -> "Split":
        """Rows ``indices`` of this split (fresh tensors); ``extra['indices']`` maps back to the parent."""
        index = torch.as_tensor(indices, dtype=torch.long)
        extra = {key: value[index] for key, value in self.extra.items()}
        if "indices" not in self.extra:
            extra["indices"] = index.clone()
        return Split(self.x[index], self.y[index], extra, self.dataset, self.split)

    def clone(self) -> "Split":
        """A deep copy whose tensors may be modified freely."""
        return Split(self.x.clone(), self.y.clone(), {k: v.clone() for k, v in self.extra.items()},
                     self.dataset, self.split)


def holdout_split(n: int, heldout_percent: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded random (kept, held-out) index split of ``range(n)``; held-out size ``n*pct//100``.

    Same indices as ``torch.utils.data.random_split`` with a generator seeded ``seed``.
    """
    generator = torch.Generator().manual_seed(seed)
    permutation = torch.randperm(n, generator=generator)
    n_held = n * heldout_percent // 100
    return permutation[: n - n_held], permutation[n - n_held:]


def _signature(paths: list[Path]) -> tuple[tuple[str, int, int], ...]:
    """(path, size, mtime) of each file: part of the cache key so changed files are re-read."""
    out = []
    for path in paths:
        stat = path.stat()
        out.append((str(path), stat.st_size, stat.st_mtime_ns))
    return tuple(out)


@functools.lru_cache(maxsize=4)
def _ecg_beats(folder: str, signature: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """All 5,000 beats (TRAIN rows then TEST rows) as (x (N,140,1) float32, UCR class int64)."""
    train, test = read_ucr_tables(get_spec("ecg5000"), Path(folder))
    table = np.concatenate([train, test], axis=0)
    x = torch.from_numpy(table[:, 1:].astype(np.float32)).unsqueeze(-1).contiguous()
    ucr_class = torch.from_numpy(table[:, 0].astype(np.int64))
    return x, ucr_class


def _ecg_split(folder: str, signature: tuple, split: str) -> Split:
    x_all, ucr_class = _ecg_beats(folder, signature)
    label = (ucr_class != 1).long()
    if split.startswith("features"):
        normal = torch.nonzero(ucr_class == 1).flatten()
        if split == "features_test":
            rows = torch.nonzero(ucr_class != 1).flatten()
        else:
            kept, held = holdout_split(len(normal), ECG_HELDOUT_PERCENT, ECG_SPLIT_SEED)
            rows = normal[kept if split == "features_train" else held]
    else:
        kept, held = holdout_split(len(label), ECG_HELDOUT_PERCENT, ECG_SPLIT_SEED)
        rows = kept if split == "examples_train" else held
    extra = {"ucr_class": ucr_class[rows], "beat_index": rows.clone()}
    return Split(x_all[rows], label[rows], extra, "ecg5000", split)


def _dsprites_split(folder: str, split: str) -> Split:
    arrays = read_dsprites(get_spec("dsprites"), Path(folder))
    kept, held = holdout_split(arrays["imgs"].shape[0], DSPRITES_HELDOUT_PERCENT, DSPRITES_SPLIT_SEED)
    rows = (kept if split == "train" else held).numpy()
    x = images_to_tensor(arrays["imgs"][rows], scale=1.0)
    latents_classes = torch.from_numpy(arrays["latents_classes"][rows])
    extra = {
        "latents_classes": latents_classes,
        "latents_values": torch.from_numpy(arrays["latents_values"][rows]),
        "original_indices": torch.from_numpy(arrays["original_indices"][rows]),
    }
    return Split(x, latents_classes[:, 0].clone(), extra, "dsprites", split)


@dataclass(frozen=True)
class CachedSplit:
    """One split held by the cache: its dataset and split name, bytes, and when it was last handed out."""

    dataset: str
    split: str
    nbytes: int
    last_used: float


def split_nbytes(data: Split) -> int:
    """Bytes of a split's tensors (inputs, labels and per-row extras)."""
    return int(sum(t.numel() * t.element_size() for t in (data.x, data.y, *data.extra.values())))


class _SplitCache:
    """Least-recently-used cache of loaded splits (``CACHE_SIZE`` at most), thread-safe.

    Two threads asking for the same split wait for one read (a second copy of a large split would double the
    memory for a while).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple, tuple[Any, int, float]] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple, threading.Lock] = {}

    def get(self, key: tuple, load: Callable[[], Any], nbytes: Callable[[Any], int] | None = None) -> Any:
        with self._lock:
            hit = self._touch(key)
            if hit is not None:
                return hit
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                hit = self._touch(key)
                if hit is not None:
                    return hit
            try:
                data = load()
                with self._lock:
                    self._items[key] = (data, (nbytes or split_nbytes)(data), time.monotonic())
                    while len(self._items) > self.size:
                        self._items.popitem(last=False)
                return data
            finally:
                with self._lock:  # after the insert: a later caller finds the split, not a new gate
                    self._loading.pop(key, None)

    def _touch(self, key: tuple) -> Any:
        item = self._items.get(key)
        if item is None:
            return None
        self._items[key] = (item[0], item[1], time.monotonic())
        self._items.move_to_end(key)
        return item[0]

    def entries(self) -> list[CachedSplit]:
        with self._lock:
            return [CachedSplit(key[0], key[1], nbytes, used) for key, (_, nbytes, used) in self._items.items()]

    def forget(self, dataset: str, split: str | None = None) -> int:
        with self._lock:
            keys = [k for k in self._items if k[0] == dataset and (split is None or k[1] == split)]
            return sum(self._items.pop(k)[1] for k in keys)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_CACHE = _SplitCache(CACHE_SIZE)


def cached_splits() -> list[CachedSplit]:
    """The splits held in memory now, least recently used first."""
    return _CACHE.entries()


#: The split name under which a user dataset's two splits (read together from its files) are cached.
USER_SPLITS = "train+test"


def cached_user_data(dataset: str, signature: tuple, load: Callable[[], Any], nbytes: Callable[[Any], int]) -> Any:
    """A project file's dataset (both splits, read together) through the same cache as the built-in splits.

    So one memory budget counts it and can let it go (:func:`cached_splits` lists it as split
    :data:`USER_SPLITS`); asked again after that, it is read from its files again. ``signature`` names the
    files' state (a changed file is another entry).
    """
    return _CACHE.get((dataset, USER_SPLITS, "user", signature), load, nbytes)


def forget_split(dataset: str, split: str | None = None) -> int:
    """Drop a dataset's cached split (every split when ``split`` is None); returns the bytes let go.

    ``split`` is the canonical name (``get_spec(dataset).resolve_split``). The memory is freed once no caller
    holds the tensors any more.
    """
    if split is not None and dataset in list_datasets():
        split = get_spec(dataset).resolve_split(split)
    freed = _CACHE.forget(dataset, split)
    if dataset == "ecg5000" and not any(e.dataset == dataset for e in _CACHE.entries()):
        _ecg_beats.cache_clear()  # the beats all ECG splits are cut from
    return freed


def _load_cached(name: str, split: str, folder: str, signature: tuple) -> Split:
    return _CACHE.get((name, split, folder, signature), lambda: _read_split(name, split, folder, signature))


def _read_split(name: str, split: str, folder: str, signature: tuple) -> Split:
    spec = get_spec(name)
    if spec.bundle_format == "keras_npz":
        x, y = read_keras_split(spec, Path(folder), split)
        return Split(images_to_tensor(x), torch.from_numpy(y), {}, name, split)
    if spec.bundle_format == "ucr_tsv":
        return _ecg_split(folder, signature, split)
    return _dsprites_split(folder, split)


def load_split(name: str, split: str) -> Split:
    """Split ``split`` of dataset ``name`` from :func:`lfx_engine.config.data_dir`.

    Images are float32 ``(N,C,H,W)`` in [0,1], ECG beats ``(N,140,1)``, labels int64.
    Cached: the tensors are shared between calls and must not be modified in place.
    Raises ParameterError for unknown names/splits and DatasetUnavailableError when
    the files are missing or malformed.
    """
    spec = get_spec(name)
    canonical = spec.resolve_split(split)
    folder = data_dir()
    paths = require_files(spec, folder)
    return _load_cached(name, canonical, str(folder), _signature(paths))


def baseline(name: str) -> torch.Tensor:
    """The attribution baseline ``x̄`` of dataset ``name``, shaped ``(1, *input_shape)`` (a fresh tensor).

    Zeros for image datasets; for ECG5000 the mean of all normal training beats
    (split ``features_train``), per METHOD.md §1.2.
    """
    spec = get_spec(name)
    if spec.baseline_kind == "zeros":
        return torch.zeros((1, *spec.input_shape), dtype=torch.float32)
    return load_split(name, "features_train").x.mean(dim=0, keepdim=True)


def clear_cache() -> None:
    """Drop every cached split (frees memory; the next load reads the files again)."""
    _CACHE.clear()
    _ecg_beats.cache_clear()
