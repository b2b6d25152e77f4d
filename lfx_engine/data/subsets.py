"""Deterministic subsets used by consistency_examples and pretext (METHOD.md §6), and the MNIST resize.

* Balanced subsets: example ``k`` (k = 0..n-1) is the ``floor(k/K)``-th
  occurrence of class ``k mod K`` in the split, so classes cycle 0,1,..,K-1,0,..
  and each class gets ``n/K`` examples (100 for K=10, 10 for K=100).
* ECG: 1000 training examples alternating normal/abnormal (the same rule with
  K=2, normal first) and a seeded random permutation of the 1000-beat test split.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lfx_engine.data.registry import get_spec
from lfx_engine.data.splits import Split, load_split
from lfx_engine.errors import ParameterError

ECG_SUBSET_SEED = 42


def balanced_subset_indices(
    labels: torch.Tensor | np.ndarray | Sequence[int],
    n: int = 1000,
    n_classes: int | None = None,
) -> torch.Tensor:
    """Indices (int64, length ``n``) of the class-balanced subset of METHOD.md §6.

    ``indices[k]`` is the position of the ``k // K``-th occurrence of class ``k % K``
    in ``labels``. ``n_classes`` (K) defaults to ``max(labels) + 1``. Raises
    ParameterError when a class occurs too rarely.
    """
    labels = torch.as_tensor(np.asarray(labels) if not torch.is_tensor(labels) else labels).long()
    if labels.ndim != 1:
        raise ParameterError(f"labels must be 1-D, got shape {tuple(labels.shape)}")
    if n <= 0:
        raise ParameterError(f"subset size must be positive, got n={n}")
    if n_classes is None:
        if labels.numel() == 0:
            raise ParameterError("labels are empty")
        n_classes = int(labels.max()) + 1
    if n_classes <= 0:
        raise ParameterError(f"n_classes must be positive, got {n_classes}")
    indices = torch.empty(n, dtype=torch.long)
    for cls in range(min(n_classes, n)):
        needed = len(range(cls, n, n_classes))
        positions = torch.nonzero(labels == cls).flatten()
        if len(positions) < needed:
            raise ParameterError(
                f"class {cls} occurs {len(positions)} times but a balanced subset of {n} "
                f"over {n_classes} classes needs {needed}"
            )
        indices[cls::n_classes] = positions[:needed]
    return indices


def balanced_subset(name: str, split: str, n: int = 1000) -> Split:
    """The balanced subset of ``n`` examples of a split (fresh tensors; ``extra['indices']`` = rows)."""
    data = load_split(name, split)
    return data.subset(balanced_subset_indices(data.y, n, get_spec(name).n_classes))


def ecg_example_subsets(n_train: int = 1000, n_test: int = 1000, seed: int = ECG_SUBSET_SEED) -> tuple[Split, Split]:
    """ECG5000 subsets for consistency_examples: (train, test).

    Train: ``n_train`` beats of ``examples_train`` alternating normal/abnormal
    (normal first, ``n_train/2`` each). Test: the first ``n_test`` rows of a random
    permutation (generator seeded ``seed``) of the 1000-beat ``examples_test`` split.
    """
    train = load_split("ecg5000", "examples_train")
    test = load_split("ecg5000", "examples_test")
    if not 0 < n_test <= len(test):
        raise ParameterError(f"n_test must lie in 1..{len(test)}, got {n_test}")
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))[:n_test]
    return train.subset(balanced_subset_indices(train.y, n_train, 2)), test.subset(order)


def resize_to_32(x: torch.Tensor) -> torch.Tensor:
    """Bilinearly resize images ``(N,C,H,W)`` or ``(C,H,W)`` to 32x32 (MNIST VAEs, METHOD.md §5).

    Uses ``F.interpolate(mode='bilinear', align_corners=False)``; the result is
    clamped to [0,1] and is a new float32 tensor.
    """
    if x.ndim not in (3, 4):
        raise ParameterError(f"expected images (N,C,H,W) or (C,H,W), got shape {tuple(x.shape)}")
    batch = x.unsqueeze(0) if x.ndim == 3 else x
    out = F.interpolate(batch.float(), size=(32, 32), mode="bilinear", align_corners=False).clamp_(0.0, 1.0)
    return out.squeeze(0) if x.ndim == 3 else out
