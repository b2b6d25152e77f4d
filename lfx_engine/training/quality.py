"""Quality floors of the trained VAEs, measured and recorded in the manifest (``lfx zoo quality``).

The measurement is :func:`lfx_engine.metrics.vae_quality.vae_quality` on the
first ``n_test`` test images against the mean of the first 10,000 training
images; the manifest keeps it as ``quality`` so the app and ``zoo list`` can
flag a collapsed model without recomputing, and the shipped-zoo tests check the
record against a fresh measurement.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor, nn

from lfx_engine.training.zoo import VAE_TASKS, PathLike, manifest_path, update_manifest_entries

MEAN_IMAGE_N = 10_000


def train_mean_image(dataset: str, resize32: bool) -> Tensor:
    """Mean of the first :data:`MEAN_IMAGE_N` training images as the VAE sees them (the floor's trivial predictor)."""
    from lfx_engine.data import load_split, resize_to_32

    x = load_split(dataset, "train").x[:MEAN_IMAGE_N].float()
    return (resize_to_32(x) if resize32 else x).mean(0)


def measure(model: nn.Module, x: Tensor, mean_image: Tensor, device: torch.device | str = "cpu") -> dict[str, Any]:
    """The quality of ``model`` on inputs ``x`` as one plain record (the manifest's and disvae's form)."""
    from lfx_engine.metrics.vae_quality import vae_quality

    q = vae_quality(model, x, mean_image=mean_image, device=device)
    return {"verdict": q.verdict(), "active_units": q.active_units, "latent_dim": q.latent_dim,
            "unit_variance": q.unit_variance, "rec_ratio": round(q.rec_ratio, 4), "kl": round(q.kl, 4),
            "n_test": q.n, "mean_image_n": MEAN_IMAGE_N, "problems": q.problems}


def measure_quality(record: dict[str, Any], root: PathLike, n_test: int = 1000) -> dict[str, Any]:
    """The quality of one trained VAE record (loaded from ``root``), as stored in the manifest."""
    from lfx_engine.data import load_split, resize_to_32
    from lfx_engine.training.zoo import load_entry

    resize32 = record.get("arch") == "vae_mnist32"
    test = load_split(record["dataset"], "test").x[:n_test].float()
    return measure(load_entry(record["name"], root), resize_to_32(test) if resize32 else test,
                   train_mean_image(record["dataset"], resize32))


def measure_zoo_quality(root: Optional[PathLike] = None, *, dataset: Optional[str] = None, n_test: int = 1000,
                        write: bool = False) -> list[tuple[str, dict[str, Any]]]:
    """``[(name, quality), ...]`` for every trained VAE in ``root``; ``write`` records them in its manifest."""
    from lfx_engine.training.manifest import valid_records

    base = manifest_path(root).parent
    records, _ = valid_records(base)
    rows = []
    for name, rec in sorted(records.items()):
        if rec.get("task") not in VAE_TASKS or (dataset is not None and rec.get("dataset") != dataset):
            continue
        rows.append((name, measure_quality(rec, base, n_test)))
    if write and rows:
        update_manifest_entries([{**records[name], "quality": q} for name, q in rows], base)
    return rows
