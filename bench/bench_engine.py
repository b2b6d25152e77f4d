#!/usr/bin/env python
"""Benchmark the engine's explainers against lfxai 0.1.1 on the same MNIST model and data.

    python bench/bench_engine.py            # full run (1000 x 1000 subsets), writes bench/RESULTS.md
    python bench/bench_engine.py --quick    # small sizes, a few minutes

One run: trains the METHOD §5 MNIST denoising autoencoder briefly (seeded,
TracIn checkpoints every epoch), takes the class-balanced train/test subsets of
METHOD §6, then times each method in both libraries and measures agreement.
lfxai's TracIn and Influence Functions are far too slow for the full size, so
they run on a stated subset and their full-size time is extrapolated (labelled
as such); agreement is computed on that overlapping subset. lfxai is a
bench-only requirement: ``pip install --no-deps -r bench/requirements.txt``.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
WORK = REPO / "bench" / "_work"

from lfx_engine.example_importance import (  # noqa: E402
    cosine_scores,
    dknn_scores,
    encode,
    influence_scores,
    simplex_scores,
    tracin_scores,
)


# --------------------------------------------------------------------------- configuration
@dataclass
class Sizes:
    n_train: int = 1000
    n_test: int = 1000
    n_features: int = 1000  # test images explained by IG / GradientShap
    fi_batch: int = 100
    train_samples: int = 10_000
    epochs: int = 3
    depth: int = 100  # LiSSA recursion depth
    minibatch: int = 300
    lfxai_tracin: tuple[int, int] = (50, 100)  # square subsets, fit a·n + b·n²
    lfxai_if_train: int = 5
    lfxai_if_test: int = 100
    if_train: int | None = None  # our IF's training columns (None: all); fewer → time extrapolated
    tracin_budgets_mb: tuple[float, ...] = (1.0, 2.0)  # max_memory_mb of the low-memory TracIn rows
    repeats: int = 3  # alternating runs of the short comparisons (feature importance, DKNN); best CPU time
    if_budget_mb: float = 32.0  # max_memory_mb of the low-memory exact IF rows


QUICK = Sizes(n_train=100, n_test=100, n_features=200, train_samples=3000, epochs=2, depth=10,
              lfxai_tracin=(20, 40), lfxai_if_train=4, lfxai_if_test=20)


# --------------------------------------------------------------------------- measurement helpers
def _heap_reader() -> tuple[Callable[[], int], str]:
    """Bytes currently allocated on the C heap (glibc mallinfo2), else the resident set size."""
    try:
        import ctypes

        class MallInfo2(ctypes.Structure):
            _fields_ = [(name, ctypes.c_size_t) for name in (
                "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                "keepcost")]

        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = MallInfo2

        def in_use() -> int:
            info = libc.mallinfo2()
            return int(info.uordblks + info.hblkhd)

        in_use()
        return in_use, "allocated C-heap bytes (glibc mallinfo2)"
    except (OSError, AttributeError):
        def rss() -> int:
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

        return rss, "resident set size"


_MEMORY, MEMORY_KIND = _heap_reader()


@dataclass
class Measure:
    seconds: float = 0.0  # process CPU time (user + system, all threads)
    wall: float = 0.0
    peak_mb: float = 0.0


def alternating(functions: list[Callable[[], Any]], repeats: int) -> tuple[list[Any], list[Measure]]:
    """Run the functions in turn ``repeats`` times; each one's output and best CPU time (largest peak).

    Short workloads on a shared machine vary by ±20 % from run to run; alternating the libraries and
    keeping each one's fastest run compares them under the same conditions (the usual ``timeit`` rule).
    """
    outputs: list[Any] = [None] * len(functions)
    runs: list[list[Measure]] = [[] for _ in functions]
    for _ in range(max(1, repeats)):
        for i, fn in enumerate(functions):
            with measured() as m:
                outputs[i] = fn()
            runs[i].append(m)
    best = [Measure(seconds=min(m.seconds for m in ms), wall=min(m.wall for m in ms),
                    peak_mb=max(m.peak_mb for m in ms)) for ms in runs]
    return outputs, best


@contextlib.contextmanager
def measured() -> Iterator[Measure]:
    """CPU time, wall time and peak memory increase over the start of the block (sampled every 5 ms).

    CPU time (``time.process_time``) is what the tables report: unlike wall time it does not grow when
    other jobs share the machine.
    """
    result = Measure()
    base = _MEMORY()
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _MEMORY())
            stop.wait(0.005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        yield result
    finally:
        result.seconds = time.process_time() - cpu_start
        result.wall = time.perf_counter() - start
        stop.set()
        thread.join()
        peak[0] = max(peak[0], _MEMORY())
        result.peak_mb = (peak[0] - base) / 2**20


def _ranks(a: torch.Tensor) -> torch.Tensor:
    """Row-wise ranks of a 2-D tensor, ties given their average rank."""
    from scipy.stats import rankdata

    return torch.from_numpy(rankdata(a.double().numpy(), axis=-1))


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman correlation of all entries (pooled, tie-aware)."""
    ra, rb = _ranks(a.reshape(1, -1))[0], _ranks(b.reshape(1, -1))[0]
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def rowwise_spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over rows of the per-row Spearman correlation (tie-aware)."""
    ra, rb = _ranks(a.reshape(len(a), -1)), _ranks(b.reshape(len(b), -1))
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    return float(((ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1)).clamp_min(1e-12)).mean())


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖a‖ over all entries."""
    return float((a - b).double().norm() / a.double().norm())


def topk_overlap(a: torch.Tensor, b: torch.Tensor, k: int = 10) -> float:
    """Mean over rows of |top-k(a) ∩ top-k(b)| / k."""
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    k = min(k, a.shape[1])
    ta, tb = a.topk(k, dim=1).indices, b.topk(k, dim=1).indices
    hits = (ta.unsqueeze(2) == tb.unsqueeze(1)).any(2).sum(1).double()
    return float((hits / k).mean())


@dataclass
class Row:
    method: str
    ours_size: str
    ours: Measure
    lfxai_size: str = "—"
    lfxai: Measure | None = None
    lfxai_full_s: float | None = None  # lfxai time at our size (measured or extrapolated)
    extrapolated: bool = False
    ours_full_s: float | None = None  # set when our own time is extrapolated to the full size
    ours_starred: bool = False  # a sum that includes extrapolated times
    lfxai_full_peak: float | None = None  # lfxai's peak MB at our size (a lower bound when extrapolated)
    spearman: float | None = None
    spearman_kind: str = ""
    overlap: float | None = None
    overlap_k: int = 10
    notes: list[str] = field(default_factory=list)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- data and model
def load_mnist() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """MNIST train/test as float32 (N,1,28,28) in [0,1] and int64 labels."""
    if "LFX_DATA_DIR" not in os.environ and (REPO.parent / "shared" / "data" / "mnist.npz").is_file():
        os.environ["LFX_DATA_DIR"] = str(REPO.parent / "shared" / "data")
    try:
        from lfx_engine.data import load_split

        train, test = load_split("mnist", "train"), load_split("mnist", "test")
        return train.x, train.y, test.x, test.y
    except ImportError:
        arrays = np.load(Path(os.environ["LFX_DATA_DIR"]) / "mnist.npz")
        to_x = lambda a: torch.from_numpy(a).float().div(255).unsqueeze(1)  # noqa: E731
        return (to_x(arrays["x_train"]), torch.from_numpy(arrays["y_train"]).long(),
                to_x(arrays["x_test"]), torch.from_numpy(arrays["y_test"]).long())


def balanced_indices(labels: torch.Tensor, n: int, n_classes: int = 10) -> torch.Tensor:
    """METHOD §6: example k is the ⌊k/K⌋-th occurrence of class k mod K."""
    try:
        from lfx_engine.data import balanced_subset_indices

        return balanced_subset_indices(labels, n, n_classes)
    except ImportError:
        out = torch.empty(n, dtype=torch.long)
        for c in range(n_classes):
            out[c::n_classes] = torch.nonzero(labels == c).flatten()[: len(range(c, n, n_classes))]
        return out


def train_model(x: torch.Tensor, sizes: Sizes, seed: int) -> tuple[nn.Module, list[Path]]:
    """Briefly train the MNIST denoising AE with one TracIn checkpoint per epoch."""
    from lfx_engine.models import build_model
    from lfx_engine.training.objectives import make_objective
    from lfx_engine.training.trainer import fit

    torch.manual_seed(seed)
    model = build_model("mnist_ae", pretext="denoising")
    tracin_dir = WORK / "tracin"
    shutil.rmtree(tracin_dir, ignore_errors=True)
    n_val = sizes.train_samples // 10
    result = fit(model, x[: sizes.train_samples], None, x[-n_val:], None, make_objective("denoising", model),
                 epochs=sizes.epochs, batch_size=300, patience=None, seed=seed, device="cpu", tracin_every=1,
                 tracin_dir=tracin_dir)
    log(f"trained {sizes.epochs} epochs in {result.wall_time_s:.1f}s, val loss {result.best_val_loss:.4f}")
    model.eval()
    return model, [Path(p) for p in result.tracin_checkpoints]


# --------------------------------------------------------------------------- lfxai runs
def lfxai_available() -> bool:
    try:
        import lfxai.explanations.examples  # noqa: F401
        import lfxai.explanations.features  # noqa: F401
        return True
    except ImportError:
        return False


def loader(x: torch.Tensor, batch_size: int) -> torch.utils.data.DataLoader:
    data = torch.utils.data.TensorDataset(x, torch.zeros(len(x)))
    return torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False)


def lfxai_features(encoder: nn.Module, x: torch.Tensor, method: str, batch_size: int, seed: int) -> torch.Tensor:
    from captum.attr import GradientShap, IntegratedGradients
    from lfxai.explanations.features import attribute_auxiliary

    torch.manual_seed(seed)
    np.random.seed(seed)  # captum draws GradientShap's α from numpy, as our engine's seeding assumes
    attr = IntegratedGradients(encoder) if method == "integrated_gradients" else GradientShap(encoder)
    out = attribute_auxiliary(encoder, loader(x, batch_size), torch.device("cpu"), attr,
                              baseline=torch.zeros(1, *x.shape[1:]))
    return torch.from_numpy(out)


@contextlib.contextmanager
def lfxai_pairing_fixed() -> Iterator[None]:
    """Temporarily pair each enlarged row with its own example's f(x) in lfxai's AuxiliaryFunction."""
    from lfxai.explanations.features import AuxiliaryFunction

    def forward(self: nn.Module, input_features: torch.Tensor) -> torch.Tensor:
        repeat = len(input_features) // len(self.prediction)
        return torch.sum(self.prediction.repeat_interleave(repeat, 0) * self.black_box(input_features), dim=-1)

    original = AuxiliaryFunction.forward
    AuxiliaryFunction.forward = forward
    try:
        yield
    finally:
        AuxiliaryFunction.forward = original


# --------------------------------------------------------------------------- the benchmark
def run(sizes: Sizes, seed: int, quick: bool) -> tuple[list[Row], dict[str, Any]]:
    from lfx_engine.feature_importance import label_free_attribution

    have_lfxai = lfxai_available()
    if not have_lfxai:
        log("lfxai not installed: only our timings (pip install --no-deps -r bench/requirements.txt)")
    x_tr_all, y_tr_all, x_te_all, y_te_all = load_mnist()
    model, checkpoints = train_model(x_tr_all, sizes, seed)
    x_train = x_tr_all[balanced_indices(y_tr_all, sizes.n_train)]
    x_test = x_te_all[balanced_indices(y_te_all, sizes.n_test)]
    final_state = {k: v.clone() for k, v in model.state_dict().items()}
    rows: list[Row] = []
    size = f"{sizes.n_test}×{sizes.n_train}"
    info: dict[str, Any] = {"checkpoints": len(checkpoints)}

    # ---- feature importance ------------------------------------------------------------
    x_fi = x_te_all[balanced_indices(y_te_all, sizes.n_features)]
    fi_size = f"{len(x_fi)} images, batch {sizes.fi_batch}"
    for method, label in (("integrated_gradients", "Integrated Gradients"), ("gradient_shap", "GradientShap")):
        log(f"{label}: ours and lfxai, best of {sizes.repeats} alternating runs")

        def run_ours(method: str = method) -> torch.Tensor:
            return label_free_attribution(model.encoder, x_fi, method, baselines=None, batch_size=sizes.fi_batch,
                                          device="cpu", seed=seed)

        def run_theirs(method: str = method) -> torch.Tensor:
            return lfxai_features(model.encoder, x_fi, method, sizes.fi_batch, seed)

        outputs, measures = alternating([run_ours, run_theirs] if have_lfxai else [run_ours], sizes.repeats)
        ours, ours_m = outputs[0], measures[0]
        row = Row(f"{label} (label-free)", fi_size, ours_m)
        if have_lfxai:
            theirs, theirs_m = outputs[1], measures[1]
            row.lfxai, row.lfxai_size, row.lfxai_full_s = theirs_m, fi_size, theirs_m.seconds
            row.spearman, row.spearman_kind = rowwise_spearman(ours, theirs), "per image"
            row.overlap = topk_overlap(ours.abs(), theirs.abs())
            row.notes.append(f"relative L2 difference {rel_diff(ours, theirs):.2e}")
        rows.append(row)
        if method == "gradient_shap":
            with measured() as again_m:
                again = label_free_attribution(model.encoder, x_fi, method, batch_size=sizes.fi_batch, device="cpu",
                                               seed=seed + 1)
            ref = Row("GradientShap: ours, another seed (Monte-Carlo noise level)", fi_size, again_m,
                      spearman=rowwise_spearman(ours, again), spearman_kind="per image",
                      overlap=topk_overlap(ours.abs(), again.abs()),
                      notes=[f"relative L2 difference {rel_diff(ours, again):.2e}"])
            rows.append(ref)
            if have_lfxai:
                log("GradientShap: lfxai with its pairing fixed")
                with measured() as fixed_m, lfxai_pairing_fixed():
                    theirs_fixed = lfxai_features(model.encoder, x_fi, method, sizes.fi_batch, seed)
                rows.append(Row("GradientShap: lfxai with the pairing fixed (one-line patch) vs ours", fi_size,
                                Measure(), fi_size, fixed_m, fixed_m.seconds,
                                spearman=rowwise_spearman(ours, theirs_fixed), spearman_kind="per image",
                                overlap=topk_overlap(ours.abs(), theirs_fixed.abs()),
                                notes=[f"relative L2 difference {rel_diff(ours, theirs_fixed):.2e}"]))

    # ---- latent methods -----------------------------------------------------------------
    train_idx = list(range(sizes.n_train))

    def with_latents(fn: Callable[[torch.Tensor, torch.Tensor], Any]) -> tuple[Any, Measure]:
        with measured() as m:
            h_train = encode(model.encoder, x_train, batch_size=500)
            h_test = encode(model.encoder, x_test, batch_size=500)
            out = fn(h_test, h_train)
        return out, m

    log(f"DKNN: best of {sizes.repeats} alternating runs")

    def dknn_ours() -> torch.Tensor:
        return with_latents(dknn_scores)[0]

    def dknn_theirs() -> torch.Tensor:
        from lfxai.explanations.examples import NearestNeighbours

        with torch.no_grad():
            return NearestNeighbours(model, X_train=x_train).attribute(x_test, train_idx,
                                                                       batch_size=min(500, sizes.n_test))

    outputs, measures = alternating([dknn_ours, dknn_theirs] if have_lfxai else [dknn_ours], sizes.repeats)
    row = Row("DKNN", size, measures[0])
    if have_lfxai:
        _compare(row, outputs[0], outputs[1], measures[1], size)
    rows.append(row)

    log("cosine")
    ours_cos, m = with_latents(cosine_scores)
    rows.append(Row("Cosine NN", size, m, notes=["not in lfxai"]))

    log("SimplEx")
    (weights, residuals), m = with_latents(lambda a, b: simplex_scores(a, b))
    row = Row("SimplEx", size, m, notes=[f"ours: lr 0.1, mean residual {float(residuals.mean()):.3f}"])
    if have_lfxai:
        from lfxai.explanations.examples import SimplEx

        with measured() as tm:
            theirs = SimplEx(model, X_train=x_train).attribute(x_test, train_idx, batch_size=50)
        h_train, h_test = encode(model.encoder, x_train), encode(model.encoder, x_test)
        theirs_res = (h_test - theirs @ h_train).norm(dim=1).mean()
        _compare(row, weights, theirs, tm, size)
        row.notes.append(f"lfxai: Adam lr 1e-3 (default), mean residual {float(theirs_res):.3f}")
    rows.append(row)

    # ---- TracIn -------------------------------------------------------------------------
    log(f"TracIn: ours, {len(checkpoints)} checkpoints")
    with measured() as m:
        ours_tracin = tracin_scores(model, checkpoints, x_train, x_test, batch_size=128)
    row = Row(f"TracIn ({len(checkpoints)} checkpoints)", size, m)
    if have_lfxai:
        _lfxai_tracin(row, model, checkpoints, x_train, x_test, ours_tracin, sizes, final_state)
    rows.append(row)
    rows += _low_memory_tracin(row, model, checkpoints, x_train, x_test, ours_tracin, sizes)

    # ---- Influence functions ------------------------------------------------------------
    np.random.seed(seed)
    batches = [torch.from_numpy(np.random.choice(sizes.n_train, sizes.minibatch)) for _ in range(sizes.depth)]
    log(f"Influence functions: ours, depth {sizes.depth}, minibatch {sizes.minibatch}")
    last = [0.0]

    def progress(done: int, total: int) -> None:
        if time.perf_counter() - last[0] > 60:
            last[0] = time.perf_counter()
            log(f"  IF iteration {done}/{total}")

    n_if = min(sizes.if_train or sizes.n_train, sizes.n_train)
    with measured() as m:
        ours_if = influence_scores(model, x_train[:n_if], x_test, hessian_data=x_train, minibatches=batches,
                                   progress=progress)
    row = Row(f"Influence functions (LiSSA, depth {sizes.depth})", f"{sizes.n_test}×{n_if}", m,
              notes=["same minibatch sequence in both libraries"])
    if n_if < sizes.n_train:
        row.ours_full_s = m.seconds * sizes.n_train / n_if
        row.notes.append(f"ours: {n_if} training columns measured (the recursion runs once per column), "
                         f"time scaled ×{sizes.n_train / n_if:g} to {size}")
    info["if_mode"] = "latent surrogate HVPs, direction train"
    lfxai_if = None
    if have_lfxai:
        from lfxai.explanations.examples import InfluenceFunctions

        n_tr, n_te = min(sizes.lfxai_if_train, n_if), sizes.lfxai_if_test
        log(f"Influence functions: lfxai on {n_te} test × {n_tr} train")
        save_dir = WORK / "lfxai_if"
        shutil.rmtree(save_dir, ignore_errors=True)
        explainer = InfluenceFunctions(model, nn.MSELoss(), save_dir, X_train=x_train)
        # A batch sampler replaying our minibatch sequence: every train example sees the same H_t.
        replay = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x_train, torch.zeros(len(x_train))),
                                             batch_sampler=[b.tolist() for b in batches])
        with measured() as tm:
            theirs = explainer.attribute_loader(torch.device("cpu"), loader(x_train[:n_tr], 1),
                                                loader(x_test[:n_te], 1), replay,
                                                recursion_depth=sizes.depth).detach()
        shutil.rmtree(save_dir, ignore_errors=True)
        # lfxai divides by len(train_loader) (= n_tr here) instead of the subset size n_train.
        theirs = theirs * n_tr / sizes.n_train
        row.lfxai, row.lfxai_size = tm, f"{n_te}×{n_tr}"
        row.lfxai_full_s, row.extrapolated = tm.seconds * sizes.n_train / n_tr, True
        sub = ours_if[:n_te, :n_tr]
        row.spearman, row.spearman_kind = spearman(sub, theirs), "pooled"
        row.overlap, row.overlap_k = topk_overlap(sub, theirs, k=min(10, n_tr // 2)), min(10, n_tr // 2)
        rel = float((sub - theirs).norm() / theirs.norm())
        row.lfxai_full_peak = tm.peak_mb + _score_matrix_growth_mb(sizes.n_test, sizes.n_train, n_te, n_tr)
        lfxai_if = (theirs, tm, n_te, n_tr, row.lfxai_full_s)
        row.notes.append(
            f"lfxai attribute_loader (its in-memory `attribute` crashes in 0.1.1), rescaled by n_tr/n_train; "
            f"relative difference {rel:.1e}; lfxai time scaled by n_train (the recursion; a lower bound)"
        )
    rows.append(row)
    rows += _low_memory_influence(row, model, x_train, x_test, batches, n_if, ours_if, lfxai_if, sizes, progress)

    log("Influence functions: ours, Gauss-Newton Hessian, all columns")
    with measured() as m:
        ours_gn = influence_scores(model, x_train, x_test, minibatches=batches, hessian="gauss_newton",
                                   progress=progress)
    row = Row(f"Influence functions (LiSSA depth {sizes.depth}, encoder-Gauss–Newton Hessian)", size, m,
              notes=["same minibatch sequence"])
    exact_cols = ours_gn[:, :n_if]
    row.notes.append(
        f"vs our exact LiSSA on its {n_if} columns: Spearman {spearman(exact_cols, ours_if):.4f}, top-10 overlap "
        f"{topk_overlap(exact_cols.T, ours_if.T):.2f} per training column, relative difference "
        f"{rel_diff(exact_cols, ours_if):.1e}")
    if lfxai_if is not None:
        theirs, tm, n_te, n_tr, full_s = lfxai_if
        sub = ours_gn[:n_te, :n_tr]
        row.lfxai, row.lfxai_size, row.lfxai_full_s, row.extrapolated = tm, f"{n_te}×{n_tr}", full_s, True
        row.lfxai_full_peak = tm.peak_mb + _score_matrix_growth_mb(sizes.n_test, sizes.n_train, n_te, n_tr)
        row.spearman, row.spearman_kind = spearman(sub, theirs), "pooled"
        row.overlap, row.overlap_k = topk_overlap(sub, theirs, k=min(10, n_tr // 2)), min(10, n_tr // 2)
        row.notes.append(f"vs lfxai's exact LiSSA: relative difference {rel_diff(sub, theirs):.1e}")
    rows.append(row)
    rows.append(_all_methods_row(rows, size, sizes))
    low = _all_methods_row(rows, size, sizes, low_memory=True)
    if low is not None:
        rows.append(low)
    model.load_state_dict(final_state)
    return rows, info


def _all_methods_row(rows: list[Row], size: str, sizes: Sizes, low_memory: bool = False) -> Row | None:
    """The five example-importance methods end to end vs lfxai's four.

    The default combination takes IF with the Gauss–Newton Hessian; ``low_memory`` takes the
    smallest-budget ``max_memory_mb`` rows of TracIn and the exact IF instead.
    """
    def wanted(r: Row) -> bool:
        if r.method.startswith(("DKNN", "Cosine", "SimplEx")):
            return True
        if low_memory:
            return r.method.startswith((f"TracIn, max_memory_mb={min(sizes.tracin_budgets_mb):g}",
                                        "Influence functions (exact LiSSA), max_memory"))
        return r.method.startswith("TracIn (") or "Gauss–Newton" in r.method

    picked = [r for r in rows if wanted(r)]
    if low_memory and len(picked) < 5:
        return None
    ours_s = sum(r.ours_full_s or r.ours.seconds for r in picked)
    theirs = [r.lfxai_full_s for r in picked if r.lfxai_full_s]
    peaks = [r.lfxai_full_peak if r.lfxai_full_peak is not None else r.lfxai.peak_mb
             for r in picked if r.lfxai is not None]
    title = ("All five, low memory (TracIn and exact IF under max_memory_mb)" if low_memory
             else "All five example-importance methods (IF: Gauss–Newton)")
    total = Row(title, size, Measure(seconds=ours_s, peak_mb=max(r.ours.peak_mb for r in picked)),
                ours_starred=any(r.ours_full_s for r in picked), lfxai_full_peak=max(peaks) if peaks else None,
                notes=["sum of the rows above, peak = the largest of theirs; lfxai has no cosine NN, and its IF "
                       "is the exact LiSSA"])
    if theirs:
        total.lfxai_full_s, total.extrapolated, total.lfxai_size = sum(theirs), True, "see rows"
    exact = next((r for r in rows if r.method.startswith("Influence functions (LiSSA, depth")), None)
    if exact is not None and not low_memory:
        gn_s = picked[-1].ours_full_s or picked[-1].ours.seconds
        with_exact = ours_s - gn_s + (exact.ours_full_s or exact.ours.seconds)
        total.notes.append(f"with our exact IF instead: {_fmt_s(with_exact)}")
    return total


def _low_memory_influence(full: Row, model: nn.Module, x_train: torch.Tensor, x_test: torch.Tensor,
                          batches: list[torch.Tensor], n_if: int, reference: torch.Tensor,
                          lfxai_if: tuple | None, sizes: Sizes, progress: Callable[[int, int], None]) -> list[Row]:
    """Our exact LiSSA under ``max_memory_mb``: on the measured columns, and at the size lfxai ran at."""
    budget = sizes.if_budget_mb
    log(f"Influence functions: ours, exact, max_memory_mb={budget:g}")
    with measured() as m:
        tight = influence_scores(model, x_train[:n_if], x_test, hessian_data=x_train, minibatches=batches,
                                 progress=progress, max_memory_mb=budget)
    row = Row(f"Influence functions (exact LiSSA), max_memory_mb={budget:g}", full.ours_size, m, full.lfxai_size,
              full.lfxai, full.lfxai_full_s, full.extrapolated, lfxai_full_peak=full.lfxai_full_peak,
              notes=[f"relative difference to the unbounded run {rel_diff(tight, reference):.1e}"])
    if full.ours_full_s:
        row.ours_full_s = m.seconds * sizes.n_train / n_if
        row.notes.append(f"time scaled ×{sizes.n_train / n_if:g} as above")
    rows = [row]
    if lfxai_if is None:
        return rows
    theirs, tm, n_te, n_tr, _ = lfxai_if
    with measured() as m:
        small = influence_scores(model, x_train[:n_tr], x_test[:n_te], hessian_data=x_train, minibatches=batches,
                                 n_train_for_scaling=len(x_train), max_memory_mb=budget)
    rows.append(Row(f"Influence functions (exact LiSSA) at lfxai's size, max_memory_mb={budget:g}",
                    f"{n_te}×{n_tr}", m, f"{n_te}×{n_tr}", tm, tm.seconds,
                    spearman=spearman(small, theirs), spearman_kind="pooled",
                    overlap=topk_overlap(small, theirs, k=min(10, n_tr // 2)), overlap_k=min(10, n_tr // 2),
                    notes=[f"relative difference to lfxai {rel_diff(small, theirs):.1e}"]))
    return rows


def _compare(row: Row, ours: torch.Tensor, theirs: torch.Tensor, m: Measure, size: str) -> None:
    row.lfxai, row.lfxai_size, row.lfxai_full_s = m, size, m.seconds
    zero_rows = int((theirs.abs().sum(1) == 0).sum())
    row.spearman, row.spearman_kind = spearman(ours, theirs), "pooled"
    row.overlap = topk_overlap(ours, theirs)
    if zero_rows:
        row.notes.append(f"lfxai left {zero_rows} rows at zero")


def _score_matrix_growth_mb(n_rows: int, n_cols: int, measured_rows: int, measured_cols: int) -> float:
    """MB a float32 ``(n_rows, n_cols)`` matrix takes beyond a ``(measured_rows, measured_cols)`` one."""
    return 4 * (n_rows * n_cols - measured_rows * measured_cols) / 2**20


def _low_memory_tracin(full: Row, model: nn.Module, checkpoints: list[Path], x_train: torch.Tensor,
                       x_test: torch.Tensor, reference: torch.Tensor, sizes: Sizes) -> list[Row]:
    """Our TracIn under each ``max_memory_mb``: at full size, and at the size lfxai was measured at."""
    rows = []
    for budget in sizes.tracin_budgets_mb:
        log(f"TracIn: ours, max_memory_mb={budget:g}")
        with measured() as m:
            tight = tracin_scores(model, checkpoints, x_train, x_test, batch_size=128, max_memory_mb=budget)
        rows.append(Row(f"TracIn, max_memory_mb={budget:g}", full.ours_size, m, full.lfxai_size, full.lfxai,
                        full.lfxai_full_s, full.extrapolated, lfxai_full_peak=full.lfxai_full_peak,
                        notes=[f"relative difference to the unbounded run {rel_diff(tight, reference):.1e}"]))
    if full.lfxai is None:
        return rows
    n = sizes.lfxai_tracin[1]
    for budget in sizes.tracin_budgets_mb:
        with measured() as m:
            small = tracin_scores(model, checkpoints, x_train[:n], x_test[:n], batch_size=128,
                                  max_memory_mb=budget)
        rows.append(Row(f"TracIn at lfxai's size, max_memory_mb={budget:g}", f"{n}×{n}", m, f"{n}×{n}",
                        full.lfxai, full.lfxai.seconds,
                        notes=[f"relative difference to the full run's block "
                               f"{rel_diff(small, reference[:n, :n]):.1e}"]))
    return rows


def _lfxai_tracin(row: Row, model: nn.Module, checkpoints: list[Path], x_train: torch.Tensor,
                  x_test: torch.Tensor, ours: torch.Tensor, sizes: Sizes, final_state: dict) -> None:
    """lfxai's file-based TracIn (attribute_loader) on two square subsets; fit a·n + b·n² to extrapolate."""
    from safetensors.torch import load_file

    from lfxai.explanations.examples import TracIn

    pt_files = []
    for path in checkpoints:  # lfxai reads checkpoints with torch.load
        target = WORK / "lfxai_ckpt" / (path.stem + ".pt")
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.save(load_file(str(path)), target)
        pt_files.append(target)
    model.checkpoints_files = pt_files
    times = {}
    theirs = None
    for n in sizes.lfxai_tracin:
        log(f"TracIn: lfxai attribute_loader on {n}×{n}")
        save_dir = WORK / f"lfxai_tracin_{n}"
        shutil.rmtree(save_dir, ignore_errors=True)
        with measured() as m:
            theirs = TracIn(model, nn.MSELoss(), save_dir).attribute_loader(
                torch.device("cpu"), loader(x_train[:n], 1), loader(x_test[:n], 1))
        model.load_state_dict(final_state)  # lfxai leaves the last checkpoint loaded
        times[n] = m
        shutil.rmtree(save_dir, ignore_errors=True)
    del model.checkpoints_files
    (n1, n2) = sizes.lfxai_tracin
    t1, t2 = times[n1].seconds, times[n2].seconds
    b = (t2 / n2 - t1 / n1) / (n2 - n1)
    a = t1 / n1 - b * n1
    n = sizes.n_train
    if a >= 0 and b >= 0:
        full, how = a * n + b * n * n, f"fit a·n + b·n² on n = {n1}, {n2}"
    else:
        full, how = t2 * (n * n) / (n2 * n2), f"scaled by pair count from n = {n2}"
    row.lfxai, row.lfxai_size, row.lfxai_full_s, row.extrapolated = times[n2], f"{n2}×{n2}", full, True
    row.lfxai_full_peak = times[n2].peak_mb + _score_matrix_growth_mb(len(x_test), len(x_train), n2, n2)
    sub = ours[:n2, :n2]
    row.spearman, row.spearman_kind = spearman(sub, theirs), "pooled"
    row.overlap = topk_overlap(sub, theirs)
    row.notes.append(f"lfxai attribute_loader (per-example files); {how}; "
                     f"relative difference {float((sub - theirs).norm() / theirs.norm()):.1e}")


# --------------------------------------------------------------------------- report
def _fmt_mb(mb: float) -> str:
    """Megabytes: one decimal below 10 MB (the low-memory rows), whole numbers above."""
    return f"{mb:.1f}" if mb < 10 else f"{mb:.0f}"


def _fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 120:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.2f} s"


def render(rows: list[Row], sizes: Sizes, info: dict[str, Any], command: str, threads: int, total_s: float) -> str:
    lines = [
        "# Engine benchmark: LFX Explorer vs lfxai 0.1.1",
        "",
        f"Generated by `{command}` on "
        f"{dt.datetime.now().strftime('%Y-%m-%d %H:%M')}.",
        "",
        f"* Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
        f"{torch.__version__}, {threads} torch thread(s), CPU only.",
        "* **Times are process CPU time** (user + system) of each method: the machine is shared with other "
        "jobs, which inflates wall-clock time by a varying factor but not CPU time. With one thread, CPU "
        f"time ≈ wall time on an idle machine. Wall clock of the whole run: {total_s / 60:.1f} min. "
        f"Contention still moves CPU time by up to about 20 %, so the short comparisons (feature importance, "
        f"DKNN) alternate the two libraries {sizes.repeats} times and keep each one's fastest run; the long "
        "rows run once.",
        f"* Model: METHOD §5 MNIST denoising autoencoder (encoder 43,428 parameters), trained "
        f"{sizes.epochs} epochs on {sizes.train_samples} images (seeded); {info['checkpoints']} TracIn checkpoints.",
        f"* Data: class-balanced MNIST subsets (METHOD §6), {sizes.n_train} train × {sizes.n_test} test; "
        f"feature importance on the first {sizes.n_features} test images, zero baseline.",
        f"* IF: LiSSA depth {sizes.depth}, minibatch {sizes.minibatch}, damp 1e-3, scale 1000; ours uses "
        f"{info.get('if_mode', '')}.",
        f"* Peak memory: largest increase of {MEMORY_KIND} over the method's start, sampled every 5 ms.",
        "* Agreement: Spearman between our scores and lfxai's (pooled over the compared matrix, or the mean "
        "per image for attributions) and the mean overlap of each row's top-k (k = 10 unless stated; |attr| "
        "pixels for attributions).",
        "* **Extrapolated** times are marked *; the measured sizes are in the size columns.",
        "* lfxai's peak at our size: its measured peak plus the growth of the float32 score matrix it "
        "allocates up front (`torch.zeros(n_test, n_train)`), a lower bound (marked ≥) where it ran smaller.",
        "* `max_memory_mb` rows: the same computation under a memory budget for the per-example gradients "
        "(and, for IF, the LiSSA vectors and the Hessian graph); the scores are unchanged (relative "
        "difference in the notes), the time grows with the recomputed blocks.",
        "",
        "| method | size (ours) | ours | lfxai size | lfxai measured | lfxai at our size | lfxai / ours "
        "| ours peak MB | lfxai peak MB | lfxai peak MB at our size | Spearman | top-k overlap | notes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ours_s = r.ours_full_s or (r.ours.seconds if r.ours.seconds else None)
        ratio = f"{r.lfxai_full_s / ours_s:.1f}×" if (r.lfxai_full_s and ours_s) else "—"
        ours_txt = _fmt_s(ours_s) + (f" * ({_fmt_s(r.ours.seconds)} measured)" if r.ours_full_s
                                     else " *" if r.ours_starred else "")
        full = "—" if r.lfxai_full_s is None else _fmt_s(r.lfxai_full_s) + (" *" if r.extrapolated else "")
        sp = "—" if r.spearman is None else f"{r.spearman:.3f} ({r.spearman_kind})"
        ov = "—" if r.overlap is None else f"{r.overlap:.2f}" + (f" (k={r.overlap_k})" if r.overlap_k != 10 else "")
        full_peak = "—"
        if r.lfxai_full_peak is not None:
            full_peak = ("≥ " if r.lfxai_size != r.ours_size else "") + _fmt_mb(r.lfxai_full_peak)
        elif r.lfxai is not None and r.lfxai_size == r.ours_size:
            full_peak = _fmt_mb(r.lfxai.peak_mb)
        lines.append(
            f"| {r.method} | {r.ours_size} | {ours_txt} | {r.lfxai_size} | "
            f"{_fmt_s(r.lfxai.seconds) if r.lfxai else '—'} | {full} | {ratio} | "
            f"{_fmt_mb(r.ours.peak_mb)} | {_fmt_mb(r.lfxai.peak_mb) if r.lfxai else '—'} | {full_peak} | {sp} | "
            f"{ov} | {'; '.join(r.notes)} |"
        )
    lines += [
        "",
        "Reading the GradientShap rows: both libraries are seeded alike, so captum draws the same α for "
        "both. lfxai tiles f(x) block-wise over GradientShap's `repeat_interleave`-enlarged batch, so row "
        "`i·5+k` is scored against example `(i·5+k) mod B` (METHOD §1.3): its maps differ from ours by the "
        "relative L2 difference shown. With that one line of lfxai patched to `repeat_interleave` (the "
        "\"pairing fixed\" row), "
        "lfxai reproduces our maps exactly, so the pairing is the whole difference. The \"another seed\" row "
        "gives the Monte-Carlo noise of 5 samples for scale.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--if-train", type=int, default=None,
                        help="measure our Influence Functions on this many training columns only and scale the "
                             "time (default: all; 1000 columns take about an hour on one idle core)")
    parser.add_argument("--out", type=Path, default=None,
                        help="Markdown output (default bench/RESULTS.md; with --quick bench/_work/RESULTS_quick.md)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sizes = QUICK if args.quick else Sizes()
    if args.if_train:
        sizes.if_train = args.if_train
    out = args.out or (WORK / "RESULTS_quick.md" if args.quick else REPO / "bench" / "RESULTS.md")
    WORK.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rows, info = run(sizes, args.seed, args.quick)
    command = " ".join(["python bench/bench_engine.py", *(argv if argv is not None else sys.argv[1:])])
    text = render(rows, sizes, info, command, args.threads, time.perf_counter() - start)
    out.write_text(text)
    print(text)
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
