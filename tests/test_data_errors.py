"""Missing or malformed datasets raise one clear DatasetUnavailableError (never a raw traceback)."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from lfx_engine.data import clear_cache, load_split, list_datasets, get_spec
from lfx_engine.data.readers import read_bundle
from lfx_engine.errors import DatasetUnavailableError, LFXError

FIX = "python -m lfx_engine data fetch"


@pytest.fixture
def data_folder(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("LFX_DATA_DIR", str(tmp_path))
    clear_cache()
    yield tmp_path
    clear_cache()


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def _mnist_arrays(n: int = 20) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), "y_train": np.arange(n, dtype=np.uint8) % 10,
        "x_test": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), "y_test": np.arange(n, dtype=np.uint8) % 10,
    }


def _assert_clear(info: pytest.ExceptionInfo, name: str, path: Path) -> None:
    message = str(info.value)
    assert isinstance(info.value, LFXError)
    assert repr(name) in message or name in message
    assert str(path) in message
    assert f"{FIX} {name}" in message
    assert "LFX_DATA_DIR" in message
    assert "Traceback" not in message


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100", "ecg5000", "dsprites"])
def test_missing_dataset(data_folder: Path, name: str) -> None:
    spec = get_spec(name)
    with pytest.raises(DatasetUnavailableError) as info:
        load_split(name, spec.splits[0])
    for path in spec.paths(data_folder):
        _assert_clear(info, name, path)
    assert "missing" in str(info.value)


def test_ecg_one_file_missing(data_folder: Path) -> None:
    (data_folder / "ECG5000_TRAIN.tsv").write_text("1\t" + "\t".join(["0.5"] * 140) + "\n")
    with pytest.raises(DatasetUnavailableError) as info:
        load_split("ecg5000", "features_train")
    _assert_clear(info, "ecg5000", data_folder / "ECG5000_TEST.tsv")
    assert "ECG5000_TRAIN.tsv (found)" in str(info.value)


def _corrupt_npz_cases() -> dict[str, bytes]:
    good = _npz_bytes(**_mnist_arrays())
    arrays = _mnist_arrays()
    bad_shape = dict(arrays, x_train=np.zeros((20, 32, 32), np.uint8))
    bad_dtype = dict(arrays, x_train=arrays["x_train"].astype(np.float32))
    bad_labels = dict(arrays, y_train=np.full(20, 10, np.uint8))
    float_labels = dict(arrays, y_train=np.zeros(20, np.float32))
    short_labels = dict(arrays, y_train=np.zeros(19, np.uint8))
    bare_npy = io.BytesIO()
    np.save(bare_npy, arrays["x_train"])
    return {
        "truncated": good[: len(good) // 2],
        "truncated_tail": good[:-30],
        "flipped_bytes": good[:2000] + bytes(b ^ 0xFF for b in good[2000:2400]) + good[2400:],
        "garbage": np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "empty": b"",
        "wrong_keys": _npz_bytes(images=arrays["x_train"], labels=arrays["y_train"]),
        "bad_shape": _npz_bytes(**bad_shape),
        "bad_dtype": _npz_bytes(**bad_dtype),
        "label_out_of_range": _npz_bytes(**bad_labels),
        "float_labels": _npz_bytes(**float_labels),
        "length_mismatch": _npz_bytes(**short_labels),
        "bare_npy": bare_npy.getvalue(),
        "pickled_object": _npz_bytes(x_train=np.array([{"a": 1}], dtype=object), y_train=arrays["y_train"],
                                     x_test=arrays["x_test"], y_test=arrays["y_test"]),
    }


@pytest.mark.parametrize("case", list(_corrupt_npz_cases()))
def test_corrupt_npz(data_folder: Path, case: str) -> None:
    path = data_folder / "mnist.npz"
    path.write_bytes(_corrupt_npz_cases()[case])
    with pytest.raises(DatasetUnavailableError) as info:
        load_split("mnist", "train")
    _assert_clear(info, "mnist", path)
    assert "malformed" in str(info.value) or "truncated" in str(info.value)


def test_wrong_keys_message_names_the_keys(data_folder: Path) -> None:
    (data_folder / "cifar10.npz").write_bytes(_npz_bytes(images=np.zeros((2, 32, 32, 3), np.uint8)))
    with pytest.raises(DatasetUnavailableError, match="missing array.*x_train.*found images"):
        load_split("cifar10", "test")


def test_valid_generated_mnist_loads(data_folder: Path) -> None:
    arrays = _mnist_arrays()
    (data_folder / "mnist.npz").write_bytes(_npz_bytes(**arrays))
    split = load_split("mnist", "test")
    assert split.x.shape == (20, 1, 28, 28)
    assert np.allclose(split.x[:, 0].numpy() * 255, arrays["x_test"])


def _ecg_row(label: str = "1", n: int = 140) -> str:
    return "\t".join([label] + ["0.25"] * n)


@pytest.mark.parametrize("case, text", [
    ("truncated_line", _ecg_row() + "\n" + _ecg_row()[:100]),
    ("garbage_text", "hello\tworld\n" * 3),
    ("binary_garbage", "\x00\xff\xfe" * 50),
    ("empty", ""),
    ("too_few_columns", _ecg_row(n=139) + "\n"),
    ("bad_class", _ecg_row("7") + "\n"),
    ("fractional_class", _ecg_row("1.5") + "\n"),
    ("nan_value", _ecg_row().replace("0.25", "nan", 1) + "\n"),
])
def test_corrupt_ecg(data_folder: Path, case: str, text: str) -> None:
    (data_folder / "ECG5000_TRAIN.tsv").write_text(_ecg_row() + "\n" + _ecg_row("2") + "\n")
    bad = data_folder / "ECG5000_TEST.tsv"
    bad.write_bytes(text.encode("latin-1"))
    with pytest.raises(DatasetUnavailableError) as info:
        load_split("ecg5000", "examples_test")
    _assert_clear(info, "ecg5000", bad)


def _dsprites_arrays(n: int = 12) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(2)
    return {
        "imgs": rng.integers(0, 2, (n, 64, 64), dtype=np.uint8),
        "latents_classes": np.column_stack([np.arange(n) % 3] + [np.zeros(n, int)] * 4).astype(np.int16),
        "latents_values": rng.random((n, 5)).astype(np.float32),
        "original_indices": np.arange(n, dtype=np.int64),
    }


@pytest.mark.parametrize("case", ["not_binary", "missing_key", "latents_shape", "shape_out_of_range", "truncated"])
def test_corrupt_dsprites(data_folder: Path, case: str) -> None:
    arrays = _dsprites_arrays()
    if case == "not_binary":
        arrays["imgs"] = arrays["imgs"] * 255
    elif case == "missing_key":
        del arrays["original_indices"]
    elif case == "latents_shape":
        arrays["latents_values"] = arrays["latents_values"][:, :4]
    elif case == "shape_out_of_range":
        arrays["latents_classes"][0, 0] = 5
    payload = _npz_bytes(**arrays)
    path = data_folder / "dsprites.npz"
    path.write_bytes(payload[: len(payload) // 3] if case == "truncated" else payload)
    with pytest.raises(DatasetUnavailableError) as info:
        load_split("dsprites", "test")
    _assert_clear(info, "dsprites", path)


def test_read_bundle_uses_the_same_error(tmp_path: Path) -> None:
    for name in list_datasets():
        with pytest.raises(DatasetUnavailableError, match=FIX):
            read_bundle(name, tmp_path)
