"""SimplEx: explain a test latent as a convex combination of training latents.

For each test row we learn pre-weights ``w`` (from zeros) so that
``softmax(w) @ H_train ≈ h_test``, minimising the squared error with Adam. The
rows are independent (the loss is a sum over rows and Adam acts elementwise),
so the batch size changes only speed and memory, never the result.

The earlier code used lr 3e-4 (or 1e-3) for 1000 steps, where the weights stay
close to uniform; the defaults here (lr 0.1, 1000 steps) converge, and the
residual ``‖h_test − ŵ H_train‖`` is returned so convergence can be checked.
"""
from __future__ import annotations

import torch

from ..errors import ParameterError
from ._common import Progress, check_2d, check_positive, report, resolve_device


def simplex_scores(
    h_test: torch.Tensor,
    h_train: torch.Tensor,
    steps: int = 1000,
    lr: float = 0.1,
    batch_size: int = 500,
    k_nearest: int | None = None,
    device: torch.device | str | None = None,
    progress: Progress = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SimplEx weights ``(n_test, n_train)`` (rows ≥ 0, summing to 1) and residual norms ``(n_test,)``.

    ``k_nearest`` restricts each test row to its k nearest training latents
    (Euclidean); the other weights are exactly 0. The fit is deterministic
    (pre-weights start at zero), so no seed is needed.
    """
    check_2d("h_test", h_test)
    check_2d("h_train", h_train)
    check_positive(steps=steps, lr=lr, batch_size=batch_size, k_nearest=k_nearest)
    if h_test.shape[1] != h_train.shape[1]:
        raise ParameterError(
            f"latent sizes differ: h_test has {h_test.shape[1]} columns, h_train {h_train.shape[1]}"
        )
    n_test, n_train = len(h_test), len(h_train)
    k = n_train if k_nearest is None else min(k_nearest, n_train)
    dev = resolve_device(device)
    train = h_train.to(dev, torch.float32)
    weights = torch.zeros(n_test, n_train, dtype=torch.float32)
    residuals = torch.empty(n_test, dtype=torch.float32)
    for start in range(0, n_test, batch_size):
        target = h_test[start : start + batch_size].to(dev, torch.float32)
        if k < n_train:
            dist = torch.cdist(target, train, compute_mode="donot_use_mm_for_euclid_dist")
            idx = dist.topk(k, dim=1, largest=False).indices  # (b, k)
            corpus = train[idx]  # (b, k, d)
        else:
            idx = None
            corpus = train
        w = _fit(target, corpus, steps, lr)
        with torch.no_grad():
            approx = _combine(w, corpus)
            residuals[start : start + len(target)] = (target - approx).norm(dim=1).cpu()
            block = w.cpu()
            if idx is not None:
                block = torch.zeros(len(target), n_train).scatter_(1, idx.cpu(), block)
            weights[start : start + len(target)] = block
        report(progress, min(start + batch_size, n_test), n_test)
    return weights, residuals


def _combine(w: torch.Tensor, corpus: torch.Tensor) -> torch.Tensor:
    """``w @ corpus`` for a shared corpus ``(k, d)`` or per-row corpora ``(b, k, d)``."""
    if corpus.dim() == 2:
        return w @ corpus
    return torch.einsum("bk,bkd->bd", w, corpus)


def _fit(target: torch.Tensor, corpus: torch.Tensor, steps: int, lr: float) -> torch.Tensor:
    """Softmax weights ``(b, k)`` minimising Σ_rows ‖softmax(W) · corpus − target‖²."""
    k = corpus.shape[-2]
    pre = torch.zeros(len(target), k, device=target.device, requires_grad=True)
    optimizer = torch.optim.Adam([pre], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            approx = _combine(torch.softmax(pre, dim=1), corpus)
            loss = (approx - target).square().sum()
            loss.backward()
            optimizer.step()
    return torch.softmax(pre.detach(), dim=1)
