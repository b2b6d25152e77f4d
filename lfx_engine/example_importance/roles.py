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


def example_roles(method: str, scores: np.ndarray) -> np.ndarray:
    """One role per score: ``proponent``/``opponent``/``neutral`` (signed methods), ``used``/``unused``
    (SimplEx), ``near``/``far`` (latent similarities: above or below the median score)."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size == 0:
        return np.array([], dtype=object)
    if method in SIGNED_METHODS:
        tol = NEUTRAL_SHARE * float(np.abs(s).max())
        return np.where(s > tol, "proponent", np.where(s < -tol, "opponent", "neutral")).astype(object)
    if method == "simplex":
        return np.where(s >= SIMPLEX_UNUSED * float(s.max()), "used", "unused").astype(object)
    return np.where(s >= np.median(s), "near", "far").astype(object)


def bottom_meaning(method: str) -> str:
    """What the least important examples of ``method`` are (for a caption)."""
    return BOTTOM_MEANING.get(method, "the lowest scores")
