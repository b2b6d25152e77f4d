"""Disentanglement metrics of per-unit saliency maps ``S ∈ R^{N×d×H×W}`` (METHOD.md §4),
computed in streaming form so that ``N×d×H×W`` is never held in float64.

* **pearson** – pooled over all pixels of all images: ``d×d`` correlation of the
  units (reshape ``d × N·H·W``), mean of the off-diagonal entries. Running
  float64 sums of ``x`` and ``x xᵀ`` (shifted by the first batch's unit means
  for numerical stability).
* **spearman** – the same on ranks. Exact ranks cannot be streamed, so it is
  computed on a deterministic subsample of at most ``spearman_max_pixels``
  (image, pixel) columns: each column gets a hash key of its global position
  and the smallest keys are kept (a bottom-k sketch). The subsample depends on
  the image order only, not on the batching; below the cap it is exact.
* **cosine** – per image, cosine between two units' flattened maps; averaged over
  images (pairs with an all-zero map in an image are skipped), then the
  off-diagonal mean.
* **entropy** – over pixels with positive total saliency, ``p = S_·/Σ_j S_j`` and
  ``−Σ_j p_j ln p_j`` (max ``ln d``), averaged over those pixels.
* **salient_units** – over the same pixels, mean number of units with ``p_j > 1/d``
  (a relative margin of 1e-12 absorbs round-off). The reproduction study called
  this "active units"; it is a share of saliency, not the latent-variance count
  of active units (Burda et al., 2016) in :mod:`lfx_engine.metrics.vae_quality`.

Off-diagonal means skip NaN pairs (a unit whose map is constant has no
correlation); with ``d = 1`` they are NaN. ``S`` is expected non-negative.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy import stats

from ..errors import ParameterError

__all__ = ["METRICS", "DisentanglementAccumulator", "disentanglement_metrics", "off_diagonal_mean"]

METRICS = ("pearson", "spearman", "cosine", "entropy", "salient_units")

#: Relative margin on the active-unit threshold 1/d, so round-off in ``S_j / Σ S``
#: cannot make exactly equal shares count as active.
_ACTIVE_RTOL = 1e-12

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _hash64(idx: np.ndarray, seed: int) -> np.ndarray:
    """splitmix64 of the indices: a fixed pseudo-random key per global position."""
    with np.errstate(over="ignore"):
        z = idx.astype(np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF)
        z = (z + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return z ^ (z >> np.uint64(31))


def off_diagonal_mean(mat: np.ndarray) -> float:
    """Mean of the off-diagonal entries ``Σ_{j≠k} m_jk / (d(d−1))``, NaN entries skipped."""
    mat = np.asarray(mat, dtype=np.float64)
    d = mat.shape[0]
    if d < 2:
        return float("nan")
    vals = mat[~np.eye(d, dtype=bool)]
    vals = vals[np.isfinite(vals)]
    return float(vals.mean()) if vals.size else float("nan")


class DisentanglementAccumulator:
    """Stream batches of ``S`` (``(n,d,H,W)`` or ``(n,d,T)``) and compute the five metrics."""

    def __init__(self, spearman_max_pixels: int = 200_000, seed: int = 0) -> None:
        if spearman_max_pixels < 2:
            raise ParameterError("spearman_max_pixels must be at least 2")
        self.spearman_max_pixels = int(spearman_max_pixels)
        self.seed = int(seed)
        self.d: int | None = None
        self.pixels: int | None = None
        self.n_images = 0
        self._shift: torch.Tensor | None = None
        self._count = 0
        self._sum: torch.Tensor | None = None  # (d,) float64
        self._sumsq: torch.Tensor | None = None  # (d,d) float64
        self._cos_sum: torch.Tensor | None = None
        self._cos_cnt: torch.Tensor | None = None
        self._ent_sum = 0.0
        self._act_sum = 0.0
        self._ent_cnt = 0
        self._keys = np.empty(0, dtype=np.uint64)
        self._vals = np.empty((0, 0), dtype=np.float64)

    def update(self, s_batch: torch.Tensor | np.ndarray) -> None:
        """Add a batch of per-unit maps; only this batch is upcast to float64."""
        s = torch.as_tensor(s_batch).detach()
        if s.dim() < 3:
            raise ParameterError(f"S must be (n, d, H, W) or (n, d, T), got {tuple(s.shape)}")
        n, d = s.shape[:2]
        x = s.reshape(n, d, -1).to(torch.float64)
        p = x.shape[2]
        if self.d is None:
            self.d, self.pixels = d, p
            self._shift = x.mean(dim=(0, 2))
            self._sum = torch.zeros(d, dtype=torch.float64)
            self._sumsq = torch.zeros(d, d, dtype=torch.float64)
            self._cos_sum = torch.zeros(d, d, dtype=torch.float64)
            self._cos_cnt = torch.zeros(d, d, dtype=torch.float64)
            self._vals = np.empty((0, d), dtype=np.float64)
        elif (d, p) != (self.d, self.pixels):
            raise ParameterError(f"batch has d={d}, {p} pixels; earlier batches had d={self.d}, {self.pixels}")
        if n == 0:
            return
        # set together with self.d by the first batch
        assert self._shift is not None and self._sum is not None and self._sumsq is not None
        assert self._cos_sum is not None and self._cos_cnt is not None
        # pooled Pearson: shifted running sums over all (image, pixel) columns
        cols = (x - self._shift.to(x.device)[None, :, None]).permute(1, 0, 2).reshape(d, -1)
        self._sum += cols.sum(dim=1).cpu()
        self._sumsq += (cols @ cols.T).cpu()
        self._count += n * p
        del cols
        # per-image cosine
        gram = x @ x.transpose(1, 2)
        norms = torch.sqrt(torch.diagonal(gram, dim1=1, dim2=2))
        cos = gram / (norms[:, :, None] * norms[:, None, :])
        ok = torch.isfinite(cos)
        self._cos_sum += torch.where(ok, cos, torch.zeros_like(cos)).sum(dim=0).cpu()
        self._cos_cnt += ok.sum(dim=0).to(torch.float64).cpu()
        # entropy and active units over pixels with positive total saliency
        tot = x.sum(dim=1)  # (n, p)
        pos = tot > 0
        if bool(pos.any()):
            share = x.permute(0, 2, 1)[pos] / tot[pos][:, None]  # (n_pos, d)
            plogp = torch.where(share > 0, share * torch.log(share.clamp_min(1e-300)), torch.zeros_like(share))
            self._ent_sum += float((-plogp.sum(dim=1)).sum())
            self._act_sum += float((share > (1.0 / d) * (1.0 + _ACTIVE_RTOL)).sum())
            self._ent_cnt += int(pos.sum())
        # Spearman sketch: keep the columns with the smallest position hashes
        gidx = np.arange(self.n_images * p, (self.n_images + n) * p, dtype=np.int64)
        keys = _hash64(gidx, self.seed)
        cap = self.spearman_max_pixels
        if self._keys.size >= cap:
            thresh = self._keys.max()
            cand = np.nonzero(keys < thresh)[0]
        else:
            cand = np.arange(keys.size)
        if cand.size:
            if cand.size > cap:
                cand = cand[np.argpartition(keys[cand], cap - 1)[:cap]]
            sel = torch.as_tensor(cand, device=x.device)
            vals = x.permute(0, 2, 1).reshape(-1, d)[sel].cpu().numpy()
            all_keys = np.concatenate([self._keys, keys[cand]])
            all_vals = np.concatenate([self._vals, vals])
            if all_keys.size > cap:
                keep = np.argpartition(all_keys, cap - 1)[:cap]
                all_keys, all_vals = all_keys[keep], all_vals[keep]
            self._keys, self._vals = all_keys, all_vals
        self.n_images += n

    @property
    def spearman_exact(self) -> bool:
        """True while every (image, pixel) column is in the Spearman sample."""
        return self.n_images * (self.pixels or 0) <= self.spearman_max_pixels

    def pearson_matrix(self) -> np.ndarray:
        """Pooled ``d×d`` Pearson matrix of the units."""
        self._require()
        assert self._sum is not None and self._sumsq is not None  # _require: a batch was added
        mean = self._sum / self._count
        cov = self._sumsq / self._count - torch.outer(mean, mean)
        sd = torch.sqrt(torch.clamp(torch.diagonal(cov), min=0))
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = (cov / torch.outer(sd, sd)).numpy()
        return np.clip(corr, -1.0, 1.0)

    def spearman_matrix(self) -> np.ndarray:
        """``d×d`` Spearman matrix on the (sub)sample of columns."""
        self._require()
        order = np.argsort(self._keys, kind="stable")
        ranks = stats.rankdata(self._vals[order], axis=0, method="average")
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            corr = np.corrcoef(ranks, rowvar=False)
        return np.atleast_2d(corr)

    def cosine_matrix(self) -> np.ndarray:
        """``d×d`` per-image cosine averaged over images."""
        self._require()
        assert self._cos_sum is not None and self._cos_cnt is not None  # _require: a batch was added
        with np.errstate(invalid="ignore", divide="ignore"):
            return (self._cos_sum / self._cos_cnt).numpy()

    def compute(self) -> dict[str, float]:
        """``{pearson, spearman, cosine, entropy, salient_units}`` as plain floats."""
        self._require()
        ent = self._ent_sum / self._ent_cnt if self._ent_cnt else float("nan")
        act = self._act_sum / self._ent_cnt if self._ent_cnt else float("nan")
        return {
            "pearson": off_diagonal_mean(self.pearson_matrix()),
            "spearman": off_diagonal_mean(self.spearman_matrix()),
            "cosine": off_diagonal_mean(self.cosine_matrix()),
            "entropy": float(ent),
            "salient_units": float(act),
        }

    def _require(self) -> None:
        if self.d is None or self._count == 0:
            raise ParameterError("no saliency maps were added; call update() first")


def disentanglement_metrics(
    s: torch.Tensor | np.ndarray, batch_size: int = 256, **kwargs: int
) -> dict[str, float]:
    """One-shot convenience: stream ``s`` through a :class:`DisentanglementAccumulator`."""
    acc = DisentanglementAccumulator(**kwargs)
    for a in range(0, len(s), int(batch_size)):
        acc.update(s[a:a + int(batch_size)])
    return acc.compute()
