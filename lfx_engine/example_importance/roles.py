"""What a training example's score means for each example-importance method.

The bottom of a ranking is read differently per method: DKNN's and cosine's least important
examples are the farthest or most opposite in latent space; SimplEx's are examples the
decomposition does not use (weight ≈ 0, so their order among themselves is arbitrary); TracIn's,
influence functions' and the gradient baselines' are *opponents* (a negative score: training on
them raises the test input's loss). Views label the rows with these roles instead of calling all
of them "least important".
"""
from __future__ import annotations

import numpy as np

#: Share of the largest SimplEx weight below which an example counts as unused by the decomposition.
SIMPLEX_UNUSED = 1e-3
#: Scores within this share of the largest |score| count as neutral for signed (gradient) methods.
NEUTRAL_SHARE = 1e-6

SIGNED_METHODS = ("tracin", "influence", "grad_dot", "grad_cos")

#: What the least important rows of each method are, in one sentence (shown under the bottom gallery).
BOTTOM_MEANING = {
    "dknn": "the farthest training examples in latent space (smallest 1 / distance²)",
    "cosine": "the training examples whose latents point most nearly the opposite way (lowest cosine)",
    "simplex": "examples the SimplEx decomposition does not use: their weight is ≈ 0, so their order "
               "among themselves is arbitrary",
    "tracin": "opponents: negative scores, training on them raised this input's loss",
    "influence": "opponents: negative influence, up-weighting them would raise this input's loss",
    "grad_dot": "opponents: loss gradients pointing against this input's",
    "grad_cos": "opponents: loss gradients pointing against this input's",
}


def role_codes(method: str, scores: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """The roles of :func:`example_roles` as small integer codes into the returned names (no string array: a full
    training split's roles are counted in microseconds)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    signed, simplex = method in SIGNED_METHODS, method == "simplex"
    names = ("proponent", "opponent", "neutral") if signed else ("used", "unused") if simplex else ("near", "far")
    if s.size == 0:
        codes = np.zeros(0)
    elif signed:
        tol = NEUTRAL_SHARE * float(np.abs(s).max())
        codes = np.where(s > tol, 0, np.where(s < -tol, 1, 2))
    elif simplex:
        codes = np.where(s >= SIMPLEX_UNUSED * float(s.max()), 0, 1)
    else:
        codes = np.where(s >= np.median(s), 0, 1)
    return codes.astype(np.int8), names


def example_roles(method: str, scores: np.ndarray) -> np.ndarray:
    """One role per score: ``proponent``/``opponent``/``neutral`` (signed methods), ``used``/``unused``
    (SimplEx), ``near``/``far`` (latent similarities: above or below the median score)."""
    codes, names = role_codes(method, scores)
    return np.array(names, dtype=object)[codes]


def role_counts(codes: np.ndarray, names: tuple[str, ...]) -> dict[str, int]:
    """How many scores have each role, from :func:`role_codes` (roles that occur only, by name)."""
    counts = np.bincount(codes, minlength=len(names))
    return {names[i]: int(counts[i]) for i in sorted(range(len(names)), key=names.__getitem__) if counts[i]}


def ranking_ends(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the ``k`` highest and the ``k`` lowest scores, each from high to low: exactly
    ``order[:k]`` and ``order[max(k, n - k):]`` of ``order = np.argsort(-scores, kind="stable")`` (ties by
    position), without sorting the whole row (one query over a full training split).
    """
    s = np.asarray(scores).ravel()
    n = len(s)
    k = max(0, min(k, n))
    if k == 0 or 4 * k >= n or np.isnan(s).any():
        order = np.argsort(-s, kind="stable")
        return order[:k], order[max(k, n - k):]
    neg = -s
    top, bottom = _k_smallest(neg, k, ties_last=False), _k_smallest(s, k, ties_last=True)
    return top[np.lexsort((top, neg[top]))], bottom[np.lexsort((bottom, neg[bottom]))]


def _k_smallest(values: np.ndarray, k: int, ties_last: bool) -> np.ndarray:
    """Positions of the ``k`` smallest values (unordered); ties at the k-th value taken by lowest position, or by
    highest with ``ties_last``."""
    kth = np.partition(values, k - 1)[k - 1]
    strict = np.flatnonzero(values < kth)
    ties = np.flatnonzero(values == kth)
    need = k - len(strict)
    return np.concatenate([strict, ties[len(ties) - need:] if ties_last else ties[:need]])


def bottom_meaning(method: str) -> str:
    """What the least important examples of ``method`` are (for a caption)."""
    return BOTTOM_MEANING.get(method, "the lowest scores")
