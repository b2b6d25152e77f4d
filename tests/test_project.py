"""Users' own encoders: the project file, its loaders, the catalogue, ``lfx check`` and the engine on user models.

Built on the worked example (``tests/project_fixture.py``): a conv autoencoder from
user code on a labelled image folder, the same weights on an unlabelled folder, and a
``torch.export`` archive. Then every bad input the issue names, each with its message.
"""
from __future__ import annotations

import io
import textwrap
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import real_data_dir
from lfx_engine import catalogue as cat
from lfx_engine.catalogue import Catalogue
from lfx_engine.cli import main as lfx_main
from lfx_engine.errors import ParameterError
from lfx_engine.explorer import Explorer
from lfx_engine.project.schema import parse_project
from project_fixture import build_example_project

MODELS = ("small_ae", "small_ae_unlabelled", "exported_encoder", "small_vae")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    data = real_data_dir()
    assert data is not None, "the real datasets are missing: set LFX_DATA_DIR or place ../shared/data"
    return build_example_project(tmp_path_factory.mktemp("own_encoder"), data)


@pytest.fixture
def explorer(project, monkeypatch, tmp_path) -> Explorer:
    monkeypatch.setenv("LFX_PROJECT", str(project))
    monkeypatch.setenv("LFX_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("LFX_DATA_DIR", str(real_data_dir()))
    return Explorer("cpu")


def run_cli(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = lfx_main(list(args))
    return code, out.getvalue()


# ---------------------------------------------------------------------------- the example, as a user runs it


def test_check_lists_every_model_and_dataset(project) -> None:
    code, out = run_cli("check", str(project))
    assert code == 0, out
    assert "ok     digits: 96 train / 24 test, input 1×28×28, 10 classes" in out
    assert "ok     unlabelled:" in out and "unlabelled, baseline mean" in out
    for name in MODELS:
        assert f"ok     {name}: dataset" in out
    assert "small_ae: dataset digits, latent dimension 8, autoencoder; views: saliency, masking, top examples, " \
           "TracIn, influence, lucent" in out
    assert "exported_encoder: dataset digits, latent dimension 8" in out
    assert "no TracIn: needs a decoder" in out
    assert out.strip().endswith("all entries ok")


def test_user_models_join_the_zoo_in_one_catalogue(explorer) -> None:
    names = {m.name: m for m in explorer.models()}
    assert set(MODELS) <= set(names)
    assert "mnist_dae_consistency" in names  # the zoo is still there
    assert names["small_ae"].source == "user" and names["small_ae"].label == "Small conv AE (your autoencoder)"
    assert "digits" in explorer.datasets_with_models() and "unlabelled" in explorer.datasets_with_models()
    statuses = {r["dataset"]: r for r in explorer.dataset_status()}
    assert statuses["digits"]["status"] == "present" and statuses["digits"]["classes"] == 10
    assert statuses["unlabelled"]["classes"] == 0


@pytest.mark.parametrize("name", MODELS)
def test_feature_methods_and_masking_on_user_models(explorer, name) -> None:
    x, label = explorer.sample(name, 3)
    assert x.shape == (1, 1, 28, 28)
    for method in ("saliency", "integrated_gradients", "gradient_shap", "occlusion"):
        attr = explorer.attribute(name, x, method)
        assert attr.shape == (1, 1, 28, 28) and np.isfinite(attr).all() and np.abs(attr).sum() > 0
    summary, per_example = explorer.masking_curves(name, ["saliency", "integrated_gradients"], n_samples=10)
    assert set(summary["method"]) == {"saliency", "integrated_gradients", "random"}
    assert len(per_example) > 0 and np.isfinite(summary["mean"]).all()
    frame = explorer.latent_map(name, n_points=10)
    assert len(frame) == 10 and frame[["pc1", "pc2"]].notna().all().all()


def test_example_importance_on_a_user_autoencoder(explorer) -> None:
    for method in ("dknn", "cosine", "simplex", "tracin", "influence"):
        assert explorer.example_method_problem("small_ae", method) is None
    params = {"simplex": {"steps": 50}, "tracin": {}, "influence": {"recursion_depth": 3, "hessian": "exact"}}
    for method, extra in params.items():
        row = explorer.sample_example_scores("small_ae", method, 0, n=40, params=extra)
        assert row.shape == (40,) and np.isfinite(row).all()
    ranking = explorer.example_ranking("small_ae", row, n=40)
    assert ranking["class"].isin([str(d) for d in range(10)]).all()
    rates = explorer.similarity_curves("small_ae", ["dknn"], n=40)
    assert rates["most"].between(0, 1).all()


def test_unlabelled_data_works_where_labels_are_not_needed(explorer) -> None:
    assert explorer.class_names("unlabelled") == ()
    _, label = explorer.sample("small_ae_unlabelled", 0)
    assert explorer.label_name("unlabelled", label) == "unlabelled"
    row = explorer.sample_example_scores("small_ae_unlabelled", "dknn", 0, n=30)
    assert explorer.example_ranking("small_ae_unlabelled", row, n=30)["class"].eq("unlabelled").all()
    with pytest.raises(ParameterError, match="similarity rates compare labels"):
        explorer.similarity_curves("small_ae_unlabelled", ["dknn"], n=30)
    # the 'mean' baseline of the unlabelled dataset is the training mean image
    x_bar = explorer.baseline_for("small_ae_unlabelled")
    assert torch.allclose(x_bar[0], explorer.train_data("small_ae_unlabelled")[0].mean(0))


def test_export_archive_needs_no_user_code_and_says_what_it_cannot_do(explorer) -> None:
    problem = explorer.example_method_problem("exported_encoder", "tracin")
    assert problem.startswith("TracIn needs a decoder")
    a = explorer.attribute("exported_encoder", explorer.sample("exported_encoder", 1)[0], "integrated_gradients")
    b = explorer.attribute("small_ae", explorer.sample("small_ae", 1)[0], "integrated_gradients")
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)  # the archive is the same trained encoder


def test_cache_keys_hold_weights_data_and_engine_version(explorer, monkeypatch) -> None:
    from lfx_engine import cache, version

    key = explorer._key("small_ae", method="x")
    assert len(key["sha256"]) == 64 and len(key["data"]) == 64
    before = cache.cache_key(key)
    monkeypatch.setattr(version, "engine_version", lambda: "99.0")
    assert cache.cache_key(key) != before  # a new engine version never reads an old result
    assert explorer._key("small_ae_unlabelled")["data"] != key["data"]
    assert explorer._key("mnist_dae_consistency")["data"].startswith("mnist.npz:")


def test_python_api_registers_a_dataset_and_a_model(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("LFX_CACHE_DIR", str(tmp_path))
    torch.manual_seed(0)
    x = torch.rand(40, 1, 8, 8)

    class Tiny(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
            self.decoder = nn.Sequential(nn.Linear(3, 64), nn.Sigmoid(), nn.Unflatten(1, (1, 8, 8)))

    try:
        cat.register_dataset("notebook_data", x, y_train=torch.arange(40) % 2)
        entry = cat.register_model("notebook_model", Tiny(), "notebook_data", decoder="decoder")
        assert entry.latent_dim == 3 and entry.supports("influence") and not entry.supports("tracin")
        explorer = Explorer("cpu")
        xs, _ = explorer.sample("notebook_model", 0)
        assert explorer.attribute("notebook_model", xs, "saliency").shape == (1, 1, 8, 8)
        assert explorer.class_names("notebook_data") == ("0", "1")
        with pytest.raises(ParameterError, match="cannot be explained"):
            cat.register_model("notebook_bad", Tiny(), "notebook_data", encoder="decoder")
    finally:
        for name in ("notebook_data", "notebook_model", "notebook_bad"):
            cat.unregister(name)


# ---------------------------------------------------------------------------- bad input: a clear message each

BAD_MODELS = '''
import torch
from torch import nn


class FourD(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Conv2d(1, 2, 3)


class NaNs(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(784, 4))

    def forward(self, x):
        return self.encoder(x)


class Detached(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(784, 4)

    def forward(self, x):
        return self.lin(x.detach().flatten(1)).detach()


class Huge(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(784, 2000))


def four_d():
    return FourD()


def nans():
    model = NaNs()
    with torch.no_grad():
        model.encoder[1].weight.fill_(float("nan"))
    return model


def detached():
    return Detached()


def huge():
    return Huge()


def broken():
    raise RuntimeError("the factory is broken")
'''


def write_bad_project(folder: Path, project: Path, models: str) -> Path:
    """A project beside the example's data and weights, with one ``[models.*]`` block per case."""
    (folder / "bad_models.py").write_text(BAD_MODELS)
    example = project.parent
    import importlib.util

    from safetensors.torch import save_file

    spec = importlib.util.spec_from_file_location("bad_models_for_weights", folder / "bad_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for fn in ("four_d", "nans", "detached", "huge"):
        save_file(getattr(module, fn)().state_dict(), str(folder / f"{fn}.safetensors"))
    text = textwrap.dedent(f'''
        [project]
        python_path = ["{folder}", "{example}"]

        [datasets.digits]
        kind = "image_folder"
        path = "{example / 'data' / 'digits'}"
        channels = 1
        ''') + textwrap.dedent(models)
    path = folder / "bad.toml"
    path.write_text(text)
    return path


def problems_of(path: Path) -> dict[str, str]:
    catalogue = Catalogue(projects=[path])
    out = {m.name: m.problem for m in catalogue.models() if m.source == "user"}
    out.update({f"dataset:{d.name}": d.problem for d in catalogue.datasets() if d.source == "user"})
    return out


def test_bad_models_each_get_a_message_and_hide_nothing(project, tmp_path, monkeypatch) -> None:
    example = project.parent
    weights = example / "weights" / "autoencoder.safetensors"
    path = write_bad_project(tmp_path, project, f'''
        [models.no_import]
        dataset = "digits"
        factory = "no_such_package.models:build"
        weights = "{weights}"

        [models.no_function]
        dataset = "digits"
        factory = "bad_models:missing"
        weights = "{weights}"

        [models.factory_raises]
        dataset = "digits"
        factory = "bad_models:broken"
        weights = "{weights}"

        [models.wrong_weights]
        dataset = "digits"
        factory = "my_models:build_autoencoder"
        factory_kwargs = {{ latent_dim = 5 }}
        weights = "{weights}"

        [models.four_d]
        dataset = "digits"
        factory = "bad_models:four_d"
        weights = "{tmp_path / 'four_d.safetensors'}"

        [models.nans]
        dataset = "digits"
        factory = "bad_models:nans"
        weights = "{tmp_path / 'nans.safetensors'}"

        [models.too_large]
        dataset = "digits"
        factory = "bad_models:huge"
        weights = "{tmp_path / 'huge.safetensors'}"
        max_memory_mb = 1

        [models.no_gradients]
        dataset = "digits"
        factory = "bad_models:detached"
        weights = "{tmp_path / 'detached.safetensors'}"
        encoder = ""

        [models.good]
        dataset = "digits"
        factory = "my_models:build_autoencoder"
        weights = "{weights}"
        ''')
    problems = problems_of(path)
    assert "does not import: no module named 'no_such_package'" in problems["no_import"]
    assert "has no attribute 'missing'" in problems["no_function"]
    assert "raised RuntimeError: the factory is broken" in problems["factory_raises"]
    assert "do not fit the factory's architecture" in problems["wrong_weights"]
    assert "shape mismatch for" in problems["wrong_weights"] and "factory_kwargs" in problems["wrong_weights"]
    assert "must return (N, d)" in problems["four_d"]
    assert "NaN" in problems["nans"]
    assert "more than the memory budget of 1 MB" in problems["too_large"]
    assert problems["no_gradients"] == "" and problems["good"] == ""
    entry = Catalogue(projects=[path]).model_entry("no_gradients")
    assert "cannot be differentiated" in entry.unsupported["gradients"]
    assert "Occlusion, DKNN, cosine and SimplEx still work" in entry.unsupported["gradients"]
    monkeypatch.setenv("LFX_PROJECT", str(path))
    explorer = Explorer("cpu")
    assert explorer.feature_methods("no_gradients") == ["occlusion"]
    with pytest.raises(ParameterError, match="needs gradients"):
        explorer.attribute("no_gradients", explorer.sample("no_gradients", 0)[0], "saliency")
    assert explorer.attribute("no_gradients", explorer.sample("no_gradients", 0)[0], "occlusion").shape == \
        (1, 1, 28, 28)
    names = {m.name for m in explorer.models()}
    assert {"good", "no_gradients", "mnist_dae_consistency"} <= names and "nans" not in names
    assert {r["name"] for r in explorer.model_problems()} >= {"no_import", "nans", "too_large"}


def test_input_shape_mismatch_is_named(project, tmp_path) -> None:
    example = project.parent
    path = tmp_path / "shape.toml"
    path.write_text(textwrap.dedent(f'''
        [project]
        python_path = ["{example}"]
        [datasets.big]
        kind = "image_folder"
        path = "{example / 'data' / 'digits'}"
        resize = [32, 32]
        [models.ae]
        dataset = "big"
        factory = "my_models:build_autoencoder"
        weights = "{example / 'weights' / 'autoencoder.safetensors'}"
        '''))
    problem = problems_of(path)["ae"]
    assert "fails on inputs of shape (1, 32, 32) from dataset big" in problem and "resize" in problem


def test_bad_dataset_folders(tmp_path) -> None:
    from PIL import Image

    (tmp_path / "empty").mkdir()
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.new("L", (28, 28)).save(mixed / "a.png")
    Image.new("L", (32, 32)).save(mixed / "b.png")
    broken = tmp_path / "broken"
    broken.mkdir()
    Image.new("L", (28, 28)).save(broken / "a.png")
    (broken / "b.png").write_bytes(b"not an image at all")
    (tmp_path / "x.npz").write_bytes(b"garbage")
    np.savez(tmp_path / "big.npz", x=np.full((4, 10), 1e39))
    (tmp_path / "ragged.csv").write_text("1,2,3\n4,5\n")
    path = tmp_path / "data.toml"
    path.write_text(textwrap.dedent('''
        [datasets.empty]
        kind = "image_folder"
        path = "empty"
        [datasets.missing]
        kind = "image_folder"
        path = "nowhere"
        [datasets.mixed]
        kind = "image_folder"
        path = "mixed"
        [datasets.broken]
        kind = "image_folder"
        path = "broken"
        [datasets.notnpz]
        kind = "npz"
        path = "x.npz"
        [datasets.overflow]
        kind = "npz"
        path = "big.npz"
        [datasets.ragged]
        kind = "csv"
        path = "ragged.csv"
        '''))
    problems = problems_of(path)
    assert "holds no images" in problems["dataset:empty"]
    assert "does not exist" in problems["dataset:missing"]
    assert "mixed image sizes: a.png is 28×28 but b.png is 32×32; set resize" in problems["dataset:mixed"]
    assert "b.png is not a readable image" in problems["dataset:broken"]
    assert "not a readable .npz file" in problems["dataset:notnpz"]
    assert "NaN or infinite" in problems["dataset:overflow"]
    assert "line 2 has 2 values" in problems["dataset:ragged"]


def test_project_datasets_count_against_the_memory_budget_and_are_read_again(explorer) -> None:
    """A project file's dataset is held like a built-in split: counted under LFX_MEMORY_MB (both splits as one
    item), given back when the sessions that used it end, and read from its files again, equal, when asked
    after that. (Eviction over the budget is the same code as for built-in splits: tests/test_app_memory.py.)"""
    from lfx_engine.data import splits as data_splits

    data_splits.clear_cache()
    digits = ("split", ("digits", data_splits.USER_SPLITS))
    explorer.bind_user("A")
    x, y = explorer.train_data("small_ae")
    x_test = explorer.test_data("small_ae")[0]
    explorer.bind_user(None)
    held = {(i.kind, i.key): i for i in explorer.held()}
    assert digits in held and "A" in held[digits].users
    assert held[digits].nbytes >= x.numel() * x.element_size() + x_test.numel() * x_test.element_size() > 0
    first_x, first_y = x.clone(), y.clone()
    del x, y, x_test

    explorer.release(0, active_users=["A"])  # A's session still open: its dataset stays
    assert digits in {(i.kind, i.key) for i in explorer.held()}
    assert explorer.release(0, active_users=[]) >= held[digits].nbytes  # A ended: its dataset goes
    assert digits not in {(i.kind, i.key) for i in explorer.held()}
    assert not any(c.dataset == "digits" for c in data_splits.cached_splits())
    again_x, again_y = explorer.train_data("small_ae")  # read from the image folder again
    assert torch.equal(again_x, first_x) and torch.equal(again_y, first_y)

    explorer.sample("small_ae_unlabelled", 0)  # the second dataset adds to the one budget
    sizes = {i.key: i.nbytes for i in explorer.held() if i.kind == "split"}
    assert set(sizes) == {digits[1], ("unlabelled", data_splits.USER_SPLITS)}
    assert explorer.held_bytes() >= sum(sizes.values())
    data_splits.clear_cache()


def test_a_project_dataset_whose_file_went_after_eviction_says_so(tmp_path) -> None:
    from lfx_engine.data import splits as data_splits
    from lfx_engine.errors import DatasetUnavailableError

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "blobs.npz", x=rng.random((30, 1, 8, 8)).astype(np.float32), y=np.arange(30) % 3)
    path = tmp_path / "blobs.toml"
    path.write_text('[datasets.blobs]\nkind = "npz"\npath = "blobs.npz"\n')
    entry = Catalogue(projects=[path]).dataset_entry("blobs")
    x, _ = entry.loader("train")
    assert data_splits.forget_split("blobs", data_splits.USER_SPLITS) >= x.numel() * 4
    assert torch.equal(entry.loader("train")[0], x)  # read again from the file
    data_splits.forget_split("blobs", data_splits.USER_SPLITS)
    (tmp_path / "blobs.npz").unlink()
    with pytest.raises(DatasetUnavailableError, match="blobs.npz does not exist"):
        entry.loader("train")
    assert Catalogue(projects=[path]).dataset_entry("blobs").status == "error"  # and the catalogue lists why


def test_csv_series_with_header_labels_and_z_normalisation(tmp_path) -> None:
    rows = ["label,t0,t1,t2,t3,t4"] + [f"{'a' if i % 2 else 'b'},{i},{i + 1},{i + 3},{i},{i - 1}" for i in range(20)]
    (tmp_path / "beats.csv").write_text("\n".join(rows) + "\n")
    path = tmp_path / "series.toml"
    path.write_text('[datasets.beats]\nkind = "csv"\npath = "beats.csv"\nlabel_column = "label"\nnormalize = "z"\n')
    entry = Catalogue(projects=[path]).dataset_entry("beats")
    assert entry.problem == "" and entry.input_shape == (5, 1) and entry.class_names == ("a", "b")
    x, y = entry.loader("train")
    assert torch.allclose(x.mean(dim=1), torch.zeros(len(x), 1), atol=1e-5)
    assert set(y.tolist()) == {0, 1}


def test_project_file_errors_name_their_lines(tmp_path) -> None:
    path = tmp_path / "typos.toml"
    path.write_text(textwrap.dedent('''\
        [datasets.d]
        kind = "image_folder"
        path = "x"
        test_fraction = "a lot"
        colour = "red"

        [models.m]
        dataset = "d"
        factory = "pkg.mod:build"
        weights = "w.safetensors"
        latent_dim = 0
        [models.n]
        dataset = "elsewhere"
        archive = "a.pt2"
        [surprise]
        x = 1
        '''))
    problems = [str(p) for p in parse_project(path).all_problems()]
    assert any(p.startswith("line 4: [datasets.d] test_fraction must be a number") for p in problems), problems
    assert any(p.startswith("line 5: [datasets.d] unknown key 'colour'") for p in problems), problems
    assert any(p.startswith("line 11: [models.m] latent_dim must lie in 1..65536") for p in problems), problems
    assert any(p.startswith("line 13: [models.n] dataset 'elsewhere' is declared nowhere") for p in problems), problems
    assert any(p.startswith("line 15: unknown table [surprise]") for p in problems), problems
    broken = tmp_path / "broken.toml"
    broken.write_text('[datasets.d]\nkind = "npz\n')
    assert str(parse_project(broken).problems[0]).startswith("line 2: not valid TOML")
    code, out = run_cli("check", str(path))
    assert code == 1 and "problems found" in out


def test_unsafe_weight_files_are_refused(project, tmp_path) -> None:
    import pickle

    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"weight": Payload()}))
    (tmp_path / "fake.pt2").write_bytes(b"PK\x03\x04 not really a zip")
    example = project.parent
    path = tmp_path / "unsafe.toml"
    path.write_text(textwrap.dedent(f'''
        [project]
        python_path = ["{example}"]
        [datasets.digits]
        kind = "image_folder"
        path = "{example / 'data' / 'digits'}"
        [models.pickled]
        dataset = "digits"
        factory = "my_models:build_autoencoder"
        weights = "evil.pt"
        [models.fake_archive]
        dataset = "digits"
        archive = "fake.pt2"
        '''))
    problems = problems_of(path)
    assert "cannot be loaded safely (weights_only=True)" in problems["pickled"]
    assert "is not a torch.export archive" in problems["fake_archive"]


def test_an_edited_factory_is_reimported(tmp_path) -> None:
    import os

    from lfx_engine.project.models import import_callable

    module = tmp_path / "edited_factory_mod.py"
    module.write_text("def build():\n    return 1\n")
    assert import_callable("edited_factory_mod:build", [tmp_path], "factory")() == 1
    module.write_text("def build():\n    return 22\n")
    os.utime(module, ns=(1, 10**18))
    assert import_callable("edited_factory_mod:build", [tmp_path], "factory")() == 22


def test_a_loss_from_user_code_drives_the_gradient_methods(project, tmp_path, monkeypatch) -> None:
    example = project.parent
    (tmp_path / "my_losses.py").write_text(
        "def huber(output, target):\n"
        "    import torch\n"
        "    return torch.nn.functional.huber_loss(output, target, reduction='none').flatten(1).mean(1)\n")
    path = tmp_path / "loss.toml"
    path.write_text(textwrap.dedent(f'''
        [project]
        python_path = ["{example}", "{tmp_path}"]
        [datasets.digits]
        kind = "image_folder"
        path = "{example / 'data' / 'digits'}"
        [models.huber_ae]
        dataset = "digits"
        factory = "my_models:build_autoencoder"
        weights = "{example / 'weights' / 'autoencoder.safetensors'}"
        decoder = "decoder"
        loss = "my_losses:huber"
        [models.bad_loss]
        dataset = "digits"
        factory = "my_models:build_autoencoder"
        weights = "{example / 'weights' / 'autoencoder.safetensors'}"
        decoder = "decoder"
        loss = "my_losses:absent"
        '''))
    entry = Catalogue(projects=[path]).model_entry("huber_ae")
    assert entry.problem == "" and entry.supports("influence") and entry.loss_fn.__name__ == "huber"
    assert "has no attribute 'absent'" in Catalogue(projects=[path]).model_entry("bad_loss").problem
    monkeypatch.setenv("LFX_PROJECT", str(path))
    monkeypatch.setenv("LFX_CACHE_DIR", str(tmp_path / "cache"))
    row = Explorer("cpu").sample_example_scores("huber_ae", "influence", 0, n=20,
                                                params={"recursion_depth": 2, "hessian": "exact"})
    assert row.shape == (20,) and np.isfinite(row).all()


def test_a_user_vae_explains_its_posterior_mean(explorer) -> None:
    entry = explorer.entry("small_vae")
    assert entry.latent_dim == 4 and entry.supports("disentanglement") and entry.task == "vae"
    assert [m.name for m in explorer.user_vaes("digits")] == ["small_vae"]
    x, _ = explorer.sample("small_vae", 2)
    maps = explorer.unit_maps("small_vae", x)
    assert maps.shape == (1, 4, 28, 28) and (maps >= 0).all() and maps.sum() > 0
    mu = explorer.latent("small_vae", x)
    model = explorer.model("small_vae")
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(mu), model.encoder.net(x)[0])  # mu = "tuple:0"
    assert explorer.traversal("small_vae", 2, 1, [-1.0, 0.0, 1.0]).shape == (3, 1, 28, 28)
    assert not explorer.vae_unit_metrics_cached("small_vae", 8)
    metrics = explorer.vae_unit_metrics("small_vae", 8)
    assert explorer.vae_unit_metrics_cached("small_vae", 8)
    assert set(metrics) == {"pearson", "spearman", "cosine", "entropy", "salient_units"}
    assert all(np.isfinite(v) for v in metrics.values())
