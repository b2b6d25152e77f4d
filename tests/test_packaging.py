"""The installable package: a wheel built from this checkout, installed into a fresh virtualenv, used from /tmp.

The fresh environment reaches the heavy dependencies (torch, streamlit, ...) through a
``.pth`` link to the test run's own site-packages instead of installing them again, and
the wheel itself is installed with ``--no-deps``: what is checked is this package's
files, metadata and console script, imported from outside the checkout.
"""
from __future__ import annotations

import os
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from lfx_engine.config import REPO_ROOT


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(the fresh venv's python, an empty working folder outside the checkout, the wheel)."""
    root = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(root / "dist"),
                            str(REPO_ROOT)], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next((root / "dist").glob("lfx_explorer-*.whl"))
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (Path(purelib) / "_lfx_test_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
                              str(wheel)], capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    work = root / "elsewhere"
    work.mkdir()
    return python, work, wheel


def _clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LFX_") and k != "PYTHONPATH"}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / "cache"), XDG_DATA_HOME=str(home / "data"))
    return env


def test_wheel_holds_the_package_and_no_checkpoints(installed) -> None:
    wheel = installed[2]
    names = zipfile.ZipFile(wheel).namelist()
    assert "lfx_engine/py.typed" in names and "lfx_engine/catalogue.py" in names and "lfx_ui/engine.py" in names
    assert not [n for n in names if n.endswith(".safetensors") or n.startswith("checkpoints/")]
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "lfx = lfx_engine.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    requires = [line.split(":", 1)[1].strip().replace(" ", "") for line in metadata.splitlines()
                if line.startswith("Requires-Dist:")]
    assert any(r.startswith("matplotlib") for r in requires) and any(r.startswith("platformdirs") for r in requires)
    capped = {r.split("<")[0].split(">")[0].split("=")[0]: r for r in requires}
    assert "<3" in capped["numpy"] and "<3" in capped["pandas"] and "<3" in capped["torch"]


def test_installed_package_imports_and_runs_from_anywhere(installed, tmp_path) -> None:
    python, work, _ = installed
    env = _clean_env(tmp_path)
    probe = subprocess.run(
        [str(python), "-c", "import lfx_engine, importlib.metadata as m; from lfx_engine import config; "
                            "print(lfx_engine.__file__); print(lfx_engine.__version__, m.version('lfx-explorer')); "
                            "print(config.in_checkout(), config.cache_dir(), config.results_dir())"],
        cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert probe.returncode == 0, probe.stderr[-3000:]
    location, versions, dirs = probe.stdout.strip().splitlines()
    assert str(python.parents[1]) in location  # the wheel's copy, not the checkout
    version, metadata_version = versions.split()
    assert version == metadata_version
    in_checkout, cache, results = dirs.split()
    assert in_checkout == "False"
    assert cache.startswith(str(tmp_path)) and results.startswith(str(tmp_path))  # user folders, not site-packages
    lfx = python.parent / "lfx"
    help_text = subprocess.run([str(lfx), "--help"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert help_text.returncode == 0, help_text.stderr[-3000:]
    for command in ("check", "serve", "train", "zoo", "reproduce", "data"):
        assert command in help_text.stdout
    version_line = subprocess.run([str(lfx), "--version"], cwd=work, env=env, capture_output=True, text=True,
                                  timeout=300)
    assert version_line.stdout.strip() == f"lfx-explorer {version}"
    missing = subprocess.run([str(python), "-c", "from lfx_engine.training.zoo import load_entry; "
                                                 "load_entry('mnist_dae_consistency')"],
                             cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert missing.returncode != 0 and "LFX_CHECKPOINT_DIR" in missing.stderr and "not trained yet" not in missing.stderr
    serve = subprocess.run([str(lfx), "serve", str(tmp_path / "none.toml")], cwd=work, env=env, capture_output=True,
                           text=True, timeout=300)
    assert serve.returncode == 2 and serve.stderr.startswith("error: project file")
    site_packages = Path(location).parent.parent
    assert not any(site_packages.glob(".lfx_cache")) and not (site_packages / "results").exists()
