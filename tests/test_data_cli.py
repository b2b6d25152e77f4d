"""``python -m lfx_engine data list|fetch`` through lfx_engine.cli.main."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import lfx_engine.data.fetch as fetch_module
from lfx_engine.cli import main
from lfx_engine.errors import DatasetUnavailableError


def test_list_real_data(shared_data: Path, capsys) -> None:
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert str(shared_data) in out
    for name in ("mnist", "cifar10", "cifar100", "ecg5000", "dsprites"):
        assert name in out
    assert "x_train: (60000, 28, 28) uint8" in out
    assert "ECG5000_TEST.tsv: (4500, 141)" in out
    assert "imgs: (64834, 64, 64) uint8" in out


def test_list_empty_folder_says_missing_and_how_to_fix(tmp_path: Path, capsys) -> None:
    assert main(["data", "list", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.count("missing") == 5
    assert "python -m lfx_engine data fetch cifar100" in out
    assert str(tmp_path / "cifar100.npz") in out


def test_list_reports_malformed(tmp_path: Path, capsys) -> None:
    (tmp_path / "mnist.npz").write_bytes(b"garbage")
    np.savez(tmp_path / "cifar10.npz", x_train=np.zeros((2, 32, 32, 3), np.float32), y_train=np.zeros(2, np.uint8),
             x_test=np.zeros((1, 32, 32, 3), np.uint8), y_test=np.zeros(1, np.uint8))
    assert main(["data", "list", "--data-dir", str(tmp_path), "--verify"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("mnist") and "malformed" in line for line in lines)
    assert any(line.startswith("cifar10 ") and "malformed" in line for line in lines)


def test_fetch_command(tmp_path: Path, monkeypatch, capsys) -> None:
    rng = np.random.default_rng(0)
    arrays = (rng.integers(0, 256, (20, 28, 28), dtype=np.uint8), np.arange(20) % 10,
              rng.integers(0, 256, (10, 28, 28), dtype=np.uint8), np.arange(10) % 10)
    monkeypatch.setattr(fetch_module, "torchvision_arrays", lambda name, root: arrays)
    assert main(["data", "fetch", "mnist", "--data-dir", str(tmp_path)]) == 0
    assert (tmp_path / "mnist.npz").is_file()
    assert "sha256" in capsys.readouterr().out


def test_fetch_failure_exits_2_with_message(tmp_path: Path, monkeypatch, capsys) -> None:
    def offline(url, destination, desc=""):
        raise DatasetUnavailableError(f"could not download {url}: no network")

    monkeypatch.setattr(fetch_module, "download", offline)
    assert main(["data", "fetch", "dsprites", "--data-dir", str(tmp_path)]) == 2
    assert "could not download" in capsys.readouterr().err


def test_unknown_dataset_is_rejected(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["data", "fetch", "imagenet"])
    assert info.value.code == 2
    assert "mnist" in capsys.readouterr().err
