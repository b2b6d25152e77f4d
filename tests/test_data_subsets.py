"""Balanced subsets (METHOD.md §6), Split.subset, the 28->32 resize, ECG subsets on generated data."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lfx_engine.data import (
    Split,
    balanced_subset,
    balanced_subset_indices,
    clear_cache,
    ecg_example_subsets,
    load_split,
    resize_to_32,
)
from lfx_engine.errors import ParameterError


def _reference(labels: list[int], n: int, k_classes: int) -> list[int]:
    """Brute-force statement of the rule: example k is the (k // K)-th occurrence of class k % K."""
    out = []
    for k in range(n):
        occurrences = [i for i, label in enumerate(labels) if label == k % k_classes]
        out.append(occurrences[k // k_classes])
    return out


def test_rule_matches_brute_force() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 10, size=3000)
    indices = balanced_subset_indices(torch.from_numpy(labels), 1000, 10)
    assert indices.dtype == torch.int64 and indices.shape == (1000,)
    assert indices.tolist() == _reference(labels.tolist(), 1000, 10)
    assert np.bincount(labels[indices.numpy()]).tolist() == [100] * 10
    assert len(set(indices.tolist())) == 1000


def test_rule_for_100_classes_and_uneven_n() -> None:
    labels = np.random.default_rng(0).integers(0, 100, size=4000)
    indices = balanced_subset_indices(labels, 1000, 100)
    assert np.bincount(labels[indices.numpy()], minlength=100).tolist() == [10] * 100
    assert indices.tolist() == _reference(labels.tolist(), 1000, 100)
    # n not a multiple of K: the first n % K classes get one more example
    odd = balanced_subset_indices(labels, 205, 100)
    assert odd.tolist() == _reference(labels.tolist(), 205, 100)


def test_inputs_are_accepted_as_list_numpy_tensor_and_infer_k() -> None:
    labels = [2, 0, 1, 1, 0, 2, 0, 1, 2]
    expected = [1, 2, 0, 4, 3, 5]
    assert balanced_subset_indices(labels, 6).tolist() == expected
    assert balanced_subset_indices(np.array(labels), 6, 3).tolist() == expected
    assert balanced_subset_indices(torch.tensor(labels), 6, 3).tolist() == expected


def test_deterministic() -> None:
    labels = torch.randint(0, 10, (2000,))
    assert torch.equal(balanced_subset_indices(labels, 500, 10), balanced_subset_indices(labels, 500, 10))


@pytest.mark.parametrize("n, k_classes, labels", [
    (30, 2, [0] * 100 + [1] * 10),   # class 1 too rare
    (0, 2, [0, 1]),                   # empty subset
    (4, 0, [0, 1]),                   # no classes
])
def test_impossible_requests(n: int, k_classes: int, labels: list[int]) -> None:
    with pytest.raises(ParameterError):
        balanced_subset_indices(labels, n, k_classes)


def test_split_subset_composes_indices() -> None:
    split = Split(torch.arange(10.0).view(10, 1), torch.arange(10), {"z": torch.arange(10) * 2}, "toy", "train")
    first = split.subset([9, 7, 5, 3, 1])
    assert first.x.flatten().tolist() == [9, 7, 5, 3, 1]
    assert first.extra["z"].tolist() == [18, 14, 10, 6, 2]
    second = first.subset(torch.tensor([1, 4]))
    assert second.extra["indices"].tolist() == [7, 1]  # positions in the original split
    second.x.add_(100)  # subsets are fresh tensors
    assert split.x.flatten().tolist() == list(range(10))
    copy = split.clone()
    copy.x.zero_()
    assert split.x.sum() == 45


def test_resize_to_32() -> None:
    images = torch.rand(5, 1, 28, 28)
    out = resize_to_32(images)
    assert out.shape == (5, 1, 32, 32) and out.dtype == torch.float32
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.allclose(resize_to_32(torch.full((1, 28, 28), 0.25)), torch.full((1, 32, 32), 0.25))
    assert abs(float(out.mean()) - float(images.mean())) < 0.01
    with pytest.raises(ParameterError):
        resize_to_32(torch.rand(28, 28))


def _write_ecg(folder, n_train: int = 50, n_test: int = 150) -> np.ndarray:
    """Two UCR-style tsv files; classes cycle 1,1,2,3,1,4,5,... so about half are normal."""
    rng = np.random.default_rng(1)
    pattern = [1, 1, 2, 3, 1, 4, 5, 1, 2, 2]
    table = np.column_stack([
        np.resize(pattern, n_train + n_test), rng.normal(size=(n_train + n_test, 140)).round(6)
    ])
    for name, rows in (("ECG5000_TRAIN.tsv", table[:n_train]), ("ECG5000_TEST.tsv", table[n_train:])):
        with open(folder / name, "w") as handle:
            for row in rows:
                handle.write("\t".join([str(int(row[0]))] + [repr(float(v)) for v in row[1:]]) + "\n")
    return table


def test_ecg_splits_and_subsets_on_generated_data(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LFX_DATA_DIR", str(tmp_path))
    clear_cache()
    table = _write_ecg(tmp_path)
    n_normal = int((table[:, 0] == 1).sum())
    f_train, f_val = load_split("ecg5000", "features_train"), load_split("ecg5000", "features_val")
    assert len(f_val) == n_normal * 20 // 100 and len(f_train) + len(f_val) == n_normal
    e_train, e_test = load_split("ecg5000", "train"), load_split("ecg5000", "test")
    assert (len(e_train), len(e_test)) == (160, 40)
    # concatenation order: TRAIN rows then TEST rows
    beat = int(e_test.extra["beat_index"][0])
    assert np.allclose(e_test.x[0, :, 0].numpy(), table[beat, 1:].astype(np.float32))
    train, test = ecg_example_subsets(n_train=40, n_test=40)
    assert train.y.tolist() == [0, 1] * 20
    assert sorted(test.extra["indices"].tolist()) == list(range(40))
    with pytest.raises(ParameterError):
        ecg_example_subsets(n_test=41)
    balanced = balanced_subset("ecg5000", "examples_train", 40)
    assert torch.equal(balanced.extra["indices"], train.extra["indices"])
    clear_cache()
