"""A tiny but real model zoo for the app tests: real zoo recipes trained for 1-2 epochs on 64 examples.

Used by ``tests/test_app_pages.py`` (AppTest) and ``tests/browser`` (Playwright);
it needs the real datasets (``LFX_DATA_DIR`` or ``../shared/data``).
"""
from __future__ import annotations

import os
from pathlib import Path

#: (zoo entry, epochs, TracIn checkpoint every n epochs): an AE with TracIn checkpoints per image/series
#: dataset, a classifier and a VAE, so every page meets every kind of model.
ENTRIES = (
    ("mnist_dae_consistency", 2, 1),
    ("ecg5000_lstm_ae", 2, 1),
    ("mnist_pretext_classification_run1", 1, 10),
    ("mnist_betavae_b1_run1", 1, 10),
)
MAX_TRAIN = 64
#: What the Study pages need beyond ENTRIES: two complete MNIST pretext runs (mean ± std over runs, two
#: classifiers for the encoder-vs-full bars) and VAEs of both losses and two β.
STUDY_ENTRIES = tuple((f"mnist_pretext_{task}_run{run}", 1, 10) for run in (1, 2)
                      for task in ("reconstruction", "denoising", "inpainting", "classification")
                      if (task, run) != ("classification", 1)) + (
    ("mnist_btcvae_b5_run1", 1, 10),
    ("mnist_betavae_b1_run2", 1, 10),  # a second run: the run selector and the encoder must agree
)


def build_tiny_zoo(root: Path, data_dir: Path, entries=None) -> dict[str, str]:
    """Train the tiny zoo (``entries``, default ENTRIES) under ``root``; return the environment pointing at it."""
    import torch

    from lfx_engine.training.zoo import train_entry

    env = {"LFX_DATA_DIR": str(data_dir), "LFX_CHECKPOINT_DIR": str(root / "checkpoints"),
           "LFX_CACHE_DIR": str(root / "cache"), "LFX_DEVICE": "cpu"}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name, epochs, every in (ENTRIES if entries is None else entries):
            train_entry(name, epochs=epochs, max_train=MAX_TRAIN, out_dir=root / "checkpoints",
                        tracin_every=every, device="cpu")
    finally:
        torch.set_num_threads(threads)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return env


def find_real_data() -> Path | None:
    """``LFX_DATA_DIR`` or ``../shared/data`` when it holds the datasets, else None."""
    repo = Path(__file__).resolve().parents[2]
    env = os.environ.get("LFX_DATA_DIR")
    for candidate in ([Path(env)] if env else []) + [repo.parent / "shared" / "data"]:
        if candidate.is_dir() and any(candidate.iterdir()):
            return candidate.resolve()
    return None
