"""The app's glossary: one short definition per term, shown on the Glossary page and reused by pages' help texts.

Engine-free data (no streamlit import), so a help text and the Glossary page
always say the same thing: a page writes ``help=glossary.define("LiSSA damping")``
instead of its own copy of the explanation. Definitions follow what the engine
computes (``lfx_engine.feature_importance``, ``.example_importance``, ``.metrics``).
"""
from __future__ import annotations

from typing import NamedTuple


class Term(NamedTuple):
    """One glossary entry: its section, a short definition and where in the app it appears."""

    section: str
    definition: str
    where: str


FEATURES, EXAMPLES, PRETEXT, VAES, OTHER = ("Feature importance", "Example importance", "Pretext tasks",
                                            "VAEs and disentanglement", "Feature visualisation and models")
SECTIONS = (FEATURES, EXAMPLES, PRETEXT, VAES, OTHER)

GLOSSARY: dict[str, Term] = {
    # ------------------------------------------------------------------ feature importance
    "Label-free feature importance": Term(
        FEATURES,
        "An encoder f outputs a latent vector, not a class score. To explain input x, an ordinary attribution method "
        "explains the scalar g_x(x̃) = ⟨f(x), f(x̃)⟩ at x̃ = x instead, so every pixel or time step gets an "
        "importance score without a label (Crabbé & van der Schaar 2022).",
        "Saliency, Masking shift, Disentanglement and Encoder vs full model pages."),
    "Saliency": Term(
        FEATURES,
        "The absolute gradient |∂g_x/∂x̃| at x: how strongly a tiny change of each feature moves the representation. "
        "Cheap, but not linear in the explained function (because of the absolute value).",
        "Method pickers of the Saliency and Masking shift pages."),
    "Integrated Gradients": Term(
        FEATURES,
        "The gradient of g_x averaged along the straight path from the baseline x̄ to x (50 steps), times (x − x̄); "
        "the scores add up to g_x(x) − g_x(x̄) (Sundararajan et al. 2017).",
        "Method pickers of the Saliency and Masking shift pages; Encoder vs full model."),
    "GradientShap": Term(
        FEATURES,
        "Gradients at random points between the baseline and x, times (x − x̄), averaged over 5 draws: a Monte-Carlo "
        "estimate of Integrated Gradients and an approximation of SHAP values (Lundberg & Lee 2017).",
        "Method pickers of the Saliency and Masking shift pages; Pretext correlations; Disentanglement."),
    "Input × Gradient": Term(
        FEATURES, "The input times the gradient of g_x, feature by feature (no baseline).",
        "Method pickers of the Saliency and Masking shift pages."),
    "DeepLift": Term(
        FEATURES,
        "Propagates the difference between x and the baseline back through the network with modified chain rules "
        "(captum's Rescale rule) instead of plain gradients.",
        "Method pickers of the Saliency and Masking shift pages."),
    "SmoothGrad": Term(
        FEATURES, "Saliency averaged over 10 noisy copies of the input (noise σ = 0.15), which smooths the map.",
        "Method pickers of the Saliency and Masking shift pages."),
    "Occlusion": Term(
        FEATURES,
        "Replaces a sliding window (4×4 pixels, or 7 time steps) by the baseline and records how much g_x changes: "
        "no gradients needed.",
        "Method pickers of the Saliency and Masking shift pages."),
    "Baseline": Term(
        FEATURES,
        "The reference input x̄ that stands for 'feature absent', used by Integrated Gradients, GradientShap, DeepLift, "
        "Occlusion and the masking test: zeros (a black image) for MNIST, CIFAR-10 and dSprites, the mean of the "
        "normal training beats for ECG5000; a project file can choose zeros, the training mean, a blurred copy of "
        "each input, or a constant.",
        "Saliency and Masking shift pages."),
    "Masking shift": Term(
        FEATURES,
        "Each input's most important features (by the method's scores) are replaced by the baseline, a growing share "
        "at a time, and the representation shift ‖f(x) − f(x̃)‖² is measured. A faithful attribution moves the "
        "representation sooner than the reference controls.",
        "Masking shift page."),
    "Random (control)": Term(
        FEATURES, "Features masked in a random order (independent N(0, 1) scores): the paper's reference curve.",
        "Masking shift page, reference controls."),
    "Random among informative features": Term(
        FEATURES,
        "A random order among the features that differ from the baseline, then the rest, so every masking step "
        "really changes the input (on MNIST most pixels are black, and masking black with black changes nothing).",
        "Masking shift page, reference controls."),
    "Model-free |x − baseline| ranking": Term(
        FEATURES,
        "Features ranked by how far the input is from the baseline there (Σ over channels of |x − x̄|), largest "
        "first, without looking at the model. A method that does not beat it shows no use of the model.",
        "Masking shift page, reference controls."),
    "Random re-initialised encoder": Term(
        FEATURES,
        "The same attribution method on a copy of the encoder with fresh random weights (the model-randomisation "
        "sanity check of Adebayo et al. 2018). If its curve matches the trained encoder's, the map reflects the "
        "input more than what the model learned.",
        "Masking shift page, reference controls."),
    "Area between curves": Term(
        FEATURES,
        "The representation shift integrated over the masked share (0 to 1), the method's area minus a control's, "
        "averaged over examples with a paired 95% interval: 'above' or 'below' when the interval excludes 0, "
        "otherwise 'not resolved'.",
        "Masking shift page, under the curves."),
    # ------------------------------------------------------------------ example importance
    "Label-free example importance": Term(
        EXAMPLES,
        "A score for every (test input, training example) pair, larger = more important: either from the latent "
        "representations (DKNN, cosine, SimplEx) or from gradients of the encoder's pretext loss (TracIn, "
        "Influence Functions).",
        "Top examples page."),
    "Training subset": Term(
        EXAMPLES,
        "Example importance ranks a class-balanced subset of the training split (and scores a test subset of the "
        "same size); the paper uses 1000 examples.",
        "Top examples page (subset size) and Pretext correlations."),
    "DKNN": Term(
        EXAMPLES,
        "Deep k-nearest neighbours in latent space: score 1 / (‖f(x_test) − f(x_train)‖² + ε), so the training "
        "examples whose representations lie closest rank highest.",
        "Top examples page; Pretext correlations (example importance)."),
    "Cosine similarity": Term(
        EXAMPLES, "The cosine of the angle between the test and training latent vectors (direction, not length).",
        "Top examples page (Cosine NN)."),
    "SimplEx": Term(
        EXAMPLES,
        "Writes the test latent as a convex combination of training latents (softmax weights fitted with Adam); the "
        "weights, ≥ 0 and summing to 1, are the scores, and the residual tells how well the fit worked "
        "(Crabbé et al. 2021).",
        "Top examples page."),
    "SimplEx fit": Term(
        EXAMPLES, "Adam steps and learning rate of the SimplEx weight fit (defaults 1000 steps, learning rate 0.1).",
        "Top examples page, SimplEx settings."),
    "TracIn": Term(
        EXAMPLES,
        "TracInCP: over the checkpoints saved during training, the sum of learning rate × the dot product of the "
        "pretext-loss gradients (in the encoder's weights) of the test and the training example (Pruthi et al. "
        "2020). Needs a model trained with checkpoints.",
        "Top examples page."),
    "Influence Functions": Term(
        EXAMPLES,
        "How up-weighting a training example would change the test example's pretext loss: "
        "∇L(x_test) · H⁻¹ ∇L(x_train), H the Hessian of the training loss in the encoder's weights, with H⁻¹ ∇L "
        "estimated by LiSSA (Koh & Liang 2017).",
        "Top examples page."),
    "LiSSA": Term(
        EXAMPLES,
        "A stochastic estimate of an inverse-Hessian-vector product: v ← g + (1 − damping)·v − H_t v / scale, one "
        "fresh minibatch Hessian H_t per iteration; it converges to scale·(H + damping·scale·I)⁻¹ g "
        "(Agarwal et al. 2017).",
        "Top examples page, Influence Functions settings."),
    "LiSSA damping": Term(
        EXAMPLES, "Added to the Hessian's diagonal so the recursion converges (default 1e-3).",
        "Top examples page, Influence Functions settings."),
    "LiSSA scale": Term(
        EXAMPLES, "Divides the Hessian so its largest eigenvalues stay below 1 and the recursion is stable (default 1000).",
        "Top examples page, Influence Functions settings."),
    "LiSSA recursion depth": Term(
        EXAMPLES, "Number of LiSSA iterations, one minibatch each (default 100); the cost grows linearly with it.",
        "Top examples page, Influence Functions settings."),
    "Hessian minibatch": Term(
        EXAMPLES, "Training examples per minibatch Hessian of the LiSSA recursion (default 300 for images, 20 for ECG).",
        "Top examples page, Influence Functions settings."),
    "Gauss–Newton Hessian": Term(
        EXAMPLES,
        "'exact' takes Hessian-vector products by double backpropagation; 'gauss_newton' linearises the encoder "
        "around its trained weights and keeps the decoder's and the loss's exact curvature, which takes about a "
        "minute instead of an hour for a 1000 × 1000 MNIST subset (scores within about 0.4%); 'auto' uses "
        "Gauss–Newton for a whole subset when it fits in the memory budget, exact otherwise.",
        "Top examples page, Influence Functions settings (hessian)."),
    "Memory budget": Term(
        EXAMPLES,
        "Memory for the per-example gradients held at once (default 2048 MB); below what they need, they are "
        "computed in blocks: the same scores, more time.",
        "Top examples page, TracIn and Influence Functions settings."),
    "Gradient dot / cosine baselines": Term(
        EXAMPLES,
        "The dot product of the two pretext-loss gradients at the final weights (TracIn with one checkpoint, or "
        "Influence Functions with H = I) and its cosine, which stops large-gradient examples from dominating: the "
        "reference points TracIn and Influence Functions are read against.",
        "The consistency_examples experiment (python -m lfx_engine reproduce consistency_examples)."),
    "Most / least important": Term(
        EXAMPLES, "The training examples with the highest (top k) and the lowest (bottom k) scores for a test input.",
        "Top examples page, the two galleries of each method."),
    "Opponents": Term(
        EXAMPLES,
        "Training examples with negative TracIn or influence scores: training on them would raise the test "
        "example's loss (the positive ones are proponents). Latent-space scores have no such sign.",
        "Top examples page, the bottom of the TracIn and Influence Functions rankings."),
    "Similarity rate": Term(
        EXAMPLES,
        "The share of training examples with the test input's label among its most (or least) important n%, "
        "averaged over test inputs, with a 95% interval.",
        "Top examples page, Similarity rates tab."),
    "Class prior": Term(
        EXAMPLES,
        "The same share over all training examples (both rates reach it at 100%). A ranking that follows the "
        "class puts the most-important rate above it and the least-important rate below it.",
        "Top examples page, Similarity rates tab."),
    # ------------------------------------------------------------------ pretext tasks
    "Pretext task": Term(
        PRETEXT,
        "The task an encoder is trained on. Reconstruction: an autoencoder reproduces its input. Denoising: it "
        "reconstructs the clean input from a copy with Gaussian noise. Inpainting: from a copy with randomly "
        "zeroed entries. Classification: a classifier trained with labels, whose encoder is its feature extractor.",
        "Pretext correlations page; the model names (reconstruction / denoising / inpainting AE, classifier)."),
    "Pearson / Spearman correlation": Term(
        PRETEXT,
        "How alike two encoders' explanations are: Pearson on the values, Spearman on their ranks, pooled over all "
        "test inputs (|GradientShap| maps, or DKNN scores); the tables show mean ± std over training runs (the "
        "range, lowest–highest, below 3 runs).",
        "Pretext correlations page (and Encoder vs full model: per-image Pearson)."),
    "Noise ceiling": Term(
        PRETEXT,
        "The correlation between the same task's explanations from different training runs (seeds): how alike two "
        "explanations can be. A cross-task correlation only shows different explanations when it is below it.",
        "Pretext correlations page."),
    # ------------------------------------------------------------------ VAEs
    "VAE": Term(
        VAES,
        "A variational autoencoder: the encoder gives the mean μ and variance of a Gaussian over the latent code, "
        "trained to reconstruct the input while keeping that Gaussian close to N(0, I) (the KL term). The app "
        "explains the posterior mean μ.",
        "Disentanglement page; β-VAE and β-TC-VAE models."),
    "β-VAE": Term(
        VAES, "A VAE whose KL term is weighted by β (β = 1 is the plain VAE; larger β pushes towards independent, "
              "disentangled units) (Higgins et al. 2017).",
        "Disentanglement page; models named β-VAE β=…"),
    "β-TC-VAE": Term(
        VAES, "A VAE that weights by β only the total-correlation part of the KL term, the dependence between "
              "units (Chen et al. 2018).",
        "Disentanglement page; models named β-TC-VAE β=…"),
    "Per-unit saliency": Term(
        VAES, "S_j = |μ_j · GradientShap_j|: which pixels latent unit j depends on, weighted by the unit's value.",
        "Disentanglement page, the unit maps."),
    "Active units": Term(
        VAES, "Unit j is active when the variance over inputs of its posterior mean, Var(μ_j), exceeds 0.01.",
        "Disentanglement page, Model quality table."),
    "Collapse": Term(
        VAES,
        "A VAE whose posterior means barely vary (fewer than 2 active units; 'dead' with none and a KL near 0): its "
        "decoder draws an average image and its unit maps are noise. 'undertrained': units are active but the "
        "reconstruction is not clearly better than the mean training image.",
        "Disentanglement page, Model quality table (verdict)."),
    "Disentanglement metrics": Term(
        VAES,
        "Pearson: correlation between two units' maps pooled over all pixels, mean over unit pairs. Spearman: the "
        "same on ranks. Cosine: per image between two units' maps, averaged. Entropy: of each pixel's share of "
        "saliency across units (at most ln d). Salient units: mean number of units above an equal share 1/d "
        "(the reproduction study's 'active units'). Lower Pearson/cosine = more distinct units.",
        "Disentanglement page, metrics vs β."),
    "Null model": Term(
        VAES,
        "Randomly initialised copies of the same architecture, measured the same way: a metric value close to "
        "theirs says nothing about what training achieved.",
        "Disentanglement page, metric cards and comparison table."),
    "Latent traversal": Term(
        VAES, "One unit varied around the sample's μ_j while the others stay fixed, each code decoded to an image.",
        "Disentanglement page, bottom."),
    # ------------------------------------------------------------------ other
    "Lucent feature visualisation": Term(
        OTHER,
        "An input optimised from noise (with Lucent's regularised image parameterisation) to maximise one latent "
        "unit or one convolution channel of the encoder (Olah et al. 2017).",
        "Feature visualisation (Lucent) page."),
    "Render steps": Term(
        OTHER, "Optimisation steps of one render; the study used 1000, 256 already converge for these small encoders.",
        "Feature visualisation (Lucent) page."),
    "Encoder vs full model": Term(
        OTHER,
        "Label-free attributions of a classifier's encoder alone against those of the whole classifier "
        "(⟨logits(x), logits(x̃)⟩), compared by a per-image Pearson correlation of |attribution| over the pixels where the input is "
        "non-zero.",
        "Encoder vs full model page."),
    "Reproduction study": Term(
        OTHER,
        "Papp, Wagenbach, Jans de Vries & Mather (MLRC 2022) re-ran the paper's experiments; their published values "
        "are shown next to ours where they exist.",
        "Disentanglement, Pretext correlations and Encoder vs full model pages."),
}


def markdown(text: str) -> str:
    """``text`` safe for Streamlit markdown (help tooltips included): underscores as in g_x are not italics."""
    return text.replace("_", "\\_")


def define(term: str) -> str:
    """The short definition of ``term`` as markdown for ``help=`` (KeyError for an unknown term)."""
    return markdown(GLOSSARY[term].definition)


def search(query: str) -> dict[str, Term]:
    """The entries whose term, definition or 'where' contains ``query`` (case-insensitive); all for a blank query."""
    needle = query.strip().casefold()
    if not needle:
        return dict(GLOSSARY)
    return {name: t for name, t in GLOSSARY.items()
            if needle in name.casefold() or needle in t.definition.casefold() or needle in t.where.casefold()}
