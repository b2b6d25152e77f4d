"""Conversions from the official formats round-trip through the readers; writes are atomic;
fetch orchestrates download -> convert -> atomic write -> verify (downloads replaced by generated data)."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import lfx_engine.data.fetch as fetch_module
from lfx_engine.data import clear_cache, load_split
from lfx_engine.atomic import atomic_write, atomic_write_many
from lfx_engine.data.convert import (
    convert_dsprites_archive,
    convert_torchvision_arrays,
    convert_ucr_tables,
    format_ucr_tsv,
    npz_writer,
    parse_ucr_text,
    text_writer,
)
from lfx_engine.data.fetch import fetch, official_dsprites_arrays, sha256, ucr_tables_from_zip
from lfx_engine.data.readers import read_bundle
from lfx_engine.errors import DatasetUnavailableError, ParameterError


@pytest.fixture
def data_folder(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("LFX_DATA_DIR", str(tmp_path))
    clear_cache()
    yield tmp_path
    clear_cache()


def _torchvision_like(name: str, n_train: int = 200, n_test: int = 100):
    """What torchvision gives: MNIST data as a uint8 tensor, CIFAR data as HWC numpy + list targets."""
    rng = np.random.default_rng(0)
    if name == "mnist":
        return (torch.from_numpy(rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)),
                torch.arange(n_train) % 10,
                torch.from_numpy(rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)),
                torch.arange(n_test) % 10)
    k = 100 if name == "cifar100" else 10
    return (rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8), [i % k for i in range(n_train)],
            rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8), [i % k for i in range(n_test)])


@pytest.mark.parametrize("name", ["mnist", "cifar10", "cifar100"])
def test_torchvision_conversion_round_trip(data_folder: Path, name: str) -> None:
    x_train, y_train, x_test, y_test = _torchvision_like(name)
    arrays = convert_torchvision_arrays(name, x_train, y_train, x_test, y_test)
    assert arrays["y_train"].dtype == np.uint8
    atomic_write(data_folder / f"{name}.npz", npz_writer(arrays))
    train, test = load_split(name, "train"), load_split(name, "test")
    c = 1 if name == "mnist" else 3
    assert train.x.shape == (200, c, 28 if name == "mnist" else 32, 28 if name == "mnist" else 32)
    assert test.x.dtype == torch.float32 and test.y.dtype == torch.int64
    # HWC -> CHW and /255: pixel (row 3, col 5, channel c) of image 7
    raw = np.asarray(x_train)[7]
    expected = raw[3, 5] if name == "mnist" else raw[3, 5, c - 1]
    assert train.x[7, c - 1, 3, 5].item() == pytest.approx(expected / 255.0)
    assert test.y.tolist() == [int(v) for v in y_test]


def test_cifar100_generated_bundle_has_100_classes(data_folder: Path) -> None:
    x_train, y_train, x_test, y_test = _torchvision_like("cifar100", 300, 200)
    np.savez(data_folder / "cifar100.npz", x_train=x_train, y_train=np.array(y_train, np.uint8),
             x_test=x_test, y_test=np.array(y_test, np.uint8))
    split = load_split("cifar100", "train")
    assert split.x.shape == (300, 3, 32, 32)
    assert torch.unique(split.y).tolist() == list(range(100))
    from lfx_engine.data import balanced_subset
    subset = balanced_subset("cifar100", "test", 200)
    assert torch.bincount(subset.y).tolist() == [2] * 100


def test_torchvision_conversion_rejects_bad_input() -> None:
    x_train, y_train, x_test, y_test = _torchvision_like("cifar10")
    with pytest.raises(ParameterError, match="shape"):
        convert_torchvision_arrays("cifar10", x_train[:, :, :, :1], y_train, x_test, y_test)
    with pytest.raises(ParameterError, match="labels"):
        convert_torchvision_arrays("cifar10", x_train, [11] * len(y_train), x_test, y_test)
    with pytest.raises(ParameterError):
        convert_torchvision_arrays("ecg5000", x_train, y_train, x_test, y_test)


def _ucr_table(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.integers(1, 6, n), rng.normal(size=(n, 140))])


def _as_text(table: np.ndarray, fmt: str) -> str:
    """The table in one of the UCR distribution formats (as the official files lay them out)."""
    if fmt == "tsv":
        return format_ucr_tsv(table)
    if fmt == "txt":
        return "\n".join("  ".join(f"{v:.16e}" for v in row) for row in table) + "\n"
    if fmt == "ts":
        header = "#comment\n@problemName ECG5000\n@timeStamps false\n@univariate true\n@classLabel true 1 2 3 4 5\n@data\n"
        return header + "\n".join(",".join(repr(float(v)) for v in row[1:]) + f":{int(row[0])}" for row in table) + "\n"
    attributes = "".join(f"@attribute att{i} numeric\n" for i in range(140))
    header = f"% comment\n@relation ECG5000\n{attributes}@attribute target {{'1','2','3','4','5'}}\n\n@data\n"
    return header + "\n".join(",".join(repr(float(v)) for v in row[1:]) + f",'{int(row[0])}'" for row in table) + "\n"


@pytest.mark.parametrize("fmt", ["tsv", "txt", "ts", "arff"])
def test_parse_ucr_formats(fmt: str) -> None:
    table = _ucr_table(7, 0)
    parsed = parse_ucr_text(_as_text(table, fmt), fmt)
    assert parsed.shape == (7, 141)
    assert np.array_equal(parsed, table)


def test_parse_ucr_rejects_ragged_and_unknown() -> None:
    with pytest.raises(ParameterError, match="lengths"):
        parse_ucr_text("1\t2\t3\n1\t2\n", "tsv")
    with pytest.raises(ParameterError, match="non-numeric"):
        parse_ucr_text("1\tx\n", "tsv")
    with pytest.raises(ParameterError, match="no data"):
        parse_ucr_text("@data\n", "ts")
    with pytest.raises(ParameterError, match="format"):
        parse_ucr_text("", "csv")


def test_ucr_conversion_round_trip_through_the_reader(data_folder: Path) -> None:
    train, test = convert_ucr_tables(_ucr_table(30, 1), _ucr_table(70, 2))
    atomic_write_many([(data_folder / "ECG5000_TRAIN.tsv", text_writer(format_ucr_tsv(train))),
                       (data_folder / "ECG5000_TEST.tsv", text_writer(format_ucr_tsv(test)))])
    bundle = read_bundle("ecg5000", data_folder)
    assert np.array_equal(bundle["train"], train) and np.array_equal(bundle["test"], test)  # exact round trip
    split = load_split("ecg5000", "examples_train")
    assert split.x.shape == (80, 140, 1)
    beats = np.concatenate([train, test])[split.extra["beat_index"].numpy()]
    assert np.array_equal(split.x[:, :, 0].numpy(), beats[:, 1:].astype(np.float32))
    assert torch.equal(split.extra["ucr_class"], torch.from_numpy(beats[:, 0].astype(np.int64)))


def test_ucr_conversion_rejects_bad_tables() -> None:
    good = _ucr_table(5, 0)
    with pytest.raises(ParameterError, match="class"):
        convert_ucr_tables(good, np.column_stack([np.full(5, 6.0), good[:, 1:]]))
    with pytest.raises(ParameterError, match="shape"):
        convert_ucr_tables(good[:, :100], good)


def _zip_bytes(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def test_ucr_tables_from_zip_prefers_tsv_and_accepts_ts_or_arff(tmp_path: Path) -> None:
    train, test = _ucr_table(4, 3), _ucr_table(6, 4)
    path = tmp_path / "ECG5000.zip"
    path.write_bytes(_zip_bytes({"ECG5000/ECG5000_TRAIN.ts": _as_text(train, "ts"),
                                 "ECG5000/ECG5000_TEST.arff": _as_text(test, "arff"),
                                 "ECG5000_TEST.txt": "not numbers",
                                 "README.md": "x"}))
    with pytest.raises(ParameterError):  # .txt is preferred to .arff and here it is garbage
        ucr_tables_from_zip(path)
    path.write_bytes(_zip_bytes({"ECG5000_TRAIN.ts": _as_text(train, "ts"),
                                 "ECG5000_TEST.arff": _as_text(test, "arff")}))
    got_train, got_test = ucr_tables_from_zip(path)
    assert np.array_equal(got_train, train) and np.array_equal(got_test, test)
    path.write_bytes(_zip_bytes({"ECG5000_TRAIN.ts": _as_text(train, "ts")}))
    with pytest.raises(ParameterError, match="ECG5000_TEST"):
        ucr_tables_from_zip(path)


def _official_dsprites(n: int = 30) -> dict[str, np.ndarray]:
    """DeepMind layout: 6 latent columns (colour first, constant), float64 values, int64 classes."""
    rng = np.random.default_rng(5)
    classes = np.column_stack([np.zeros(n, np.int64), np.arange(n) % 3] + [rng.integers(0, 6, n) for _ in range(4)])
    values = np.column_stack([np.ones(n), classes[:, 1] + 1.0, rng.random((n, 4))])
    return {"imgs": rng.integers(0, 2, (n, 64, 64), dtype=np.uint8), "latents_classes": classes,
            "latents_values": values}


def test_dsprites_conversion_round_trip(data_folder: Path) -> None:
    official = _official_dsprites()
    path = data_folder / "official.npz"
    np.savez(path, **official, metadata=np.array({"date": "April 2017"}, dtype=object))  # pickled, never loaded
    arrays = official_dsprites_arrays(path)
    assert arrays["latents_classes"].shape == (30, 5) and arrays["latents_classes"].dtype == np.int16
    assert arrays["latents_values"].dtype == np.float32
    assert np.array_equal(arrays["original_indices"], np.arange(30))
    atomic_write(data_folder / "dsprites.npz", npz_writer(arrays))
    train, test = load_split("dsprites", "train"), load_split("dsprites", "test")
    assert (len(train), len(test)) == (27, 3)
    rows = test.extra["original_indices"].numpy()
    assert np.array_equal(test.x[:, 0].numpy(), official["imgs"][rows].astype(np.float32))
    assert np.array_equal(test.y.numpy(), official["latents_classes"][rows, 1])
    assert np.allclose(test.extra["latents_values"].numpy(), official["latents_values"][rows, 1:])


def test_dsprites_conversion_rejects_non_binary() -> None:
    official = _official_dsprites()
    with pytest.raises(ParameterError, match="binary"):
        convert_dsprites_archive(official["imgs"] * 255, official["latents_classes"], official["latents_values"])


# ----------------------------------------------------------------------------- atomic writes

class Boom(RuntimeError):
    pass


def _failing_writer(handle) -> None:
    handle.write(b"partial content" * 1000)
    raise Boom("disk full")


def test_atomic_write_failure_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(Boom):
        atomic_write(tmp_path / "mnist.npz", _failing_writer)
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_failure_keeps_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "mnist.npz"
    target.write_bytes(b"old")
    with pytest.raises(Boom):
        atomic_write(target, _failing_writer)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["mnist.npz"]


def test_atomic_write_many_is_all_or_nothing(tmp_path: Path) -> None:
    with pytest.raises(Boom):
        atomic_write_many([(tmp_path / "a.tsv", text_writer("a")), (tmp_path / "b.tsv", _failing_writer)])
    assert list(tmp_path.iterdir()) == []
    written = atomic_write_many([(tmp_path / "a.tsv", text_writer("a")), (tmp_path / "sub" / "b.tsv", text_writer("b"))])
    assert [p.read_text() for p in written] == ["a", "b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tsv", "sub"]


def test_atomic_write_cleans_up_after_interrupt(tmp_path: Path) -> None:
    def interrupted(handle) -> None:
        handle.write(b"x")
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "x.npz", interrupted)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- fetch orchestration

def test_fetch_torchvision_dataset(tmp_path: Path, monkeypatch, capsys) -> None:
    calls = []

    def fake_torchvision(name, root):
        calls.append((name, Path(root).parent))
        return _torchvision_like(name, 50, 20)

    monkeypatch.setattr(fetch_module, "torchvision_arrays", fake_torchvision)
    paths = fetch("cifar100", tmp_path)
    assert paths == [tmp_path / "cifar100.npz"]
    assert calls == [("cifar100", tmp_path)]  # downloads into a temporary folder inside the data dir
    out = capsys.readouterr().out
    assert sha256(paths[0]) in out and "cifar100: ok" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar100.npz"]  # temp folder removed
    assert read_bundle("cifar100", tmp_path)["x_train"].shape == (50, 32, 32, 3)
    # present and valid: skipped unless forced
    fetch("cifar100", tmp_path)
    assert "already present" in capsys.readouterr().out and len(calls) == 1
    fetch("cifar100", tmp_path, force=True)
    assert len(calls) == 2


def test_fetch_replaces_a_corrupt_file(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "mnist.npz").write_bytes(b"garbage")
    monkeypatch.setattr(fetch_module, "torchvision_arrays", lambda name, root: _torchvision_like(name, 30, 10))
    fetch("mnist", tmp_path)
    assert read_bundle("mnist", tmp_path)["x_test"].shape == (10, 28, 28)


def test_fetch_ecg_from_zip(tmp_path: Path, monkeypatch, capsys) -> None:
    train, test = _ucr_table(10, 6), _ucr_table(40, 7)
    urls = []

    def fake_download(url, destination, desc=""):
        urls.append(url)
        if len(urls) == 1:
            raise DatasetUnavailableError(f"could not download {url}: 404")
        Path(destination).write_bytes(_zip_bytes({"ECG5000_TRAIN.ts": _as_text(train, "ts"),
                                                  "ECG5000_TEST.ts": _as_text(test, "ts")}))
        return Path(destination)

    monkeypatch.setattr(fetch_module, "download", fake_download)
    paths = fetch("ecg5000", tmp_path)
    assert len(urls) == 2  # the first URL failed, the mirror was used
    assert [p.name for p in paths] == ["ECG5000_TRAIN.tsv", "ECG5000_TEST.tsv"]
    bundle = read_bundle("ecg5000", tmp_path)
    assert np.array_equal(bundle["train"], train) and np.array_equal(bundle["test"], test)
    assert capsys.readouterr().out.count("sha256") == 2


def test_fetch_dsprites(tmp_path: Path, monkeypatch) -> None:
    def fake_download(url, destination, desc=""):
        assert "dsprites" in url
        np.savez(destination, **_official_dsprites(20), metadata=np.array({"a": 1}, dtype=object))
        return Path(destination)

    monkeypatch.setattr(fetch_module, "download", fake_download)
    fetch("dsprites", tmp_path)
    assert read_bundle("dsprites", tmp_path)["imgs"].shape == (20, 64, 64)


def test_fetch_failures_are_clear_and_leave_nothing(tmp_path: Path, monkeypatch) -> None:
    def offline(url, destination, desc=""):
        raise DatasetUnavailableError(f"could not download {url}: no network")

    monkeypatch.setattr(fetch_module, "download", offline)
    with pytest.raises(DatasetUnavailableError, match="no network"):
        fetch("dsprites", tmp_path)

    def unexpected(url, destination, desc=""):
        Path(destination).write_bytes(b"<html>not a zip</html>")
        return Path(destination)

    monkeypatch.setattr(fetch_module, "download", unexpected)
    with pytest.raises(DatasetUnavailableError, match="unexpected content"):
        fetch("ecg5000", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_fetch_removes_files_that_fail_verification(tmp_path: Path) -> None:
    def bad_builder(spec, folder, work, log):
        return [atomic_write(folder / "mnist.npz", text_writer("not an npz"))]

    with pytest.raises(DatasetUnavailableError, match="failed verification"):
        fetch("mnist", tmp_path, builder=bad_builder)
    assert list(tmp_path.iterdir()) == []


def test_download_reports_unreachable_url(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailableError, match="could not download"):
        fetch_module.download("file:///nonexistent/ECG5000.zip", tmp_path / "x.zip")
    assert not (tmp_path / "x.zip").exists()
