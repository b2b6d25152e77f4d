"""Readers and validators for the on-disk dataset bundles.

Formats (see ``shared/data/README.md``):

* ``keras_npz`` (MNIST, CIFAR-10/100): ``x_train``, ``y_train``, ``x_test``,
  ``y_test``; images uint8 ``(N,28,28)`` or HWC ``(N,32,32,3)``; labels integer.
* ``ucr_tsv`` (ECG5000): ``ECG5000_TRAIN.tsv`` and ``ECG5000_TEST.tsv``, no header,
  column 0 the UCR class 1..5, columns 1..140 the signal.
* ``dsprites_npz``: ``imgs`` (N,64,64) uint8 in {0,1}, ``latents_classes`` (N,5),
  ``latents_values`` (N,5), ``original_indices`` (N,).

Every failure to read or validate (missing file, truncated zip, wrong keys,
shapes, dtypes, label ranges, unparsable text) becomes one
:class:`DatasetUnavailableError` naming the dataset, the paths looked at and the
fetch command, so no numpy/zipfile/pandas traceback reaches the user.
"""
from __future__ import annotations

import contextlib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from lfx_engine.data.registry import DatasetSpec, get_spec
from lfx_engine.errors import DatasetUnavailableError

KERAS_KEYS = ("x_train", "y_train", "x_test", "y_test")
DSPRITES_KEYS = ("imgs", "latents_classes", "latents_values", "original_indices")
ECG_LENGTH = 140
ECG_CLASSES = (1, 2, 3, 4, 5)
N_DSPRITES_LATENTS = 5  # shape, scale, orientation, posX, posY (colour dropped)


class MalformedBundle(Exception):
    """Internal: a bundle was read but its content is wrong (turned into the user error)."""


def unavailable_error(spec: DatasetSpec, folder: Path, problem: str) -> DatasetUnavailableError:
    """Build the single user-facing error for a missing or malformed dataset."""
    looked = "\n".join(
        f"  {path} ({'found' if path.exists() else 'missing'})" for path in spec.paths(folder)
    )
    return DatasetUnavailableError(
        f"dataset {spec.name!r} ({spec.title}) is unavailable: {problem}\n"
        f"Looked at:\n{looked}\n"
        f"Fix: run `{spec.fetch_command}` on a machine with internet access; it downloads "
        f"{spec.title} from its official source ({spec.source}) into the data directory "
        f"(now {folder}; pass --data-dir DIR to write elsewhere). Or set the environment "
        f"variable LFX_DATA_DIR to a folder that already holds {', '.join(spec.files)}."
    )


def require_files(spec: DatasetSpec, folder: Path) -> list[Path]:
    """The dataset's file paths in ``folder``; the user error if any is missing."""
    paths = spec.paths(folder)
    missing = [path for path in paths if not path.is_file()]
    if missing:
        names = ", ".join(path.name for path in missing)
        raise unavailable_error(spec, folder, f"file(s) not found: {names}")
    return paths


@contextlib.contextmanager
def guard(spec: DatasetSpec, folder: Path, path: Path) -> Iterator[None]:
    """Turn any read/validation failure inside the block into the user error."""
    try:
        yield
    except DatasetUnavailableError:
        raise
    except MemoryError:
        raise
    except MalformedBundle as exc:
        raise unavailable_error(spec, folder, f"{path} is malformed: {exc}") from exc
    except FileNotFoundError as exc:
        raise unavailable_error(spec, folder, f"file not found: {path}") from exc
    except Exception as exc:  # BadZipFile, zlib.error, ValueError, KeyError, OSError, EOFError, ...
        raise unavailable_error(
            spec, folder, f"{path} is malformed or truncated ({type(exc).__name__}: {exc})"
        ) from exc


# ----------------------------------------------------------------------------- checks

def check_labels(y: np.ndarray, n: int, n_classes: int, key: str) -> np.ndarray:
    """Validate a label vector (1-D, integer, length n, values in [0, n_classes)); return int64."""
    if y.ndim != 1 or y.shape[0] != n:
        raise MalformedBundle(f"{key} has shape {y.shape}, expected ({n},)")
    if not np.issubdtype(y.dtype, np.integer):
        raise MalformedBundle(f"{key} has dtype {y.dtype}, expected an integer type")
    if n and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise MalformedBundle(
            f"{key} holds labels in [{int(y.min())}, {int(y.max())}], expected [0, {n_classes - 1}]"
        )
    return y.astype(np.int64, copy=False)


def raw_image_shape(spec: DatasetSpec) -> tuple[int, ...]:
    """Per-image shape as stored in a keras-style bundle: (H, W) for gray, (H, W, C) for RGB."""
    channels, height, width = spec.input_shape
    return (height, width) if channels == 1 else (height, width, channels)


def check_images(x: np.ndarray, spec: DatasetSpec, key: str) -> np.ndarray:
    """Validate a uint8 image array of a keras-style bundle."""
    expected = raw_image_shape(spec)
    if x.ndim != 1 + len(expected) or tuple(x.shape[1:]) != expected:
        raise MalformedBundle(f"{key} has shape {x.shape}, expected (N, {', '.join(map(str, expected))})")
    if x.dtype != np.uint8:
        raise MalformedBundle(f"{key} has dtype {x.dtype}, expected uint8")
    return x


def check_keras_arrays(spec: DatasetSpec, arrays: dict[str, np.ndarray], split: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate the (x, y) pair of one split of a keras-style bundle."""
    x = check_images(arrays[f"x_{split}"], spec, f"x_{split}")
    y = check_labels(arrays[f"y_{split}"], x.shape[0], spec.n_classes, f"y_{split}")
    return x, y


def check_ucr_table(table: np.ndarray, what: str) -> np.ndarray:
    """Validate a UCR table (N, 1+140): finite, class column integral in 1..5."""
    if table.ndim != 2 or table.shape[1] != 1 + ECG_LENGTH or table.shape[0] == 0:
        raise MalformedBundle(f"{what} has shape {table.shape}, expected (N, {1 + ECG_LENGTH}) with N > 0")
    if not np.isfinite(table).all():
        raise MalformedBundle(f"{what} holds missing or non-finite values (truncated or ragged rows?)")
    classes = table[:, 0]
    if not np.array_equal(classes, np.round(classes)) or not np.isin(classes, ECG_CLASSES).all():
        bad = np.unique(classes[~np.isin(classes, ECG_CLASSES)])[:5]
        raise MalformedBundle(f"{what} column 0 must be a class in 1..5, found {bad.tolist()}")
    return table


def check_dsprites_arrays(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Validate a dSprites bundle and return it with canonical dtypes."""
    imgs = arrays["imgs"]
    n = imgs.shape[0] if imgs.ndim else 0
    if imgs.ndim != 3 or imgs.shape[1:] != (64, 64) or n == 0:
        raise MalformedBundle(f"imgs has shape {imgs.shape}, expected (N, 64, 64) with N > 0")
    if imgs.dtype != np.uint8:
        raise MalformedBundle(f"imgs has dtype {imgs.dtype}, expected uint8")
    if int(imgs.max()) > 1:
        raise MalformedBundle(f"imgs must be binary (0/1), found a maximum of {int(imgs.max())}")
    out = {"imgs": imgs}
    for key in ("latents_classes", "latents_values"):
        value = arrays[key]
        if value.shape != (n, N_DSPRITES_LATENTS):
            raise MalformedBundle(f"{key} has shape {value.shape}, expected ({n}, {N_DSPRITES_LATENTS})")
        out[key] = value
    if not np.issubdtype(out["latents_classes"].dtype, np.integer):
        raise MalformedBundle(f"latents_classes has dtype {out['latents_classes'].dtype}, expected integer")
    shapes = out["latents_classes"][:, 0]
    if int(shapes.min()) < 0 or int(shapes.max()) > 2:
        raise MalformedBundle("latents_classes[:, 0] (shape) must lie in 0..2")
    out["latents_classes"] = out["latents_classes"].astype(np.int64)
    out["latents_values"] = out["latents_values"].astype(np.float32, copy=False)
    indices = arrays["original_indices"]
    if indices.shape != (n,) or not np.issubdtype(indices.dtype, np.integer):
        raise MalformedBundle(f"original_indices has shape {indices.shape} / dtype {indices.dtype}, expected ({n},) integer")
    out["original_indices"] = indices.astype(np.int64, copy=False)
    return out


# ----------------------------------------------------------------------------- raw readers

def _load_npz_members(path: Path, required: tuple[str, ...], wanted: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Read ``wanted`` members of an npz after checking that all ``required`` ones exist."""
    with open(path, "rb") as handle:
        magic = handle.read(6)
    if not magic:
        raise MalformedBundle("the file is empty")
    if magic.startswith(b"\x93NUMPY"):
        raise MalformedBundle("not an npz archive (a bare .npy array was found)")
    if not magic.startswith(b"PK"):
        raise MalformedBundle("not an npz (zip) archive: the file is corrupt or not a dataset bundle")
    with np.load(path, allow_pickle=False) as archive:
        missing = [key for key in required if key not in archive.files]
        if missing:
            raise MalformedBundle(
                f"missing array(s) {', '.join(missing)}; found {', '.join(archive.files) or 'none'}"
            )
        arrays = {}
        for key in wanted:
            try:
                arrays[key] = archive[key]
            except ValueError as exc:
                if "allow_pickle" not in str(exc):
                    raise
                raise MalformedBundle(f"{key} holds pickled Python objects, which are refused") from exc
        return arrays


def read_keras_split(spec: DatasetSpec, folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Raw validated (uint8 images, int64 labels) of ``split`` ('train'/'test') of a keras bundle."""
    (path,) = require_files(spec, folder)
    with guard(spec, folder, path):
        arrays = _load_npz_members(path, KERAS_KEYS, (f"x_{split}", f"y_{split}"))
        return check_keras_arrays(spec, arrays, split)


def parse_ucr_tsv(path: Path) -> np.ndarray:
    """Parse one UCR ``.tsv`` file into a float64 table (N, 141) (no validation)."""
    import pandas as pd  # imported lazily: only the ECG reader needs it

    frame = pd.read_csv(path, sep="\t", header=None, dtype=np.float64, float_precision="round_trip")
    return frame.to_numpy(dtype=np.float64)


def read_ucr_tables(spec: DatasetSpec, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Validated UCR (train, test) tables of ECG5000, each (N, 141) float64."""
    train_path, test_path = require_files(spec, folder)
    tables = []
    for path in (train_path, test_path):
        with guard(spec, folder, path):
            tables.append(check_ucr_table(parse_ucr_tsv(path), path.name))
    return tables[0], tables[1]


def read_dsprites(spec: DatasetSpec, folder: Path) -> dict[str, np.ndarray]:
    """Validated dSprites bundle arrays."""
    (path,) = require_files(spec, folder)
    with guard(spec, folder, path):
        return check_dsprites_arrays(_load_npz_members(path, DSPRITES_KEYS, DSPRITES_KEYS))


def read_bundle(name: str, folder: Path) -> dict[str, np.ndarray]:
    """Read and validate a whole bundle (used to verify a fresh download).

    Keras bundles give their four arrays, ECG gives ``train``/``test`` tables,
    dSprites its four arrays.
    """
    spec = get_spec(name)
    folder = Path(folder)
    if spec.bundle_format == "keras_npz":
        out: dict[str, np.ndarray] = {}
        for split in ("train", "test"):
            out[f"x_{split}"], out[f"y_{split}"] = read_keras_split(spec, folder, split)
        return out
    if spec.bundle_format == "ucr_tsv":
        train, test = read_ucr_tables(spec, folder)
        return {"train": train, "test": test}
    return read_dsprites(spec, folder)


# ----------------------------------------------------------------------------- tensors

def images_to_tensor(x: np.ndarray, scale: float = 255.0) -> torch.Tensor:
    """uint8 images (N,H,W) or (N,H,W,C) -> float32 (N,C,H,W) divided by ``scale``."""
    source = torch.from_numpy(np.ascontiguousarray(x))
    source = source.unsqueeze(1) if source.ndim == 3 else source.permute(0, 3, 1, 2)
    out = torch.empty(source.shape, dtype=torch.float32)
    out.copy_(source)
    if scale != 1.0:
        out.div_(scale)
    return out


# ----------------------------------------------------------------------------- status (data list)

@dataclass
class DatasetStatus:
    """What ``data list`` shows for one dataset: present/missing/malformed, where, shapes."""

    name: str
    status: str
    paths: list[Path]
    shapes: dict[str, str] = field(default_factory=dict)
    problem: str = ""


def _npz_header_shapes(path: Path) -> dict[str, str]:
    """Shapes and dtypes of an npz's arrays, read from the .npy headers only (no data)."""
    shapes = {}
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            with archive.open(member) as handle:
                version = np.lib.format.read_magic(handle)
                reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                          else np.lib.format.read_array_header_2_0)
                shape, _, dtype = reader(handle)
            shapes[member.removesuffix(".npy")] = f"{shape} {dtype}"
    return shapes


def _tsv_shape(path: Path) -> str:
    """Rows x columns of a tab-separated file, counted without parsing numbers."""
    data = path.read_bytes()
    lines = [line for line in data.splitlines() if line.strip()]
    columns = len(lines[0].split(b"\t")) if lines else 0
    return f"({len(lines)}, {columns}) text"


def describe(name: str, folder: Path, verify: bool = False) -> DatasetStatus:
    """Status of dataset ``name`` in ``folder`` (cheap header check; full read if ``verify``)."""
    spec = get_spec(name)
    folder = Path(folder)
    paths = spec.paths(folder)
    status = DatasetStatus(name=name, status="present", paths=paths)
    missing = [path.name for path in paths if not path.is_file()]
    if missing:
        status.status, status.problem = "missing", f"not found: {', '.join(missing)}"
        return status
    try:
        for path in paths:
            if path.suffix == ".npz":
                status.shapes.update(_npz_header_shapes(path))
            else:
                status.shapes[path.name] = _tsv_shape(path)
        if verify:
            read_bundle(name, folder)
    except DatasetUnavailableError as exc:
        status.status, status.problem = "malformed", str(exc).splitlines()[0]
    except Exception as exc:  # unreadable headers: report, never crash the listing
        status.status, status.problem = "malformed", f"{type(exc).__name__}: {exc}"
    return status
