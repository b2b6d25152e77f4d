"""Registry: names, specs, split names, unknown names."""
from __future__ import annotations

import pytest
import torch

from lfx_engine.data import DatasetSpec, baseline, get_spec, list_datasets
from lfx_engine.errors import ParameterError


def test_registered_names() -> None:
    assert list_datasets() == ["mnist", "cifar10", "cifar100", "ecg5000", "dsprites"]


@pytest.mark.parametrize(
    "name, shape, n_classes, files",
    [
        ("mnist", (1, 28, 28), 10, ("mnist.npz",)),
        ("cifar10", (3, 32, 32), 10, ("cifar10.npz",)),
        ("cifar100", (3, 32, 32), 100, ("cifar100.npz",)),
        ("ecg5000", (140, 1), 2, ("ECG5000_TRAIN.tsv", "ECG5000_TEST.tsv")),
        ("dsprites", (1, 64, 64), 3, ("dsprites.npz",)),
    ],
)
def test_spec_fields(name: str, shape: tuple, n_classes: int, files: tuple) -> None:
    spec = get_spec(name)
    assert isinstance(spec, DatasetSpec)
    assert spec.name == name
    assert spec.input_shape == shape
    assert spec.n_classes == n_classes
    assert len(spec.class_names) == n_classes and len(set(spec.class_names)) == n_classes
    assert spec.files == files
    assert spec.source
    assert spec.fetch_command == f"python -m lfx_engine data fetch {name}"
    assert spec.baseline_description


def test_value_ranges_and_baseline_kinds() -> None:
    for name in ("mnist", "cifar10", "cifar100", "dsprites"):
        assert get_spec(name).value_range == (0.0, 1.0)
        assert get_spec(name).baseline_kind == "zeros"
    assert get_spec("ecg5000").value_range is None
    assert get_spec("ecg5000").baseline_kind == "mean_normal_train"


def test_cifar100_class_names_known_entries() -> None:
    names = get_spec("cifar100").class_names
    assert names[0] == "apple" and names[-1] == "worm" and names[58] == "pickup_truck"
    assert list(names) == sorted(names)  # the official fine labels are alphabetical


def test_unknown_dataset_lists_valid_names() -> None:
    with pytest.raises(ParameterError) as info:
        get_spec("imagenet")
    message = str(info.value)
    assert "imagenet" in message
    for name in list_datasets():
        assert name in message


def test_split_names_and_aliases() -> None:
    ecg = get_spec("ecg5000")
    assert ecg.resolve_split("train") == "examples_train"
    assert ecg.resolve_split("test") == "examples_test"
    assert ecg.resolve_split("features_val") == "features_val"
    assert get_spec("mnist").resolve_split("train") == "train"
    with pytest.raises(ParameterError, match="features_train"):
        ecg.resolve_split("validation")
    with pytest.raises(ParameterError, match="train, test"):
        get_spec("dsprites").resolve_split("val")


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100", "dsprites"])
def test_image_baselines_are_zero(name: str) -> None:
    x_bar = baseline(name)
    assert x_bar.shape == (1, *get_spec(name).input_shape)
    assert x_bar.dtype == torch.float32
    assert torch.count_nonzero(x_bar) == 0
