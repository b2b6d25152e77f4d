"""Load a user's dataset declared in a project file: an image folder, ``.npz`` arrays or a CSV/TSV of series.

Every loader returns a :class:`LoadedDataset` with train and test inputs in the
engine's layout (images ``(N, C, H, W)`` float32, series ``(N, T, 1)``), labels
(``-1`` everywhere for unlabelled data), class names and a content
fingerprint for cache keys. Problems raise :class:`DatasetUnavailableError`
with a message that names the file and the fix.
"""
from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lfx_engine.errors import DatasetUnavailableError
from lfx_engine.project.schema import EntryConfig

UNLABELLED = -1
MAX_IMAGE_PIXELS = 4096 * 4096
#: A user dataset larger than this many examples is refused unless max_examples caps it.
DEFAULT_MAX_EXAMPLES = 200_000
#: Values beyond this magnitude are refused: float32 would lose them or a model would see inf.
MAX_ABS_VALUE = 1e6


@dataclass
class LoadedDataset:
    """A user dataset in memory: both splits, class names (empty when unlabelled) and a fingerprint."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    class_names: tuple[str, ...]
    fingerprint: str
    notes: list[str] = field(default_factory=list)

    @property
    def labelled(self) -> bool:
        return bool(self.class_names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def _fail(cfg: EntryConfig, message: str) -> DatasetUnavailableError:
    return DatasetUnavailableError(f"dataset {cfg.name}: {message}")


def _image_files(folder: Path) -> list[Path]:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)


def _read_images(cfg: EntryConfig, files: list[Path]) -> np.ndarray:
    """Decode image files to ``(N, C, H, W)`` float32 in [0, 1] (converted and resized as declared)."""
    from PIL import Image, UnidentifiedImageError

    channels = cfg.get("channels")
    resize = cfg.get("resize")
    arrays, first_size, first_file = [], None, None
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    img: Image.Image  # opened as an ImageFile, then converted (and resized) to a plain Image
    for path in files:
        try:
            with Image.open(path) as img:
                img.load()
                if channels is None:
                    channels = 1 if img.mode in ("1", "L", "LA", "I", "I;16", "F") else 3
                img = img.convert("L" if channels == 1 else "RGB")
                if isinstance(resize, list):
                    img = img.resize((int(resize[1]), int(resize[0])), Image.Resampling.BILINEAR)
                if first_size is None:
                    first_size, first_file = img.size, path
                elif img.size != first_size:
                    assert first_file is not None  # set with first_size
                    raise _fail(cfg, f"mixed image sizes: {first_file.name} is {first_size[0]}×{first_size[1]} but "
                                     f"{path.name} is {img.size[0]}×{img.size[1]}; set resize = [height, width] to "
                                     "resize them all")
                arr = np.asarray(img, dtype=np.float32) / 255.0
        except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
            if isinstance(exc, DatasetUnavailableError):
                raise
            raise _fail(cfg, f"{path} is not a readable image ({type(exc).__name__}: {exc}); fix or remove it") \
                from None
        arrays.append(arr[None] if arr.ndim == 2 else np.transpose(arr, (2, 0, 1)))
    return np.stack(arrays).astype(np.float32)


def _image_folder(cfg: EntryConfig, folder: Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    if not folder.is_dir():
        raise _fail(cfg, f"folder {folder} does not exist (path is relative to the project file)")
    mode = cfg.get("labels", "auto")
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    labelled = mode == "folders" or (mode == "auto" and bool(subfolders) and not _image_files(folder))
    limit = int(cfg.get("max_examples", DEFAULT_MAX_EXAMPLES))
    if labelled:
        from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

        try:
            classes, index = find_classes(str(folder))
            samples = make_dataset(str(folder), index, extensions=IMG_EXTENSIONS)
        except (FileNotFoundError, OSError) as exc:
            raise _fail(cfg, f"{folder} is not an ImageFolder layout (one subfolder of images per class): {exc}") \
                from None
        files = [Path(p) for p, _ in samples]
        labels = np.array([c for _, c in samples], dtype=np.int64)
        names = tuple(classes)
    else:
        files = _image_files(folder)
        labels = np.full(len(files), UNLABELLED, dtype=np.int64)
        names = ()
    if not files:
        raise _fail(cfg, f"{folder} holds no images (.png, .jpg, ...)"
                         + (" in its class subfolders" if labelled else "") + "; add some or fix path")
    if len(files) > limit:
        raise _fail(cfg, f"{folder} holds {len(files)} images, more than max_examples = {limit}; raise max_examples "
                         "or point path at a smaller folder")
    return _read_images(cfg, files), labels, names


def _npz(cfg: EntryConfig, path: Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    if not path.is_file():
        raise _fail(cfg, f"file {path} does not exist (path is relative to the project file)")
    try:
        with np.load(path, allow_pickle=False) as bundle:
            if "x" not in bundle.files:
                raise _fail(cfg, f"{path} has no array named 'x' (it holds {', '.join(bundle.files) or 'nothing'}); "
                                 "save the inputs as x (and labels as y)")
            x = np.asarray(bundle["x"])
            y = np.asarray(bundle["y"]) if "y" in bundle.files else None
    except DatasetUnavailableError:
        raise
    except (OSError, ValueError, EOFError) as exc:
        raise _fail(cfg, f"{path} is not a readable .npz file ({type(exc).__name__}: {exc}); arrays that need pickle "
                         "are refused") from None
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    if not np.issubdtype(x.dtype, np.number):
        raise _fail(cfg, f"x in {path} has dtype {x.dtype}; it must be numeric")
    if x.ndim == 2:  # series without a feature axis
        x = x[:, :, None]
    elif x.ndim == 3 and cfg.get("input_shape") and len(cfg.get("input_shape")) == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = np.transpose(x, (0, 3, 1, 2))  # channels-last images
    if x.ndim not in (3, 4):
        raise _fail(cfg, f"x in {path} has shape {x.shape}; expected (N, C, H, W) images or (N, T) / (N, T, 1) series")
    with np.errstate(over="ignore"):  # values beyond float32 become inf, refused with a message below
        x = x.astype(np.float32)
    if isinstance(cfg.get("resize"), list) and x.ndim == 4:
        resized = torch.nn.functional.interpolate(torch.from_numpy(x), size=tuple(cfg.get("resize")),
                                                  mode="bilinear", align_corners=False)
        x = resized.numpy()
    names: tuple[str, ...] = ()
    if y is None:
        labels = np.full(len(x), UNLABELLED, dtype=np.int64)
    else:
        labels, names = _labels(cfg, y, len(x), str(path))
    return x, labels, names


def _labels(cfg: EntryConfig, y: np.ndarray, n: int, where: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Integer labels 0..K-1 and their names (strings are mapped in sorted order)."""
    y = np.asarray(y).reshape(-1)
    if len(y) != n:
        raise _fail(cfg, f"{where}: {len(y)} labels for {n} inputs")
    if np.issubdtype(y.dtype, np.integer) or (np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y))):
        values = y.astype(np.int64)
        if values.min() < 0:
            raise _fail(cfg, f"{where}: labels must be 0 or more, found {values.min()}")
        k = int(values.max()) + 1
        names = tuple(cfg.get("class_names") or [str(c) for c in range(k)])
        if len(names) < k:
            raise _fail(cfg, f"{where}: labels reach {k - 1} but class_names has {len(names)} names")
        return values, names
    texts = y.astype(str)
    classes = sorted(set(texts.tolist()))
    lookup = {c: i for i, c in enumerate(classes)}
    return np.array([lookup[t] for t in texts], dtype=np.int64), tuple(classes)


def _csv(cfg: EntryConfig, path: Path) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    if not path.is_file():
        raise _fail(cfg, f"file {path} does not exist (path is relative to the project file)")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise _fail(cfg, f"{path} cannot be read as text ({type(exc).__name__})") from None
    delimiter = cfg.get("delimiter") or ("\t" if path.suffix.lower() == ".tsv" or "\t" in text[:4096] else ",")
    rows = [row for row in csv.reader(io.StringIO(text), delimiter=delimiter) if any(cell.strip() for cell in row)]
    if not rows:
        raise _fail(cfg, f"{path} is empty")
    header_opt = cfg.get("header", "auto")

    def numeric(cell: str) -> bool:
        try:
            float(cell)
            return True
        except ValueError:
            return False

    has_header = header_opt is True or (header_opt == "auto" and not all(numeric(c) for c in rows[0] if c.strip()))
    header = [c.strip() for c in rows[0]] if has_header else None
    body = rows[1:] if has_header else rows
    column = cfg.get("label_column")
    label_index = None
    if column is not None:
        if isinstance(column, str):
            if header is None or column not in header:
                raise _fail(cfg, f"{path} has no column named {column!r}"
                                 + (f" (its columns: {', '.join(header[:10])})" if header else " (it has no header)"))
            label_index = header.index(column)
        else:
            label_index = int(column) if int(column) >= 0 else len(body[0]) + int(column)
    width = len(body[0]) if body else 0
    values, labels = [], []
    for number, row in enumerate(body, start=2 if has_header else 1):
        if len(row) != width:
            raise _fail(cfg, f"{path} line {number} has {len(row)} values, the first row {width}; every series "
                             "must have the same length (set resize to resample)")
        cells = [c for i, c in enumerate(row) if i != label_index]
        try:
            values.append([float(c) for c in cells])
        except ValueError:
            bad = next(c for c in cells if not numeric(c))
            raise _fail(cfg, f"{path} line {number}: {bad[:40]!r} is not a number") from None
        if label_index is not None:
            labels.append(row[label_index].strip())
    if not values:
        raise _fail(cfg, f"{path} has a header but no rows of values")
    x = np.asarray(values, dtype=np.float64)
    if cfg.get("normalize") == "z":
        std = x.std(axis=1, keepdims=True)
        x = (x - x.mean(axis=1, keepdims=True)) / np.where(std > 0, std, 1.0)
    if isinstance(cfg.get("resize"), int) and x.shape[1] != cfg.get("resize"):
        t_old = np.linspace(0.0, 1.0, x.shape[1])
        t_new = np.linspace(0.0, 1.0, int(cfg.get("resize")))
        x = np.stack([np.interp(t_new, t_old, row) for row in x])
    x32 = x.astype(np.float32)[:, :, None]
    if label_index is None:
        return x32, np.full(len(x32), UNLABELLED, dtype=np.int64), ()
    y, names = _labels(cfg, np.array(labels), len(x32), str(path))
    return x32, y, names


READERS = {"image_folder": _image_folder, "npz": _npz, "csv": _csv}


def _check_values(cfg: EntryConfig, x: np.ndarray, where: Path) -> np.ndarray:
    if not np.isfinite(x).all():
        raise _fail(cfg, f"{where} holds NaN or infinite values (after conversion to float32); clean them first")
    if np.abs(x).max(initial=0.0) > MAX_ABS_VALUE:
        raise _fail(cfg, f"{where} holds values up to {np.abs(x).max():.3g}; beyond ±{MAX_ABS_VALUE:g} is refused "
                         "(normalise the data, e.g. normalize = \"z\" for series)")
    value_range = cfg.get("value_range")
    if isinstance(value_range, list) and cfg.get("kind") == "image_folder":
        low, high = float(value_range[0]), float(value_range[1])
        x = low + (high - low) * x  # pixels decode to [0, 1]; map them onto the declared range
    elif isinstance(value_range, list):
        low, high = float(value_range[0]), float(value_range[1])
        if x.min() < low - 1e-6 or x.max() > high + 1e-6:
            raise _fail(cfg, f"{where} has values in [{x.min():.4g}, {x.max():.4g}], outside the declared "
                             f"value_range [{low:g}, {high:g}]; fix value_range or the data")
    return x


def split_indices(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Sorted (train, test) positions of a seeded random hold-out of ``round(n·fraction)`` examples (None: too few)."""
    n_test = max(1, int(round(n * fraction)))
    if n - n_test < 1:
        return None
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).numpy()
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def _split(cfg: EntryConfig, n: int) -> tuple[np.ndarray, np.ndarray]:
    split = split_indices(n, float(cfg.get("test_fraction", 0.2)), int(cfg.get("split_seed", 0)))
    if split is None:
        raise _fail(cfg, f"{n} examples are too few to split into train and test; add examples or give test_path")
    return split


def _fingerprint(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def load_dataset(cfg: EntryConfig) -> LoadedDataset:
    """Read a validated ``[datasets.NAME]`` entry into memory (DatasetUnavailableError on any problem)."""
    kind = cfg.get("kind")
    reader = READERS[str(kind)]
    path = Path(cfg.get("path"))
    x, y, names = reader(cfg, path)
    x = _check_values(cfg, x, path)
    notes = []
    if cfg.get("test_path") is not None:
        test_path = Path(cfg.get("test_path"))
        x_test, y_test, test_names = reader(cfg, test_path)
        x_test = _check_values(cfg, x_test, test_path)
        if x_test.shape[1:] != x.shape[1:]:
            raise _fail(cfg, f"test inputs have shape {x_test.shape[1:]} but training inputs {x.shape[1:]}")
        if test_names and names and test_names != names:
            raise _fail(cfg, f"test classes {list(test_names)[:5]} differ from training classes {list(names)[:5]}")
        x_train, y_train = x, y
    else:
        train_idx, test_idx = _split(cfg, len(x))
        x_train, y_train, x_test, y_test = x[train_idx], y[train_idx], x[test_idx], y[test_idx]
        notes.append(f"split {len(x)} examples into {len(x_train)} train / {len(x_test)} test "
                     f"(test_fraction {float(cfg.get('test_fraction', 0.2)):g}, seed {int(cfg.get('split_seed', 0))})")
    declared = cfg.get("input_shape")
    if isinstance(declared, list) and tuple(declared) != tuple(x_train.shape[1:]):
        raise _fail(cfg, f"inputs have shape {tuple(x_train.shape[1:])} but input_shape says {tuple(declared)}; "
                         "fix input_shape, or set resize / channels to convert them")
    if isinstance(cfg.get("class_names"), list) and names and not cfg.get("kind") == "npz":
        given = tuple(cfg.get("class_names"))
        if len(given) != len(names):
            raise _fail(cfg, f"class_names has {len(given)} names but the data has {len(names)} classes "
                             f"({', '.join(names[:10])})")
        names = given
    return LoadedDataset(torch.from_numpy(np.ascontiguousarray(x_train)), torch.from_numpy(y_train),
                         torch.from_numpy(np.ascontiguousarray(x_test)), torch.from_numpy(y_test), names,
                         _fingerprint(x_train, y_train, x_test, y_test), notes)


def make_baseline(kind: Any, x: torch.Tensor, train_mean: torch.Tensor | None = None) -> torch.Tensor:
    """Attribution baseline for inputs ``x``: zeros, the training mean, a Gaussian blur of each input, or a constant.

    Shared baselines are ``(1, *shape)``; ``blur`` gives one per input ``(N, *shape)``.
    """
    if kind in (None, "zeros"):
        return torch.zeros((1, *x.shape[1:]), dtype=torch.float32)
    if kind == "mean":
        if train_mean is None:
            raise DatasetUnavailableError("the 'mean' baseline needs the training split")
        return train_mean.reshape(1, *x.shape[1:]).float()
    if kind == "blur":
        from torchvision.transforms.functional import gaussian_blur

        if x.dim() != 4:  # series: blur along time
            kernel = torch.exp(-0.5 * (torch.arange(-10, 11, dtype=torch.float32) / 5.0) ** 2)
            kernel = (kernel / kernel.sum()).view(1, 1, -1)
            padded = torch.nn.functional.pad(x.transpose(1, 2), (10, 10), mode="replicate")
            return torch.nn.functional.conv1d(padded.reshape(-1, 1, padded.shape[-1]), kernel).reshape(
                x.shape[0], x.shape[2], -1).transpose(1, 2).contiguous()
        size = min(21, (min(x.shape[-2:]) // 2) * 2 - 1) if min(x.shape[-2:]) < 21 else 21
        return gaussian_blur(x.float(), kernel_size=[max(size, 1)] * 2, sigma=[5.0, 5.0])
    return torch.full((1, *x.shape[1:]), float(kind), dtype=torch.float32)
