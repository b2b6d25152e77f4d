"""Pure conversions from the official download formats to the bundle formats.

Kept free of network access so they can be unit-tested on generated data:

* :func:`convert_torchvision_arrays` — torchvision MNIST/CIFAR ``data``/``targets``
  to the keras-style npz arrays.
* :func:`parse_ucr_text` + :func:`convert_ucr_tables` + :func:`format_ucr_tsv` —
  the UCR ECG5000 files (``.tsv``, ``.txt``, ``.ts`` or ``.arff``) to the two
  tab-separated tables the reader expects.
* :func:`convert_dsprites_archive` — DeepMind's dSprites arrays (6 latents,
  colour first) to the bundle (5 latents, ``original_indices``).

Invalid input raises :class:`ParameterError` describing what is wrong.
"""
from __future__ import annotations

from typing import Any, BinaryIO

import numpy as np

from lfx_engine.data.readers import (
    MalformedBundle,
    check_dsprites_arrays,
    check_keras_arrays,
    check_ucr_table,
)
from lfx_engine.data.registry import get_spec
from lfx_engine.errors import ParameterError

UCR_FORMATS = ("tsv", "txt", "ts", "arff")


def _as_numpy(value: Any) -> np.ndarray:
    """numpy view of a numpy array, torch tensor or list."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def convert_torchvision_arrays(name: str, x_train: Any, y_train: Any, x_test: Any, y_test: Any) -> dict[str, np.ndarray]:
    """torchvision ``dataset.data`` / ``dataset.targets`` of both splits -> keras-style bundle arrays.

    MNIST ``data`` is a uint8 tensor (N,28,28); CIFAR ``data`` a uint8 array
    (N,32,32,3) and ``targets`` a list. Labels are stored as uint8.
    """
    spec = get_spec(name)
    if spec.bundle_format != "keras_npz":
        raise ParameterError(f"{name!r} is not a torchvision image dataset")
    arrays = {"x_train": _as_numpy(x_train), "y_train": _as_numpy(y_train),
              "x_test": _as_numpy(x_test), "y_test": _as_numpy(y_test)}
    out: dict[str, np.ndarray] = {}
    try:
        for split in ("train", "test"):
            x, y = check_keras_arrays(spec, arrays, split)
            out[f"x_{split}"] = np.ascontiguousarray(x)
            out[f"y_{split}"] = y.astype(np.uint8 if spec.n_classes <= 256 else np.int64)
    except MalformedBundle as exc:
        raise ParameterError(f"cannot convert {name} arrays: {exc}") from exc
    return out


def _rows_to_table(rows: list[list[str]], what: str) -> np.ndarray:
    """List of equally long string rows -> float64 table; ParameterError if ragged or non-numeric."""
    if not rows:
        raise ParameterError(f"{what}: no data rows found")
    lengths = {len(row) for row in rows}
    if len(lengths) != 1:
        raise ParameterError(f"{what}: rows have different lengths {sorted(lengths)[:5]}")
    try:
        return np.array(rows, dtype=np.float64)
    except ValueError as exc:
        raise ParameterError(f"{what}: non-numeric value ({exc})") from exc


def parse_ucr_text(text: str, fmt: str, what: str = "UCR file") -> np.ndarray:
    """Parse one UCR file's text into a (N, 1+T) table with the class in column 0.

    ``tsv``: tab-separated, class first (UCR 2018). ``txt``: whitespace-separated,
    class first (old UCR). ``ts``: sktime/aeon, ``@`` header lines, then
    ``v1,...,vT:class``. ``arff``: ``@data`` section, comma-separated, class last.
    """
    if fmt not in UCR_FORMATS:
        raise ParameterError(f"unknown UCR format {fmt!r}; expected one of {', '.join(UCR_FORMATS)}")
    lines = [line.strip() for line in text.splitlines()]
    rows: list[list[str]] = []
    if fmt in ("tsv", "txt"):
        rows = [line.split("\t") if fmt == "tsv" else line.split() for line in lines if line]
    elif fmt == "ts":
        in_data = False
        for line in lines:
            if not line or line.startswith("#"):
                continue
            if line.startswith("@"):
                in_data = in_data or line.lower().startswith("@data")
                continue
            if in_data:
                values, _, label = line.rpartition(":")
                rows.append([label.strip().strip("'\"")] + values.split(","))
    else:  # arff
        in_data = False
        for line in lines:
            if not line or line.startswith("%"):
                continue
            if line.lower().startswith("@data"):
                in_data = True
            elif in_data:
                fields = [value.strip().strip("'\"") for value in line.split(",")]
                rows.append(fields[-1:] + fields[:-1])
    return _rows_to_table(rows, what)


def convert_ucr_tables(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate the ECG5000 (train, test) tables (N, 141), class in 1..5 in column 0; float64 copies."""
    out = []
    for table, what in ((train, "ECG5000 train table"), (test, "ECG5000 test table")):
        table = np.array(table, dtype=np.float64)
        try:
            out.append(check_ucr_table(table, what))
        except MalformedBundle as exc:
            raise ParameterError(str(exc)) from exc
    return out[0], out[1]


def format_ucr_tsv(table: np.ndarray) -> str:
    """A UCR table as tab-separated text: integer class, then values with round-trip precision."""
    lines = []
    for row in table:
        values = "\t".join(repr(float(value)) for value in row[1:])
        lines.append(f"{int(row[0])}\t{values}")
    return "\n".join(lines) + "\n"


def convert_dsprites_archive(imgs: Any, latents_classes: Any, latents_values: Any) -> dict[str, np.ndarray]:
    """DeepMind's dSprites arrays -> bundle arrays.

    The official latents have 6 columns (colour, shape, scale, orientation, posX,
    posY); colour is constant and dropped. ``original_indices`` is ``arange(N)``
    because the download holds all 737,280 images in canonical order.
    """
    imgs = _as_numpy(imgs)
    classes = _as_numpy(latents_classes)
    values = _as_numpy(latents_values)
    if classes.ndim == 2 and classes.shape[1] == 6:
        classes = classes[:, 1:]
    if values.ndim == 2 and values.shape[1] == 6:
        values = values[:, 1:]
    if imgs.size and (imgs.min() < 0 or imgs.max() > 1):
        raise ParameterError("dSprites imgs must be binary (0/1)")
    arrays = {
        "imgs": np.ascontiguousarray(imgs.astype(np.uint8, copy=False)),
        "latents_classes": classes.astype(np.int16) if np.issubdtype(classes.dtype, np.integer) else classes,
        "latents_values": values.astype(np.float32) if np.issubdtype(values.dtype, np.floating) else values,
        "original_indices": np.arange(imgs.shape[0] if imgs.ndim else 0, dtype=np.int64),
    }
    try:
        check_dsprites_arrays(arrays)
    except MalformedBundle as exc:
        raise ParameterError(f"cannot convert dSprites arrays: {exc}") from exc
    return arrays


def npz_writer(arrays: dict[str, np.ndarray]):
    """A writer for :mod:`lfx_engine.atomic` that stores ``arrays`` as a compressed npz."""
    def write(handle: BinaryIO) -> None:
        # numpy's stubs match **kwds against allow_pickle: bool too; every value here is an array
        np.savez_compressed(handle, **arrays)  # type: ignore[arg-type]
    return write


def text_writer(text: str):
    """A writer for :mod:`lfx_engine.atomic` that stores UTF-8 text."""
    def write(handle: BinaryIO) -> None:
        handle.write(text.encode("utf-8"))
    return write
