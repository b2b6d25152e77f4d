"""Bad files and bad arguments never break the engine for good: fuzz and table-driven tests (issue 13).

* cache reads: any damage to a cached ``.npz`` (truncation, emptying, bit flips, garbage) is a miss that
  is recomputed; a write killed half-way leaves no entry and its temp file is removed at the next start;
* the manifest schema: garbage files and mistyped or escaping records are skipped with a reason, and
  the good records stay usable, in the catalogue, ``load_entry``, ``zoo list`` and ``zoo verify``;
* CLI arguments: every user error exits 2 with one line starting ``error:``, no traceback, and nothing
  is written outside the folders the test owns.

Each fuzz test counts what it tried into ``FUZZ_COUNTS`` (printed at the end of the module) for the
closing note.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz_counts import FuzzCounts
from lfx_engine import cache
from lfx_engine.catalogue import Catalogue
from lfx_engine.cli import main as lfx_main
from lfx_engine.config import REPO_ROOT
from lfx_engine.errors import CheckpointError
from lfx_engine.training.manifest import check_record, valid_records
from lfx_engine.training.zoo import load_entry

FUZZ_COUNTS = FuzzCounts("engine")
count = FUZZ_COUNTS.count
SHIPPED = REPO_ROOT / "checkpoints"
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])



@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    FUZZ_COUNTS.write()


# ---------------------------------------------------------------------------- cache reads


DAMAGE = st.one_of(
    st.just(("empty", 0)),
    st.tuples(st.just("truncate"), st.integers(0, 10_000)),
    st.tuples(st.just("flip"), st.integers(0, 10_000)),
    st.tuples(st.just("garbage"), st.integers(1, 2_000)),
)


@FUZZ
@given(damage=DAMAGE, values=st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=300))
def test_damaged_cache_entries_are_recomputed(tmp_path_factory, damage, values) -> None:
    folder = tmp_path_factory.mktemp("cache")
    os.environ["LFX_CACHE_DIR"] = str(folder)
    try:
        parts = {"k": len(values)}
        good = np.asarray(values)
        cache.cached("fuzz", parts, lambda: {"v": good})
        path = cache.cache_path("fuzz", parts)
        data = bytearray(path.read_bytes())
        kind, n = damage
        if kind == "empty":
            data = bytearray()
        elif kind == "truncate":
            data = data[: n % max(1, len(data))]
        elif kind == "flip":
            data[n % len(data)] ^= 0xFF
        else:
            data = bytearray(np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8).tobytes())
        path.write_bytes(bytes(data))
        calls = []
        try:
            out = cache.cached("fuzz", parts, lambda: (calls.append(1), {"v": good})[1])
        except Exception:  # noqa: BLE001 - counted, then failed below
            count("cache reads", "crashes")
            raise
        np.testing.assert_array_equal(out["v"], good)  # either the intact entry or a recomputed one
        assert cache.load_arrays(path) is not None  # and the entry is sound again
        count("cache reads", "clear")
    finally:
        os.environ.pop("LFX_CACHE_DIR", None)


def test_is_cached_does_not_trust_a_truncated_entry(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LFX_CACHE_DIR", str(tmp_path))
    cache.cached("t", {"a": 1}, lambda: {"v": np.arange(1000.0)})
    path = cache.cache_path("t", {"a": 1})
    assert cache.is_cached("t", {"a": 1})
    path.write_bytes(path.read_bytes()[:100])
    assert not cache.is_cached("t", {"a": 1})


KILLED_WRITER = textwrap.dedent('''
    import os, signal, sys
    import numpy as np
    from lfx_engine import cache

    real = np.savez

    def dying(handle, **arrays):
        handle.write(b"PK" + b"x" * 100_000)   # half an entry is on disk ...
        handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)   # ... when the process is killed

    np.savez = dying
    cache.cached("killed", {"k": 1}, lambda: {"v": np.arange(10)})
''')


def test_a_write_killed_half_way_leaves_no_entry(tmp_path) -> None:
    env = {**os.environ, "LFX_CACHE_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER], env=env, cwd=REPO_ROOT, capture_output=True,
                          timeout=120)
    assert proc.returncode == -signal.SIGKILL
    os.environ["LFX_CACHE_DIR"] = str(tmp_path)
    try:
        path = cache.cache_path("killed", {"k": 1})
        assert not path.exists()  # readers never see the half-written entry
        parts = list((tmp_path / "killed").glob(".*.part"))
        assert len(parts) == 1
        assert cache.clean_start() == []  # a fresh temp file may belong to a live writer: kept
        old = 10_000
        os.utime(parts[0], (parts[0].stat().st_atime - old, parts[0].stat().st_mtime - old))
        assert cache.clean_start() == parts  # an old one is left over from a killed write: removed
        out = cache.cached("killed", {"k": 1}, lambda: {"v": np.arange(10)})
        assert out["v"].tolist() == list(range(10))
    finally:
        os.environ.pop("LFX_CACHE_DIR", None)


def test_the_cache_keeps_under_its_cap_and_can_be_listed_and_cleared(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("LFX_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("LFX_CACHE_MAX_MB", "1")
    for k in range(6):  # 6 × 400 kB against a 1 MB cap
        cache.cached("big", {"k": k}, lambda: {"v": np.zeros(50_000)})
        os.utime(cache.cache_path("big", {"k": k}), (1000 + k, 1000 + k))
    cache.cached("big", {"k": 0}, lambda: {"v": np.zeros(50_000)})  # touched: now the most recently used
    summary = cache.info()
    assert summary["bytes"] <= 2 ** 20 and summary["entries"] >= 1
    assert cache.cache_path("big", {"k": 5}).exists() or cache.cache_path("big", {"k": 0}).exists()
    assert lfx_main(["cache", "info"]) == 0
    assert "big" in capsys.readouterr().out
    assert lfx_main(["cache", "clear", "--namespace", "big"]) == 0
    assert cache.info()["entries"] == 0
    assert lfx_main(["cache", "clear", "--namespace", "../x"]) == 2
    monkeypatch.setenv("LFX_CACHE_MAX_MB", "lots")
    assert cache.max_bytes() == cache.DEFAULT_MAX_MB * 2 ** 20


def test_an_unwritable_cache_costs_the_reuse_not_the_result(tmp_path, monkeypatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("LFX_CACHE_DIR", str(blocker))
    assert cache.cached("x", {"a": 1}, lambda: {"v": np.ones(3)})["v"].sum() == 3


# ---------------------------------------------------------------------------- the manifest schema


@pytest.fixture(scope="module")
def small_zoo(tmp_path_factory) -> Path:
    """Two shipped checkpoints with their manifest records, copied into a folder the tests may damage."""
    root = tmp_path_factory.mktemp("zoo")
    records = json.loads((SHIPPED / "manifest.json").read_text())["entries"]
    keep = {name: records[name] for name in ("mnist_pretext_reconstruction_run1", "mnist_betavae_b1_run1")}
    for rec in keep.values():
        shutil.copy(SHIPPED / rec["file"], root / rec["file"])
    (root / "manifest.json").write_text(json.dumps({"format": "lfx-zoo-manifest/1", "entries": keep}))
    return root


RECORD_DAMAGE = st.sampled_from([
    ("file", "../../etc/passwd"), ("file", "/etc/passwd"), ("file", 7), ("file", ""), ("sha256", "abc"),
    ("sha256", None), ("arch", "resnet9000"), ("arch", ["x"]), ("dataset", "imagenet"), ("latent_dim", -3),
    ("latent_dim", "four"), ("latent_dim", 10 ** 12), ("run", True), ("beta", "high"), ("arch_kwargs", "x"),
    ("tracin_checkpoints", "all"), ("tracin_checkpoints", [{"epoch": 1, "file": "../x", "sha256": "0" * 64}]),
    ("tracin_checkpoints", [{"epoch": "one", "file": "a", "sha256": "0" * 64}]), ("name", "other"),
    ("task", None), ("__delete__", "file"), ("__delete__", "sha256"), ("__delete__", "arch"),
])


@FUZZ
@given(damage=RECORD_DAMAGE)
def test_a_mistyped_record_is_skipped_and_the_rest_stay_usable(small_zoo, damage) -> None:
    manifest = json.loads((small_zoo / "manifest.json").read_text())
    good, bad = "mnist_betavae_b1_run1", "mnist_pretext_reconstruction_run1"
    rec = dict(manifest["entries"][bad])
    key, value = damage
    if key == "__delete__":
        rec.pop(value)
    else:
        rec[key] = value
    folder = small_zoo.parent / f"damaged_{abs(hash(repr(damage)))}"
    if not folder.exists():
        shutil.copytree(small_zoo, folder)
    (folder / "manifest.json").write_text(json.dumps({"format": "lfx-zoo-manifest/1",
                                                      "entries": {good: manifest["entries"][good], bad: rec}}))
    try:
        records, problems = valid_records(folder)
        assert list(records) == [good]
        assert len(problems) == 1 and problems[0][1].startswith("manifest record skipped: ")
        assert "0000000000" not in problems[0][1] and "/etc/passwd" not in problems[0][1]
        with pytest.raises(CheckpointError, match="cannot be loaded: manifest record skipped"):
            load_entry(bad, folder)
        assert load_entry(good, folder) is not None
        assert [m.name for m in Catalogue(folder).models()] == [good]
        count("manifest records", "clear")
    except Exception:
        count("manifest records", "crashes")
        raise


@FUZZ
@given(content=st.one_of(st.binary(max_size=200), st.text(max_size=200),
                         st.sampled_from(["", "{}", "[]", "null", '{"entries": []}', '{"entries": {"a": 1}}',
                                          '{"entries": {"../../x": {}}}'])))
def test_a_garbage_manifest_never_raises_in_readers(small_zoo, content) -> None:
    folder = small_zoo.parent / "garbage"
    folder.mkdir(exist_ok=True)
    path = folder / "manifest.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    try:
        records, problems = valid_records(folder)
        assert records == {} and all(isinstance(p, str) for _, p in problems)
        assert Catalogue(folder).models() == []
        count("manifest files", "clear")
    except Exception:
        count("manifest files", "crashes")
        raise


def test_zoo_list_and_verify_report_bad_records(small_zoo, capsys) -> None:
    folder = small_zoo.parent / "listed"
    shutil.copytree(small_zoo, folder, dirs_exist_ok=True)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["entries"]["mnist_pretext_reconstruction_run1"]["file"] = "../../outside.safetensors"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert lfx_main(["zoo", "list", "--out", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "skipped mnist_pretext_reconstruction_run1: manifest record skipped: its file points outside" in out
    assert lfx_main(["zoo", "verify", "--out", str(folder)]) == 2
    assert check_record("x", {"name": "x"}, folder).startswith("field 'file'")


# ---------------------------------------------------------------------------- CLI arguments

CLI_CASES = [
    (["train", "mnist_dae_consistency", "--latent-dim", "1000000000"], "--latent-dim must be an integer"),
    (["train", "mnist_dae_consistency", "--latent-dim", "5", "--save-as", "../../name"], "--save-as is a plain"),
    (["train", "mnist_dae_consistency", "--epochs", "-1"], "--epochs must be a positive"),
    (["train", "mnist_dae_consistency", "--out", "{file}"], "--out"),
    (["train", "no_such_entry"], "unknown zoo entry"),
    (["reproduce", "pretext", "--data", "mnist", "--results", "{file}"], "--results"),
    (["reproduce", "pretext", "--data", "mnist", "--device", "banana"], "--device must be cpu, cuda or cuda:N"),
    (["reproduce", "pretext", "--data", "mnist", "--n-test", "0"], "n-test"),
    (["zoo", "show", "nothing_here", "--out", "{tmp}"], "is not in the manifest"),
    (["check", "{tmp}/missing.toml"], "project file"),
    (["serve", "{tmp}/missing.toml"], "project file"),
    (["cache", "clear", "--namespace", "../../etc"], "cache namespace"),
]


def _run_cli(argv: list[str], tmp: Path, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "LFX_CACHE_DIR": str(tmp / "cache"), "LFX_RESULTS_DIR": str(tmp / "results"),
           "LFX_CHECKPOINT_DIR": str(tmp / "ckpt"), **(extra_env or {})}
    return subprocess.run([sys.executable, "-m", "lfx_engine", *argv], env=env, cwd=tmp, capture_output=True,
                          text=True, timeout=300)


def _snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.is_dir() else set()


@pytest.mark.parametrize("argv,message", CLI_CASES, ids=[" ".join(a[:2]) + f" {i}" for i, (a, _) in
                                                          enumerate(CLI_CASES)])
def test_cli_user_errors_exit_2_with_one_error_line(tmp_path, argv, message) -> None:
    (tmp_path / "afile").write_text("x")
    argv = [a.replace("{file}", str(tmp_path / "afile")).replace("{tmp}", str(tmp_path)) for a in argv]
    before = _snapshot(REPO_ROOT / "checkpoints")
    proc = _run_cli(argv, tmp_path)
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("[")]
    try:
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
        assert lines and lines[-1].startswith("error: ") and message in lines[-1], lines
        assert _snapshot(REPO_ROOT / "checkpoints") == before
        assert not (tmp_path.parent / "name").exists()
        count("CLI arguments", "clear")
    except AssertionError:
        count("CLI arguments", "crashes")
        raise


@pytest.mark.parametrize("device", ["banana", "cuda:99x", "gpu", "cpu; rm -rf /"])
def test_a_bad_lfx_device_is_one_error_line(tmp_path, device) -> None:
    proc = _run_cli(["reproduce", "pretext", "--data", "mnist", "--n-test", "5"], tmp_path, {"LFX_DEVICE": device})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: LFX_DEVICE must be cpu, cuda or cuda:N")
