"""Download each dataset from its official source and store it as a bundle.

* MNIST, CIFAR-10, CIFAR-100: ``torchvision.datasets`` (``download=True`` into a
  temporary folder), converted to ``NAME.npz``.
* ECG5000: the UCR/aeon archive zip (``ECG5000.zip``); its TRAIN/TEST files
  (``.tsv``, ``.txt``, ``.ts`` or ``.arff``) become ``ECG5000_TRAIN.tsv`` and
  ``ECG5000_TEST.tsv``.
* dSprites: DeepMind's ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`` (all
  737,280 images) converted to ``dsprites.npz``.

Files are written atomically (see :mod:`lfx_engine.atomic`), then read back
through the normal reader; their sha256 is printed. Network steps live here,
conversion steps in :mod:`lfx_engine.data.convert` (pure, tested offline).
"""
from __future__ import annotations

import hashlib
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path
from typing import Callable, TextIO

import numpy as np

from lfx_engine.config import data_dir
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
from lfx_engine.data.readers import describe, read_bundle, unavailable_error
from lfx_engine.data.registry import DSPRITES_URL, ECG_URLS, DatasetSpec, get_spec
from lfx_engine.errors import DatasetUnavailableError, ParameterError

CHUNK = 1 << 20
TIMEOUT_S = 60
# preference order when an archive holds several variants of the same UCR split
UCR_SUFFIX_ORDER = (".tsv", ".txt", ".ts", ".arff")


def sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, destination: Path, desc: str = "") -> Path:
    """Stream ``url`` to ``destination`` with a tqdm progress bar; DatasetUnavailableError on failure."""
    from tqdm.auto import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "lfx-explorer"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with open(destination, "wb") as handle, tqdm(
                total=total, unit="B", unit_scale=True, desc=desc or destination.name
            ) as bar:
                for block in iter(lambda: response.read(CHUNK), b""):
                    handle.write(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        destination.unlink(missing_ok=True)
        raise DatasetUnavailableError(
            f"could not download {url}: {exc}. Check the internet connection (or proxy "
            f"settings) and retry, or copy the dataset files into the data directory "
            f"(LFX_DATA_DIR) by hand."
        ) from exc
    return destination


# ----------------------------------------------------------------------------- per-format sources

def torchvision_arrays(name: str, root: Path) -> tuple:
    """(x_train, y_train, x_test, y_test) of a torchvision dataset, downloaded into ``root``."""
    import torchvision.datasets as tv

    cls = {"mnist": tv.MNIST, "cifar10": tv.CIFAR10, "cifar100": tv.CIFAR100}[name]
    try:
        train = cls(root=str(root), train=True, download=True)
        test = cls(root=str(root), train=False, download=True)
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        raise DatasetUnavailableError(
            f"torchvision could not download {name}: {exc}. Check the internet connection and retry."
        ) from exc
    return train.data, train.targets, test.data, test.targets


def ucr_tables_from_zip(archive_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Extract and parse the ECG5000 TRAIN/TEST tables of a UCR zip (any supported variant)."""
    with zipfile.ZipFile(archive_path) as archive:
        members = {Path(member).name.upper(): member for member in archive.namelist()}
        tables = []
        for split in ("TRAIN", "TEST"):
            for suffix in UCR_SUFFIX_ORDER:
                member = members.get(f"ECG5000_{split}{suffix.upper()}")
                if member is not None:
                    text = archive.read(member).decode("utf-8", errors="replace")
                    tables.append(parse_ucr_text(text, suffix[1:], member))
                    break
            else:
                raise ParameterError(
                    f"the archive holds no ECG5000_{split} file in any of the formats "
                    f"{', '.join(UCR_SUFFIX_ORDER)}; found {', '.join(sorted(members)) or 'nothing'}"
                )
    return convert_ucr_tables(tables[0], tables[1])


def official_dsprites_arrays(path: Path) -> dict[str, np.ndarray]:
    """Read the arrays we need from DeepMind's npz (its pickled ``metadata`` is never loaded)."""
    with np.load(path, allow_pickle=False) as archive:
        return convert_dsprites_archive(archive["imgs"], archive["latents_classes"], archive["latents_values"])


# ----------------------------------------------------------------------------- orchestration

def _build(spec: DatasetSpec, folder: Path, work: Path, log: TextIO) -> list[Path]:
    """Download into ``work`` and write the bundle files into ``folder`` (atomically)."""
    if spec.bundle_format == "keras_npz":
        arrays = convert_torchvision_arrays(spec.name, *torchvision_arrays(spec.name, work))
        print(f"writing {spec.files[0]} ...", file=log)
        return [atomic_write(folder / spec.files[0], npz_writer(arrays))]
    if spec.bundle_format == "ucr_tsv":
        errors = []
        for url in ECG_URLS:
            try:
                archive = download(url, work / "ECG5000.zip", desc="ECG5000.zip")
                break
            except DatasetUnavailableError as exc:
                errors.append(str(exc))
        else:
            raise DatasetUnavailableError("; ".join(errors))
        train, test = ucr_tables_from_zip(archive)
        return atomic_write_many([(folder / spec.files[0], text_writer(format_ucr_tsv(train))),
                                  (folder / spec.files[1], text_writer(format_ucr_tsv(test)))])
    source = download(DSPRITES_URL, work / "dsprites_official.npz", desc="dSprites")
    arrays = official_dsprites_arrays(source)
    print(f"writing {spec.files[0]} ({arrays['imgs'].shape[0]} images, compressing) ...", file=log)
    return [atomic_write(folder / spec.files[0], npz_writer(arrays))]


def fetch(name: str, folder: Path | None = None, force: bool = False, log: TextIO | None = None,
          builder: Callable[[DatasetSpec, Path, Path, TextIO], list[Path]] | None = None) -> list[Path]:
    """Download dataset ``name`` into ``folder`` (default: the data directory) and verify it.

    Skips the download when valid files are already present, unless ``force``.
    Returns the bundle's paths. ``builder`` replaces the download step (tests).
    """
    spec = get_spec(name)
    folder = Path(folder) if folder is not None else data_dir()
    log = log or sys.stdout
    if not force and describe(name, folder, verify=True).status == "present":
        print(f"{name}: already present and valid in {folder} (use --force to download again)", file=log)
        return spec.paths(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".fetch-", dir=folder))
    except OSError as exc:
        raise DatasetUnavailableError(f"cannot write to the data directory {folder}: {exc}") from exc
    try:
        paths = (builder or _build)(spec, folder, work, log)
    except (ParameterError, zipfile.BadZipFile, zlib.error, EOFError, ValueError, KeyError, OSError) as exc:
        raise DatasetUnavailableError(
            f"the download of {name} from {spec.source} has unexpected content "
            f"({type(exc).__name__}: {exc}); nothing was written. Retry later or report it."
        ) from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    try:
        read_bundle(name, folder)
    except DatasetUnavailableError as exc:
        for path in paths:
            path.unlink(missing_ok=True)
        raise unavailable_error(spec, folder, f"the freshly written files failed verification and were removed: "
                                f"{str(exc).splitlines()[0]}") from exc
    for path in paths:
        print(f"{path}  sha256 {sha256(path)}", file=log)
    print(f"{name}: ok", file=log)
    return paths
