"""Shared pieces of the Study pages (pretext, disentanglement, Lucent, encoder vs full).

Dataset choice bound to the shared selection, clear messages for missing
models, progress for experiment runs, the test-subset choice and per-sample
results cached per process. No science here: every number comes from
:class:`lfx_engine.explorer.Explorer`.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
import streamlit as st

from lfx_engine import timing
from lfx_engine.config import checkpoint_dir
from lfx_engine.data import get_spec
from lfx_ui import safe, state
from lfx_engine.explorer import ModelChoice
from lfx_ui.engine import checkpoint_sha, dataset_ready, eta_text, get_explorer, pick_model, stop_button

T = TypeVar("T")

#: Test-subset sizes offered for dataset-wide study results (None = the whole test split).
SUBSETS = (100, 200, 500, 1000, 2000, 5000, None)


def request(flag: str) -> None:
    """Button callback: remember a request until the script body handles it (survives the router's rerun)."""
    st.session_state[flag] = True


def missing_models(what: str, commands: Sequence[str], detail: str | None = None) -> None:
    """A warning that the view has no trained models, with the exact command(s) to train them."""
    st.warning(f"No trained {what} {'is' if what.startswith(('a ', 'an ')) else 'are'} available for this view yet."
               + (f" {detail}" if detail else "") + " Train them (CUDA is used when present), then reload:",
               icon=":material/model_training:")
    st.code("\n".join(commands), language="bash")
    st.caption(f"Checkpoints are read from `{checkpoint_dir()}` (set `LFX_CHECKPOINT_DIR` to change it).")


def pick_dataset(page: str, datasets: Sequence[str], what: str, container=None) -> str | None:
    """Dataset selectbox over ``datasets`` bound to the shared selection (sidebar by default).

    When the shared dataset has no ``what`` here, says so and shows the first
    one. Returns None (with the fetch command) when the dataset's files are missing.
    """
    explorer = get_explorer()
    box = container or st.sidebar
    datasets = list(datasets)
    titles = {d: get_spec(d).title for d in datasets}
    current = state.get("dataset")
    if current and current not in datasets:
        try:
            shown = get_spec(current).title
        except Exception:  # noqa: BLE001 - an unknown name from a link
            shown = str(current)
        st.info(f"{shown} has no {what} here; showing {titles[datasets[0]]}.", icon=":material/info:")
    dataset = state.choose("dataset", "Dataset", datasets, widget_key=f"{page}_dataset", format_func=titles.get,
                           container=box)
    if not dataset_ready(explorer, dataset, titles[dataset]):
        return None
    return dataset


def pick_study_model(page: str, tasks: Sequence[str], what: str) -> ModelChoice | None:
    """:func:`lfx_ui.engine.pick_model` restricted to ``tasks``, after moving the shared selection onto them.

    A model of another kind chosen on another page (say the consistency AE on
    Saliency) is not a broken link: the selection moves quietly to this view's
    first model of the same dataset (or of the first dataset that has one),
    with a note. A link to an untrained model still gets pick_model's message.
    """
    explorer = get_explorer()
    usable = set(explorer.datasets_with_models())
    candidates = [m for m in explorer.models(tasks=tasks) if m.dataset in usable]
    trained = {m.name for m in explorer.models()}
    current_ds, current = state.get("dataset"), state.get("model")
    datasets = list(dict.fromkeys(m.dataset for m in candidates))
    if candidates and current_ds and current_ds not in datasets:
        try:
            shown = explorer.dataset_title(current_ds)
        except Exception:  # noqa: BLE001 - an unknown name from a link
            shown = safe.describe(current_ds)
        st.info(f"{shown} has no {what} here; showing {explorer.dataset_title(datasets[0])}.", icon=":material/info:")
        state.set("dataset", datasets[0])
    if candidates and current in trained and current not in {m.name for m in candidates}:
        dataset = state.get("dataset")
        pool = [m for m in candidates if m.dataset == dataset] or candidates
        state.set("dataset", pool[0].dataset)
        state.set("model", pool[0].name)
    return pick_model(page, tasks=tasks)


def subset_choice(page: str, size: int, default_cpu: int, container=None, label: str = "Test inputs") -> int | None:
    """A selectbox for the test subset of a dataset-wide result: the first n inputs, or all (None).

    Defaults to ``default_cpu`` on a CPU and to the whole split on CUDA.
    """
    box = container or st.sidebar
    options = [n for n in SUBSETS if n is None or n < size]
    default = None if get_explorer().device.type == "cuda" else min(default_cpu, size)
    if default is not None and default not in options:
        options = sorted({*[o for o in options if o is not None], default}) + [None]
    return box.selectbox(label, options, index=options.index(default), **state.bind(f"{page}_n_test", lambda n: f"all {size:,} (full test split)" if n is None
                                      else f"first {n:,}"),
                         help="Dataset-wide results use the first n test inputs; the full split is the paper's "
                              "setting but takes much longer on a CPU. Results are cached on disk by checkpoint "
                              "and parameters, so each setting is computed once.")


def run_with_status(label: str, done: str, fn: Callable[[Callable[[int, int], None], Callable[[str], None]], T],
                    unit: str = "models", rate: tuple[str, float] | None = None) -> T:
    """Run ``fn(progress, log)`` inside ``st.status``: a progress bar with the time left, the experiment's log
    lines and a Stop button. With ``rate = (kind, units)`` the run's speed is recorded (:mod:`lfx_engine.timing`)
    so the next estimate of that kind is measured, not guessed."""
    explorer = get_explorer()
    with st.status(label, expanded=True) as status:
        remove_stop = stop_button(f"stop_{_slug(label)}", label[:1].lower() + label[1:].rstrip("…"))
        bar = st.progress(0.0, text="starting…")
        line = st.empty()
        started = time.perf_counter()

        def progress(finished: int, total: int) -> None:
            bar.progress(min(1.0, finished / max(total, 1)),
                         text=f"{finished}/{total} {unit} · {eta_text(started, finished, total)}")

        def log(message: str) -> None:
            line.caption(message)

        try:
            out = fn(progress, log)
        except BaseException:
            remove_stop()
            status.update(label=f"{label} — failed", state="error", expanded=True)
            raise
        remove_stop()
        spent = time.perf_counter() - started
        if rate is not None:
            timing.record(rate[0], explorer.device.type, rate[1], spent)
        status.update(label=f"{done} in {spent:.0f} s", state="complete", expanded=False)
    return out


def cost(kind: str, units: float, fallback_per_unit: float) -> timing.Estimate:
    """The expected time of a job of ``kind`` on this machine (measured rate, or a first guess)."""
    return timing.estimate(kind, get_explorer().device.type, units, fallback_per_unit)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)[:40]


def notes(items: Sequence[str]) -> None:
    """The experiment's remarks (subsampling, number of runs) as captions."""
    for note in items:
        st.caption(f"Note: {note}")


# --------------------------------------------------------------------------- per-sample results (cached)


def unit_maps(name: str, index: int) -> np.ndarray:
    """Per-latent-unit saliency (d, H, W) of test input ``index`` of VAE ``name``."""
    return _unit_maps(name, checkpoint_sha(name), index)


@st.cache_data(max_entries=256, show_spinner=False)
def _unit_maps(name: str, sha: str, index: int) -> np.ndarray:
    explorer = get_explorer()
    x, _ = explorer.sample(name, index)
    return explorer.unit_maps(name, x)[0]


def latent_code(name: str, index: int) -> np.ndarray:
    """The representation (posterior mean for a VAE) of test input ``index``, (d,)."""
    return _latent_code(name, checkpoint_sha(name), index)


@st.cache_data(max_entries=256, show_spinner=False)
def _latent_code(name: str, sha: str, index: int) -> np.ndarray:
    explorer = get_explorer()
    return explorer.latent(name, explorer.sample(name, index)[0])[0]


def traversal(name: str, index: int, unit: int, values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Decoded traversal of one unit for test input ``index`` (len(values), C, H, W)."""
    return _traversal(name, checkpoint_sha(name), index, unit, tuple(float(v) for v in values))


@st.cache_data(max_entries=256, show_spinner=False)
def _traversal(name: str, sha: str, index: int, unit: int, values: tuple[float, ...]) -> np.ndarray:
    return get_explorer().traversal(name, index, unit, values)


def decode(name: str, code: Sequence[float]) -> np.ndarray:
    """One decoded latent code (C, H, W)."""
    return _decode(name, checkpoint_sha(name), tuple(float(v) for v in code))


@st.cache_data(max_entries=256, show_spinner=False)
def _decode(name: str, sha: str, code: tuple[float, ...]) -> np.ndarray:
    return get_explorer().decode(name, np.array([code], dtype=np.float32))[0]


def top_example(name: str, index: int, n_train: int) -> dict[str, Any]:
    """The most important training example (DKNN on the balanced subset) for test input ``index``."""
    return _top_example(name, checkpoint_sha(name), index, n_train)


@st.cache_data(max_entries=256, show_spinner=False)
def _top_example(name: str, sha: str, index: int, n_train: int) -> dict[str, Any]:
    explorer = get_explorer()
    row = explorer.sample_example_scores(name, "dknn", index, n_train)
    assert row is not None  # computed (compute=True)
    best = explorer.example_ranking(name, row, n_train).iloc[0]
    return {"train_index": int(best["train_index"]), "class": str(best["class"]), "score": float(best["score"]),
            "label": int(best["label"]), "image": explorer.train_inputs(name, [int(best["train_index"])])[0]}


def encoder_vs_full_maps(name: str, index: int, method: str) -> tuple[np.ndarray, np.ndarray, float]:
    """Display maps (H, W) of a classifier's encoder and of the full classifier for one test input, and r."""
    return _encoder_vs_full_maps(name, checkpoint_sha(name), index, method)


@st.cache_data(max_entries=256, show_spinner=False)
def _encoder_vs_full_maps(name: str, sha: str, index: int, method: str) -> tuple[np.ndarray, np.ndarray, float]:
    explorer = get_explorer()
    x, _ = explorer.sample(name, index)
    enc, full, r = explorer.encoder_vs_full_maps(name, x, method)
    return explorer.display_map(enc)[0], explorer.display_map(full)[0], float(r[0])


def activation_stats(name: str, layer: str, unit: int, n: int = 500, top: int = 8) -> dict[str, Any]:
    """A Lucent target's activation over the first ``n`` test inputs: mean, std, max, and the ``top``
    most activating inputs (``top_index``, ``top_value``), to set a render beside real data."""
    return _activation_stats(name, checkpoint_sha(name), layer, unit, n, top)


@st.cache_data(max_entries=256, show_spinner=False)
def _activation_stats(name: str, sha: str, layer: str, unit: int, n: int, top: int) -> dict[str, Any]:
    explorer = get_explorer()
    x = explorer.test_data(name)[0][:n]
    act = explorer.lucent_activation(name, layer, unit, x)
    order = np.argsort(-act, kind="stable")[:top]
    return {"mean": float(act.mean()), "std": float(act.std()), "max": float(act.max()), "n": int(len(act)),
            "top_index": order.astype(int).tolist(), "top_value": act[order].astype(float).tolist()}
