"""The real datasets load with the documented shapes, dtypes, ranges, sizes and split rules.

Skipped when the real data folder is absent (see the ``shared_data`` fixture).
"""
from __future__ import annotations

import pytest
import torch

from lfx_engine.data import (
    balanced_subset,
    baseline,
    clear_cache,
    ecg_example_subsets,
    holdout_split,
    load_split,
)


@pytest.fixture(autouse=True)
def _free_memory():
    yield
    clear_cache()


def _check_images(split, n: int, shape: tuple, n_classes: int) -> None:
    assert split.x.shape == (n, *shape)
    assert split.x.dtype == torch.float32 and split.x.is_contiguous()
    assert split.y.shape == (n,) and split.y.dtype == torch.int64
    assert float(split.x.min()) >= 0.0 and float(split.x.max()) <= 1.0
    assert float(split.x.max()) == 1.0  # scaled by 1/255, not left in 0..255
    assert torch.unique(split.y).tolist() == list(range(n_classes))


def test_mnist(shared_data) -> None:
    train, test = load_split("mnist", "train"), load_split("mnist", "test")
    _check_images(train, 60000, (1, 28, 28), 10)
    _check_images(test, 10000, (1, 28, 28), 10)
    assert torch.bincount(test.y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_cifar10(shared_data) -> None:
    test = load_split("cifar10", "test")
    _check_images(test, 10000, (3, 32, 32), 10)
    assert torch.bincount(test.y).tolist() == [1000] * 10
    clear_cache()
    train = load_split("cifar10", "train")
    _check_images(train, 50000, (3, 32, 32), 10)
    assert torch.bincount(train.y).tolist() == [5000] * 10


def test_cache_returns_the_same_tensors(shared_data) -> None:
    first = load_split("mnist", "test")
    assert load_split("mnist", "test") is first
    clear_cache()
    assert load_split("mnist", "test") is not first


def test_ecg_splits(shared_data) -> None:
    f_train, f_val, f_test = (load_split("ecg5000", s) for s in ("features_train", "features_val", "features_test"))
    e_train, e_test = load_split("ecg5000", "examples_train"), load_split("ecg5000", "examples_test")
    assert (len(f_train), len(f_val), len(f_test), len(e_train), len(e_test)) == (2336, 583, 2081, 4000, 1000)
    for split in (f_train, f_val, f_test, e_train, e_test):
        assert split.x.shape == (len(split), 140, 1) and split.x.dtype == torch.float32
        assert split.y.dtype == torch.int64
        assert torch.equal(split.y, (split.extra["ucr_class"] != 1).long())
    assert f_train.y.sum() == 0 and f_val.y.sum() == 0 and torch.all(f_test.y == 1)
    assert torch.all(f_test.extra["ucr_class"] >= 2)
    # features: normals split disjointly; examples: a partition of all 5000 beats
    normals = torch.cat([f_train.extra["beat_index"], f_val.extra["beat_index"]])
    assert len(torch.unique(normals)) == 2919
    beats = torch.cat([e_train.extra["beat_index"], e_test.extra["beat_index"]])
    assert torch.equal(torch.sort(beats).values, torch.arange(5000))
    assert int(e_train.y.sum() + e_test.y.sum()) == 2081
    # UCR TRAIN rows (500) come first: beat 0 is the first row of ECG5000_TRAIN.tsv
    first = (shared_data / "ECG5000_TRAIN.tsv").read_text().split("\n", 1)[0].split("\t")
    row = e_train.x[e_train.extra["beat_index"] == 0]
    if len(row) == 0:
        row = e_test.x[e_test.extra["beat_index"] == 0]
    assert torch.allclose(row.flatten()[:3], torch.tensor([float(v) for v in first[1:4]]))
    # aliases
    assert load_split("ecg5000", "train") is e_train and load_split("ecg5000", "test") is e_test


def test_ecg_split_matches_random_split(shared_data) -> None:
    kept, held = holdout_split(2919, 20, 42)
    reference = torch.utils.data.random_split(range(2919), [2336, 583], generator=torch.Generator().manual_seed(42))
    assert kept.tolist() == list(reference[0].indices) and held.tolist() == list(reference[1].indices)


def test_ecg_baseline_is_mean_of_normal_training_beats(shared_data) -> None:
    x_bar = baseline("ecg5000")
    assert x_bar.shape == (1, 140, 1)
    assert torch.allclose(x_bar, load_split("ecg5000", "features_train").x.mean(0, keepdim=True))
    x_bar.add_(1.0)  # a fresh tensor: modifying it leaves the next call intact
    assert torch.allclose(baseline("ecg5000"), x_bar - 1.0)


def test_ecg_example_subsets(shared_data) -> None:
    train, test = ecg_example_subsets()
    assert len(train) == 1000 and len(test) == 1000
    assert train.y.tolist() == [0, 1] * 500
    full_test = load_split("ecg5000", "examples_test")
    assert torch.equal(torch.sort(test.extra["indices"]).values, torch.arange(1000))
    assert not torch.equal(test.extra["indices"], torch.arange(1000))
    assert torch.equal(test.x, full_test.x[test.extra["indices"]])
    again, _ = ecg_example_subsets()
    assert torch.equal(again.extra["indices"], train.extra["indices"])
    assert not torch.equal(ecg_example_subsets(seed=7)[1].extra["indices"], test.extra["indices"])


def test_mnist_balanced_subset(shared_data) -> None:
    subset = balanced_subset("mnist", "test", 1000)
    assert subset.x.shape == (1000, 1, 28, 28)
    assert subset.y.tolist() == list(range(10)) * 100
    labels = load_split("mnist", "test").y
    for k in (0, 1, 9, 10, 57, 999):
        occurrences = torch.nonzero(labels == k % 10).flatten()
        assert subset.extra["indices"][k] == occurrences[k // 10]


def test_dsprites(shared_data) -> None:
    test = load_split("dsprites", "test")
    assert test.x.shape == (6483, 1, 64, 64) and test.x.dtype == torch.float32
    assert set(torch.unique(test.x).tolist()) == {0.0, 1.0}
    assert test.extra["latents_classes"].shape == (6483, 5)
    assert test.extra["latents_values"].shape == (6483, 5)
    assert torch.equal(test.y, test.extra["latents_classes"][:, 0])
    assert set(test.y.tolist()) == {0, 1, 2}
    _, held = holdout_split(64834, 10, 1)
    assert len(held) == 6483
    clear_cache()
    train = load_split("dsprites", "train")
    assert train.x.shape == (58351, 1, 64, 64)
    both = torch.cat([train.extra["original_indices"], test.extra["original_indices"]])
    assert len(torch.unique(both)) == 64834
