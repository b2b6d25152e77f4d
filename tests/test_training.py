"""Trainer, checkpoint IO (safetensors only, atomic, verified), zoo manifest and the train/zoo CLI."""
from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import lfx_engine.training.io as ckio
import lfx_engine.training.zoo as zoo
from lfx_engine.cli import main
from lfx_engine.errors import CheckpointError, ParameterError
from lfx_engine.models import build_model
from lfx_engine.training import (
    ZOO,
    Objective,
    evaluate,
    fit,
    load_checkpoint,
    load_entry,
    load_state_dict,
    make_objective,
    read_checkpoint_metadata,
    read_manifest,
    save_checkpoint,
    select_entries,
    tracin_checkpoint_paths,
    update_manifest,
)

# arch, kwargs, task, input shape, classes (None: unlabelled)
FAMILIES = [
    ("mnist_ae", {"pretext": "denoising"}, "denoising", (1, 28, 28), None),
    ("mnist_classifier", {}, "classification", (1, 28, 28), 10),
    ("cifar_ae", {"pretext": "inpainting"}, "inpainting", (3, 32, 32), None),
    ("cifar_classifier", {"n_classes": 100}, "classification", (3, 32, 32), 100),
    ("ecg_lstm_ae", {}, "reconstruction", (140, 1), None),
    ("vae_mnist32", {}, "betavae", (1, 32, 32), None),
    ("vae_dsprites", {}, "btcvae", (1, 64, 64), None),
    ("vae_cifar", {}, "btcvae", (3, 32, 32), None),
]


def _data(shape, classes, n=64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *shape, generator=gen)
    if shape == (140, 1):
        x = x * 4 - 2
    y = torch.randint(0, classes, (n,), generator=gen) if classes else None
    return x, y


def _outputs(model, x):
    with torch.no_grad():
        out = model(x)
        return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("arch,kwargs,task,shape,classes", FAMILIES, ids=[f[0] + "-" + f[2] for f in FAMILIES])
def test_train_save_load_round_trip(tmp_path, arch, kwargs, task, shape, classes):
    x, y = _data(shape, classes)
    vx, vy = _data(shape, classes, n=16, seed=1)
    torch.manual_seed(0)
    model = build_model(arch, **kwargs)
    objective = make_objective(task, model, beta=4.0, dataset_size=64)
    seen = []
    result = fit(model, x, y, vx, vy, objective, epochs=2, batch_size=32, seed=3, device="cpu",
                 progress=lambda *a: seen.append(a))
    assert not model.training
    assert result.epochs_trained == 2 and len(result.history) == 2 and [s[0] for s in seen] == [1, 2]
    assert all(torch.isfinite(torch.tensor([h["train_loss"], h["val_loss"]])).all() for h in result.history)
    assert result.best_val_loss == min(h["val_loss"] for h in result.history)
    assert result.tracin_checkpoints == []
    saved = save_checkpoint(model, tmp_path / "m.safetensors", {"note": "test"})
    assert saved.size_bytes == (tmp_path / "m.safetensors").stat().st_size
    loaded = load_checkpoint(saved.path, arch, expected_sha256=saved.sha256)
    assert not loaded.training and type(loaded) is type(model)
    assert loaded.checkpoint_metadata["metadata"] == {"note": "test"}
    assert torch.equal(_outputs(model, vx), _outputs(loaded, vx))
    assert torch.equal(model.encoder(vx), loaded.encoder(vx))
    if classes:
        assert "accuracy" in result.best_val_components


def test_fp16_storage_reloads_within_tolerance(tmp_path):
    model = build_model("cifar_ae").eval()
    full = save_checkpoint(model, tmp_path / "f32.safetensors")
    half = save_checkpoint(model, tmp_path / "f16.safetensors", storage_dtype="float16")
    assert half.size_bytes < 0.55 * full.size_bytes
    loaded = load_checkpoint(half.path)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    assert read_checkpoint_metadata(half.path)["storage_dtype"] == "float16"
    x = torch.rand(4, 3, 32, 32)
    assert torch.allclose(_outputs(model, x), _outputs(loaded, x), atol=5e-3)
    with pytest.raises(ParameterError):
        save_checkpoint(model, tmp_path / "x.safetensors", storage_dtype="int8")


def test_tracin_checkpoints_written_and_listed(tmp_path):
    x, _ = _data((1, 28, 28), None, n=32)
    model = build_model("mnist_ae")
    objective = make_objective("denoising", model)
    result = fit(model, x, None, x[:8], None, objective, epochs=3, batch_size=16, seed=0, device="cpu",
                 tracin_every=1, tracin_dir=tmp_path / "tracin", patience=None)
    assert result.tracin_epochs == [0, 1, 2]
    assert [Path(p).name for p in result.tracin_checkpoints] == [f"epoch_00{i}.safetensors" for i in range(3)]
    states = [load_state_dict(p)[0] for p in result.tracin_checkpoints]
    assert not torch.equal(states[0]["encoder.lin.2.weight"], states[2]["encoder.lin.2.weight"])
    assert load_state_dict(result.tracin_checkpoints[1])[1]["metadata"]["epoch"] == 1
    # default cadence: after epochs 0, 10, 20, ... -> only epoch 0 within 3 epochs
    model = build_model("mnist_ae")
    result = fit(model, x, None, x[:8], None, objective, epochs=3, batch_size=16, seed=0, device="cpu",
                 tracin_dir=tmp_path / "t10")
    assert result.tracin_epochs == [0]


class _WorseningObjective(Objective):
    """Held-out loss that rises every evaluation, to exercise early stopping."""

    name = "worsening"

    def __init__(self):
        self.calls = 0

    def train_loss(self, model, x, y):
        return ((model(x) - x) ** 2).mean(), {}

    def eval_loss(self, model, x, y, generator):
        self.calls += 1
        return torch.tensor(float(self.calls)), {}


def test_early_stopping_restores_best_weights():
    x, _ = _data((1, 28, 28), None, n=32)
    model = build_model("mnist_ae", pretext="reconstruction")
    snapshots = []
    result = fit(model, x, None, x[:8], None, _WorseningObjective(), epochs=20, batch_size=16, seed=0,
                 device="cpu", patience=2,
                 progress=lambda *a: snapshots.append({k: v.clone() for k, v in model.state_dict().items()}))
    assert result.epochs_trained == 3 and result.best_epoch == 0 and result.stopped_early
    for key, value in model.state_dict().items():
        assert torch.equal(value, snapshots[0][key])


def test_training_is_seeded_and_evaluation_is_reproducible():
    x, _ = _data((1, 28, 28), None, n=48)
    weights = []
    for _ in range(2):
        torch.manual_seed(5)
        model = build_model("mnist_ae", pretext="inpainting")
        fit(model, x, None, x[:8], None, make_objective("inpainting", model), epochs=1, batch_size=16, seed=7,
            device="cpu")
        weights.append(model.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    objective = make_objective("inpainting", model)
    first = evaluate(model, x, None, objective, seed=1, batch_size=20)
    assert first == evaluate(model, x, None, objective, seed=1, batch_size=20)
    plain = evaluate(model, x, None, make_objective("reconstruction", build_model("mnist_ae", pretext="reconstruction")),
                     seed=1)
    assert plain["loss"] != first["loss"]


def test_fit_refuses_bad_arguments():
    x, y = _data((1, 28, 28), 10, n=8)
    model = build_model("mnist_classifier")
    objective = make_objective("classification", model)
    with pytest.raises(ParameterError, match="epochs"):
        fit(model, x, y, x, y, objective, epochs=0, batch_size=4, device="cpu")
    with pytest.raises(ParameterError, match="labels"):
        fit(model, x, None, x, None, objective, epochs=1, batch_size=4, device="cpu")
    with pytest.raises(ParameterError, match="pretext"):
        make_objective("denoising", build_model("mnist_ae", pretext="inpainting"))
    with pytest.raises(ParameterError, match="beta"):
        make_objective("betavae", build_model("vae_mnist32"), beta=0.0)


# --------------------------------------------------------------------------- checkpoint safety


@pytest.fixture
def good_checkpoint(tmp_path):
    model = build_model("mnist_ae")
    return model, save_checkpoint(model, tmp_path / "good.safetensors")


class _Boom:
    """Unpickling this object would create a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def no_unpickling(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("something tried to unpickle a checkpoint")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)


def test_foreign_files_are_refused_without_unpickling(tmp_path, no_unpickling):
    marker = tmp_path / "pwned"
    pkl = tmp_path / "evil.safetensors"
    pkl.write_bytes(pickle.dumps(_Boom(str(marker)), protocol=4))
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(pkl, "mnist_ae")
    zipped = tmp_path / "torch_save.pt"
    torch.save({"w": torch.zeros(3)}, zipped)
    with pytest.raises(CheckpointError, match="zip"):
        load_checkpoint(zipped, "mnist_ae")
    noise = tmp_path / "random.safetensors"
    noise.write_bytes(os.urandom(4096))
    with pytest.raises(CheckpointError):
        load_checkpoint(noise, "mnist_ae")
    plain = tmp_path / "plain.safetensors"        # a valid safetensors file, but not ours
    save_file({"w": torch.zeros(3)}, str(plain))
    with pytest.raises(CheckpointError, match="not an LFX checkpoint"):
        load_checkpoint(plain, "mnist_ae")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors", "mnist_ae")
    assert not marker.exists()


def test_corrupt_and_truncated_files_are_refused(tmp_path, good_checkpoint, no_unpickling):
    _, saved = good_checkpoint
    data = saved.path.read_bytes()
    (header_len,) = struct.unpack("<Q", data[:8])
    cases = {
        "truncated_body": data[:-100],
        "truncated_header": data[: 8 + header_len // 2],
        "tiny": data[:5],
        "bad_json": data[:8] + b"#" * header_len + data[8 + header_len:],
        "trailing": data + b"\x00" * 16,
    }
    for label, blob in cases.items():
        path = tmp_path / f"{label}.safetensors"
        path.write_bytes(blob)
        with pytest.raises(CheckpointError):
            load_checkpoint(path, "mnist_ae")
    flipped = bytearray(data)
    flipped[-10] ^= 0xFF                       # payload corruption: caught by the sha256
    path = tmp_path / "flipped.safetensors"
    path.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(path, "mnist_ae", expected_sha256=saved.sha256)


def test_mismatched_architecture_is_refused(tmp_path, good_checkpoint):
    model, saved = good_checkpoint
    with pytest.raises(CheckpointError, match="not the expected"):
        load_checkpoint(saved.path, "cifar_ae")
    with pytest.raises(CheckpointError, match="latent_dim"):
        load_checkpoint(saved.path, "mnist_ae", latent_dim=8)
    # file claims mnist_ae with d=4 but holds d=8 tensors
    wrong = save_checkpoint(build_model("mnist_ae", latent_dim=8), tmp_path / "wrong.safetensors",
                            arch="mnist_ae", arch_kwargs={"latent_dim": 4, "pretext": "denoising"})
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_checkpoint(wrong.path, "mnist_ae")
    # file claims mnist_ae but holds a classifier's keys
    keys = save_checkpoint(build_model("mnist_classifier"), tmp_path / "keys.safetensors", arch="mnist_ae",
                           arch_kwargs={})
    with pytest.raises(CheckpointError, match="missing|unexpected"):
        load_checkpoint(keys.path)
    with torch.no_grad():
        model.encoder.lin[2].weight[0, 0] = float("nan")
    nan = save_checkpoint(model, tmp_path / "nan.safetensors")
    with pytest.raises(CheckpointError, match="NaN"):
        load_checkpoint(nan.path)


def test_sha256_mismatch_is_refused(good_checkpoint):
    _, saved = good_checkpoint
    with pytest.raises(CheckpointError, match="sha256"):
        load_checkpoint(saved.path, "mnist_ae", expected_sha256="0" * 64)
    assert load_checkpoint(saved.path, "mnist_ae", expected_sha256=saved.sha256.upper()) is not None


def test_interrupted_write_leaves_no_file(tmp_path, monkeypatch, good_checkpoint):
    model, saved = good_checkpoint
    before = saved.path.read_bytes()

    def interrupted(handle, data):
        handle.write(data[: len(data) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(ckio, "_write_fully", interrupted)
    target = tmp_path / "new.safetensors"
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(model, target)
    with pytest.raises(KeyboardInterrupt):           # overwriting keeps the old file intact
        save_checkpoint(build_model("mnist_ae"), saved.path)
    with pytest.raises(KeyboardInterrupt):
        update_manifest({"name": "x"}, tmp_path)
    assert not target.exists() and not (tmp_path / "manifest.json").exists()
    assert saved.path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.safetensors", "manifest.json.lock"]


# --------------------------------------------------------------------------- zoo and manifest


def test_zoo_table():
    names = set(ZOO)
    assert {"mnist_dae_consistency", "ecg5000_lstm_ae", "cifar10_dae_consistency", "mnist_pretext_denoising_run5",
            "mnist_pretext_classification_run1", "mnist_betavae_b5_run2", "mnist_btcvae_b10_run1",
            "cifar10_pretext_inpainting_run2", "cifar10_btcvae_b1_run2", "dsprites_betavae_b10_run3",
            "cifar100_pretext_classification_run1"} <= names
    count = lambda prefix: sum(n.startswith(prefix) for n in names)  # noqa: E731
    assert count("mnist_pretext_") == 20 and count("mnist_betavae_") == 15 and count("mnist_btcvae_") == 15
    assert count("cifar10_pretext_") == 12 and count("cifar10_betavae_") + count("cifar10_btcvae_") == 12
    assert count("dsprites_") == 24
    assert {e.name for e in ZOO.values() if e.tracin} == {"mnist_dae_consistency", "cifar10_dae_consistency",
                                                         "cifar100_dae_consistency", "ecg5000_lstm_ae"}
    assert not any(e.shipped for e in ZOO.values() if e.dataset == "cifar100")
    for entry in ZOO.values():
        entry.validate()
    assert ZOO["mnist_btcvae_b10_run1"].resize32 and ZOO["mnist_btcvae_b10_run1"].beta == 10
    assert ZOO["ecg5000_lstm_ae"].split == "examples_train" and ZOO["ecg5000_lstm_ae"].batch_size == 20
    assert ZOO["dsprites_betavae_b1_run1"].batch_size == 500
    assert dict(ZOO["cifar100_pretext_classification_run2"].extra_kwargs) == {"n_classes": 100}
    assert len(select_entries("mnist_pretext_*")) == 20
    assert all(e.shipped for e in select_entries("all"))
    assert len(select_entries("all", dataset="cifar100")) == 21
    with pytest.raises(ParameterError):
        select_entries("imagenet_*")


def test_manifest_update_and_corruption(tmp_path):
    assert read_manifest(tmp_path)["entries"] == {}
    update_manifest({"name": "b", "v": 1}, tmp_path)
    update_manifest({"name": "a", "v": 2}, tmp_path)
    update_manifest({"name": "b", "v": 3}, tmp_path)
    entries = read_manifest(tmp_path)["entries"]
    assert list(entries) == ["a", "b"] and entries["b"]["v"] == 3
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        read_manifest(tmp_path)
    with pytest.raises(CheckpointError, match="checkpoint folder .* does not exist; set LFX_CHECKPOINT_DIR"):
        load_entry("mnist_dae_consistency", tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not trained yet"):
        load_entry("mnist_dae_consistency", tmp_path / "empty")
    with pytest.raises(ParameterError):
        load_entry("no_such_model", tmp_path / "empty")


@pytest.fixture
def fake_data(monkeypatch):
    """Replace dataset loading by small generated tensors of the real shapes."""
    shapes = {"mnist": ((1, 28, 28), 10), "cifar10": ((3, 32, 32), 10), "ecg5000": ((140, 1), 2)}

    def load(dataset, split):
        shape, classes = shapes[dataset]
        x, y = _data(shape, classes, n=80, seed=0 if "train" in split else 1)
        return x, y

    monkeypatch.setattr(zoo, "_load_split", load)
    monkeypatch.setattr(zoo, "_resize_to_32", lambda x: torch.nn.functional.interpolate(x, size=(32, 32)))


def test_cli_train_then_list_and_load(tmp_path, fake_data, capsys):
    out = tmp_path / "ck"
    rc = main(["train", "mnist_dae_consistency", "--epochs", "2", "--max-train", "48", "--device", "cpu",
               "--out", str(out)])
    assert rc == 0
    rc = main(["train", "mnist_pretext_classification_run1", "--epochs", "1", "--max-train", "48", "--device",
               "cpu", "--out", str(out), "--storage-dtype", "float16"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "mnist_dae_consistency: epochs 2" in printed and "test acc" in printed
    record = read_manifest(out)["entries"]["mnist_dae_consistency"]
    assert record["data"]["n_train"] == 48 and record["data"]["shuffle"] and not record["full_recipe"]
    assert record["baseline_val_loss"] > 0 and record["test_loss"] > 0 and len(record["history"]["val_loss"]) == 2
    assert record["command"].startswith("python -m lfx_engine train mnist_dae_consistency --epochs 2")
    assert [t["epoch"] for t in record["tracin_checkpoints"]] == [0]
    assert [p.name for p in (out / "tracin").iterdir()] == ["mnist_dae_consistency"]
    (epoch, path, sha), = tracin_checkpoint_paths("mnist_dae_consistency", out)
    assert epoch == 0 and load_checkpoint(path, "mnist_ae", expected_sha256=sha) is not None
    model = load_entry("mnist_dae_consistency", out)
    assert not model.training and model.latent_dim == 4
    clf = read_manifest(out)["entries"]["mnist_pretext_classification_run1"]
    assert clf["storage_dtype"] == "float16" and 0 <= clf["test_accuracy"] <= 1
    assert main(["zoo", "list", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    line = next(row for row in table.splitlines() if row.startswith("mnist_dae_consistency "))
    assert "trained" in line and "not trained" not in line
    assert "not trained" in next(row for row in table.splitlines() if row.startswith("mnist_betavae_b1_run1 "))
    assert f"2 of {len(ZOO)} entries trained" in table and len(ZOO) == 123
    assert main(["zoo", "verify", "--out", str(out)]) == 0
    # tampering is detected by the manifest's sha256
    (out / record["file"]).write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError):
        load_entry("mnist_dae_consistency", out)
    assert main(["zoo", "verify", "--out", str(out)]) == 2


@pytest.mark.parametrize("argv,message", [
    (["train", "mnist_betavae_b1_run1", "--beta", "0"], "beta must be a positive"),
    (["train", "mnist_betavae_b1_run1", "--beta", "-2"], "beta must be a positive"),
    (["train", "mnist_betavae_b1_run1", "--latent-dim", "0"], "latent-dim must be an integer in 1..65536"),
    (["train", "mnist_dae_consistency", "--epochs", "0"], "epochs must be a positive"),
    (["train", "mnist_dae_consistncy"], "unknown zoo entry 'mnist_dae_consistncy' (did you mean "
                                        "mnist_dae_consistency"),
    (["train", "all", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["zoo", "list", "--dataset", "imagenet"], "unknown dataset 'imagenet'"),
])
def test_cli_refuses_bad_requests(argv, message, capsys, tmp_path):
    assert main(argv + (["--out", str(tmp_path)] if argv[0] == "train" else [])) == 2
    assert message in capsys.readouterr().err


def test_cli_reports_missing_data(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LFX_DATA_DIR", str(tmp_path / "nodata"))
    assert main(["train", "ecg5000_lstm_ae", "--epochs", "1", "--device", "cpu", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "ecg5000" in err.lower() and "Traceback" not in err
    assert not (tmp_path / "ecg5000_lstm_ae.safetensors").exists()


def test_cli_beta_override_saves_under_a_new_name(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(zoo, "_load_split", lambda d, s: _data((1, 28, 28), 10, n=40))
    monkeypatch.setattr(zoo, "_resize_to_32", lambda x: torch.nn.functional.interpolate(x, size=(32, 32)))
    assert main(["train", "mnist_btcvae_b5_run1", "--beta", "2.5", "--epochs", "1", "--max-train", "32",
                 "--device", "cpu", "--out", str(tmp_path)]) == 0
    record = read_manifest(tmp_path)["entries"]["mnist_btcvae_b5_run1_beta2.5"]
    assert record["beta"] == 2.5 and record["rec"] is not None and record["kl"] is not None
    assert set(record["val_components"]) == {"rec", "kl", "mi", "tc", "dwkl"}
    assert main(["train", "mnist_pretext_denoising_run1", "--beta", "2", "--out", str(tmp_path)]) == 2
    assert "VAE entries only" in capsys.readouterr().err
    assert json.loads((tmp_path / "manifest.json").read_text())["format"].startswith("lfx-zoo-manifest")


def test_cli_kl_warmup_is_recorded_and_refused_for_non_vaes(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(zoo, "_load_split", lambda d, s: _data((1, 28, 28), 10, n=40))
    monkeypatch.setattr(zoo, "_resize_to_32", lambda x: torch.nn.functional.interpolate(x, size=(32, 32)))
    assert main(["train", "mnist_betavae_b10_run1", "--epochs", "1", "--max-train", "32", "--batch-size", "8",
                 "--kl-warmup", "3", "--device", "cpu", "--out", str(tmp_path)]) == 0
    record = read_manifest(tmp_path)["entries"]["mnist_betavae_b10_run1"]
    assert record["kl_warmup_steps"] == 3 and "--kl-warmup 3" in record["command"]
    assert main(["train", "mnist_pretext_denoising_run1", "--kl-warmup", "5", "--out", str(tmp_path)]) == 2
    assert "VAE entries only" in capsys.readouterr().err
    assert main(["train", "mnist_betavae_b10_run1", "--kl-warmup", "-1", "--out", str(tmp_path)]) == 2
    assert "--kl-warmup must be" in capsys.readouterr().err
