"""Latent-space example importance: encoding helper, DKNN and cosine nearest neighbours.

Both scores compare representations ``h = f(x)`` only; they return full
``(n_test, n_train)`` matrices (every training example is ranked, "k" enters
only later, through the similarity-rate top-n).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._common import Progress, check_2d, check_positive, eval_on, report, resolve_device


def encode(
    encoder: nn.Module,
    x: torch.Tensor,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    progress: Progress = None,
) -> torch.Tensor:
    """Latents ``encoder(x)`` as a float32 CPU tensor ``(N, d)``, in eval mode and inference mode.

    The encoder's train/eval flags and device are restored afterwards.
    """
    check_positive(batch_size=batch_size)
    dev = resolve_device(device, encoder)
    chunks = []
    total = len(x)
    with eval_on(encoder, dev), torch.inference_mode():
        for start in range(0, total, batch_size):
            h = encoder(x[start : start + batch_size].to(dev))
            chunks.append(h.reshape(len(h), -1).float().cpu())
            report(progress, min(start + batch_size, total), total)
    if not chunks:
        return torch.empty(0, 0)
    return torch.cat(chunks)


def _row_blocks(n_rows: int, n_cols: int, dim: int, batch_size: int | None) -> int:
    """Rows per block so that a block's (rows, n_cols, dim) work stays near 32M elements."""
    if batch_size is not None:
        return batch_size
    return max(1, min(n_rows, 32_000_000 // max(1, n_cols * dim)))


def dknn_scores(
    h_test: torch.Tensor,
    h_train: torch.Tensor,
    eps: float = 1e-8,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    progress: Progress = None,
) -> torch.Tensor:
    """DKNN scores ``1 / (‖h_test − h_train‖² + eps)`` for all pairs, float32 ``(n_test, n_train)``.

    Distances are computed exactly (no matrix-product shortcut), so an exact
    duplicate gets distance 0 and the top score ``1/eps``.
    """
    check_2d("h_test", h_test)
    check_2d("h_train", h_train)
    check_positive(eps=eps, batch_size=batch_size)
    dev = resolve_device(device)
    train = h_train.to(dev, torch.float32)
    rows = _row_blocks(len(h_test), len(h_train), h_train.shape[1], batch_size)
    out = torch.empty(len(h_test), len(h_train), dtype=torch.float32)
    with torch.inference_mode():
        for start in range(0, len(h_test), rows):
            block = h_test[start : start + rows].to(dev, torch.float32)
            dist = torch.cdist(block, train, compute_mode="donot_use_mm_for_euclid_dist")
            out[start : start + rows] = dist.square_().add_(eps).reciprocal_().cpu()  # in place: no temporaries
            report(progress, min(start + rows, len(h_test)), len(h_test))
    return out


def cosine_scores(
    h_test: torch.Tensor,
    h_train: torch.Tensor,
    batch_size: int | None = None,
    device: torch.device | str | None = None,
    progress: Progress = None,
) -> torch.Tensor:
    """Cosine similarity of L2-normalised latents, float32 ``(n_test, n_train)``."""
    check_2d("h_test", h_test)
    check_2d("h_train", h_train)
    check_positive(batch_size=batch_size)
    dev = resolve_device(device)
    train = F.normalize(h_train.to(dev, torch.float32), dim=1)
    rows = _row_blocks(len(h_test), len(h_train), 1, batch_size)
    out = torch.empty(len(h_test), len(h_train), dtype=torch.float32)
    with torch.inference_mode():
        for start in range(0, len(h_test), rows):
            block = F.normalize(h_test[start : start + rows].to(dev, torch.float32), dim=1)
            out[start : start + rows] = (block @ train.T).cpu()
            report(progress, min(start + rows, len(h_test)), len(h_test))
    return out
