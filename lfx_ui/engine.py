"""The one cached engine of the app process, and small guards for pages."""
from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence, TypeVar

import numpy as np
import pandas as pd
import streamlit as st
import torch

from lfx_engine.catalogue import BUILTIN_SOURCES
from lfx_engine.config import checkpoint_dir
from lfx_engine.errors import LFXError
from lfx_engine.explorer import Explorer, ModelChoice, pin_mmap_threshold
from lfx_ui import safe, state
from lfx_ui.jobs import stop_button, stopped_notice  # noqa: F401 - the pages import them from here
from lfx_ui.sessions import SessionJanitor, session_id

T = TypeVar("T")
LOG = logging.getLogger("lfx_ui")


@st.cache_resource(show_spinner="Starting the engine…")
def _shared_engine() -> tuple[Explorer, SessionJanitor]:
    """The process's one engine and the thread that gives its memory back when sessions end."""
    # Streamlit runs each session in a thread: keep torch from oversubscribing the cores.
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    pin_mmap_threshold()  # large blocks go back whole when sessions end, instead of fragmenting the heap
    explorer = Explorer()
    janitor = SessionJanitor(explorer)
    janitor.start()
    return explorer, janitor


def get_explorer() -> Explorer:
    """Shared, read-only engine: models load once per process, in eval mode, under the memory budget.

    The calling session is named to the engine, which records what it uses, so that memory goes back once the
    session ends (:mod:`lfx_ui.sessions`). Sessions never hold models or datasets themselves.
    """
    explorer, janitor = _shared_engine()
    session = session_id()
    explorer.bind_user(session)
    if session is not None:
        janitor.seen(session)
    return explorer


@contextmanager
def user_errors() -> Iterator[None]:
    """Show an engine error as a clear message instead of a stack trace; the page keeps its state."""
    try:
        yield
    except LFXError as exc:
        st.error(str(exc), icon=":material/warning:")
    except Exception as exc:  # noqa: BLE001 - a page must never die on one failed computation
        LOG.exception("unexpected error in a page")
        st.error(f"This computation failed unexpectedly ({type(exc).__name__}: {exc}). The rest of the page "
                 "still works; please report it with the link of this view.", icon=":material/error:")


def eta_text(started: float, done: int, total: int) -> str:
    """"12 s elapsed, about 30 s left" from the share of the work done so far (the live, honest estimate)."""
    elapsed = time.perf_counter() - started
    if done <= 0 or done >= total:
        return f"{elapsed:.0f} s elapsed"
    left = elapsed / done * (total - done)
    return f"{elapsed:.0f} s elapsed, about {left:.0f} s left"


def progress_reporter(label: str) -> tuple[Callable[[int, int], None], Callable[[], object]]:
    """A progress(done, total) callback drawing ``st.progress`` with the time left, and a function to clear it."""
    bar = st.progress(0.0, text=label)
    started = time.perf_counter()

    def update(done: int, total: int) -> None:
        bar.progress(min(1.0, done / max(total, 1)),
                     text=f"{label} ({done}/{total}; {eta_text(started, done, total)})")

    return update, bar.empty


# --------------------------------------------------------------------------- cached results (per process)
# Streamlit keeps these across sessions; the engine's own disk cache holds the dataset-wide results.


def checkpoint_sha(name: str) -> str:
    """The sha256 of a model's weights, zoo or user (part of every cache key below)."""
    return get_explorer().entry(name).sha256


def sample_attribution(name: str, index: int, method: str) -> np.ndarray:
    """Attribution (input-shaped) of test input ``index`` of model ``name`` under ``method`` (cached)."""
    return _sample_attribution(name, checkpoint_sha(name), index, method)


@st.cache_data(max_entries=512, show_spinner=False)
def _sample_attribution(name: str, sha: str, index: int, method: str) -> np.ndarray:
    explorer = get_explorer()
    x, _ = explorer.sample(name, index)
    return explorer.attribute(name, x, method)[0]


def upload_attribution(name: str, digest: str, x: torch.Tensor, method: str) -> np.ndarray:
    """Attribution of an uploaded input (cached by its content digest)."""
    return _upload_attribution(name, checkpoint_sha(name), digest, x, method)


@st.cache_data(max_entries=64, show_spinner=False)
def _upload_attribution(name: str, sha: str, digest: str, _x: torch.Tensor, method: str) -> np.ndarray:
    return get_explorer().attribute(name, _x, method)[0]


def latent_map(name: str, n_points: int) -> pd.DataFrame:
    """2-D PCA of the test latents (first ``n_points`` test inputs), cached."""
    return _latent_map(name, checkpoint_sha(name), n_points)


@st.cache_data(max_entries=32, show_spinner=False)
def _latent_map(name: str, sha: str, n_points: int) -> pd.DataFrame:
    return get_explorer().latent_map(name, n_points=n_points)


def sample_masking_curve(name: str, index: int, methods: Sequence[str]) -> pd.DataFrame:
    """Shift vs % masked of one test input (cached)."""
    return _sample_masking_curve(name, checkpoint_sha(name), index, tuple(methods))


@st.cache_data(max_entries=128, show_spinner=False)
def _sample_masking_curve(name: str, sha: str, index: int, methods: tuple[str, ...]) -> pd.DataFrame:
    return get_explorer().sample_masking_curve(name, index, list(methods))


def masked_views(name: str, index: int, method: str) -> tuple[np.ndarray, list[int], np.ndarray]:
    """One test input masked at each level of METHOD §7.1 by ``method`` (cached)."""
    return _masked_views(name, checkpoint_sha(name), index, method)


@st.cache_data(max_entries=128, show_spinner=False)
def _masked_views(name: str, sha: str, index: int, method: str) -> tuple[np.ndarray, list[int], np.ndarray]:
    explorer = get_explorer()
    x, _ = explorer.sample(name, index)
    return explorer.masked_views(name, x, method)


# --------------------------------------------------------------------------- dataset / model picker


def pick_model(page: str, *, tasks: Sequence[str] | None = None, container=None) -> ModelChoice | None:
    """Dataset and encoder selectboxes bound to the shared selection (sidebar by default).

    Only datasets with a trained model are offered. Shows a clear message (with
    the exact command) and returns None when nothing can be explored.
    """
    explorer = get_explorer()
    box = container or st.sidebar
    datasets = explorer.datasets_with_models()
    if tasks:
        datasets = [d for d in datasets if explorer.models(d, tasks=tasks)]
    if not datasets:
        st.warning("No trained model is available for this view yet. Train the zoo's models (CUDA is used when "
                   "present), then reload:")
        st.code("python -m lfx_engine train mnist_dae_consistency   # or: python -m lfx_engine train all",
                language="bash")
        st.caption(f"Checkpoints are read from `{checkpoint_dir()}` (set `LFX_CHECKPOINT_DIR` to change it).")
        return None
    titles = {d: explorer.dataset_title(d) for d in datasets}
    wanted = state.requested("dataset", datasets)
    if wanted and state.from_link("dataset"):
        known = wanted in {r["dataset"] for r in explorer.dataset_status()}
        st.warning(f"The link asked for dataset {safe.describe(wanted)}, which has no model here"
                   + ("" if known else " (unknown dataset name)") + f"; showing {titles[datasets[0]]}.")
    dataset = state.choose("dataset", "Dataset", datasets, widget_key=f"{page}_dataset",
                           format_func=titles.get, container=box)
    if not dataset_ready(explorer, dataset, titles[dataset]):
        return None
    models = by_experiment(explorer.models(dataset, tasks=tasks))
    names = [m.name for m in models]
    labels = selector_labels(models)
    wanted = state.requested("model", names)
    if wanted and state.from_link("model"):
        recipe = wanted in explorer.untrained(dataset)
        st.warning(f"The link asked for model {safe.describe(wanted)}, which is "
                   + ("not trained here" if recipe else "not a model") + f" for {titles[dataset]}; showing "
                   f"{labels[names[0]]}." + (" Train it with:" if recipe else ""))
        if recipe:  # a zoo recipe's own name, never the raw link text
            st.code(f"python -m lfx_engine train {wanted}", language="bash")
    name = state.choose("model", "Encoder", names, widget_key=f"{page}_model", format_func=labels.get,
                        container=box, help="A trained model, listed by experiment (consistency checks, pretext "
                                            "tasks, disentanglement, your own); its encoder is explained.")
    return explorer.choice(name)


#: Headings of the zoo's experiments in the model selector; other experiments show their own name.
EXPERIMENT_TITLES = {"consistency": "Consistency", "pretext": "Pretext", "disvae": "Disentanglement"}


def experiment_title(model: ModelChoice) -> str:
    """The experiment a model belongs to, as the model selector groups it ('Your models' without one)."""
    if not model.experiment or model.source not in BUILTIN_SOURCES:
        return "Your models"
    return EXPERIMENT_TITLES.get(model.experiment, model.experiment)


def by_experiment(models: Sequence[ModelChoice]) -> list[ModelChoice]:
    """``models`` grouped by experiment (groups in order of first appearance, the order kept inside a group).

    The first model stays first, so the default selection does not change.
    """
    order = list(dict.fromkeys(experiment_title(m) for m in models))
    return sorted(models, key=lambda m: order.index(experiment_title(m)))


def grouped_label(model: ModelChoice) -> str:
    """The selector's label: the experiment first, then the model's own label without repeating it."""
    label = model.label.replace(f", {model.experiment} (", " (") if model.experiment else model.label
    return f"{experiment_title(model)} › {label}"


def selector_labels(models: Sequence[ModelChoice]) -> dict[str, str]:
    """Grouped labels by model name; two models with the same label are told apart by their names."""
    labels = {m.name: grouped_label(m) for m in models}
    counts = pd.Series(list(labels.values()), dtype=object).value_counts()
    return {name: f"{label} · {name}" if counts[label] > 1 else label for name, label in labels.items()}


_SAMPLE_MEMORY = "_lfx_sample_per_dataset"
_SAMPLE_DATASET = "_lfx_sample_dataset"


def current_sample(name: str) -> int:
    """The shared test-sample index, clamped to the model's test split (0 when unset).

    The sample is remembered per dataset: switching to a dataset whose test split lacks the current sample
    shows #0 there (with a note, not a warning: nothing is wrong), and switching back restores the sample.
    """
    explorer = get_explorer()
    size = explorer.test_size(name)
    dataset = explorer.choice(name).dataset
    memory: dict[str, int] = st.session_state.setdefault(_SAMPLE_MEMORY, {})
    previous = st.session_state.get(_SAMPLE_DATASET)
    index = state.get("sample")
    switched = previous is not None and previous != dataset
    if switched and isinstance(index, int):
        assert previous is not None  # switched
        memory[previous] = index
        remembered = memory.get(dataset)
        if isinstance(remembered, int) and 0 <= remembered < size:
            index = remembered
    st.session_state[_SAMPLE_DATASET] = dataset
    if not isinstance(index, int) or not 0 <= index < size:
        if index is not None and switched:
            assert previous is not None  # switched
            st.info(f"Sample #{index} is not in this test split (0..{size - 1}); showing #0. Switching back to "
                    f"{explorer.dataset_title(previous)} brings #{index} back.")
        elif index is not None:
            st.warning(f"Sample #{index} does not exist in this test split (0..{size - 1}); showing #0.")
        index = 0
    if index != state.get("sample"):
        state.set("sample", index)
    memory[dataset] = index
    return index


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """Run ``fn`` and return (result, seconds)."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def dataset_ready(explorer: Explorer, dataset: str, title: str) -> bool:
    """True when ``dataset``'s files are present; otherwise show why and the command that fetches it."""
    if explorer.dataset_available(dataset):
        return True
    row = next(r for r in explorer.dataset_status() if r["dataset"] == dataset)
    st.error(f"{title} is not available: {row['problem'] or 'files not found'}. Download it (needs internet) with:")
    st.code(row["fetch_command"], language="bash")
    st.caption("or point `LFX_DATA_DIR` at a folder that holds the files.")
    return False
