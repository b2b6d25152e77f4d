"""The project file (``lfx.toml``): its schema, and validation that names the line of every problem.

A project file declares a user's own datasets (``[datasets.NAME]``) and
encoders (``[models.NAME]``); ``docs/PROJECT.md`` documents every key. This
module only reads and checks the file (types, allowed values, unknown keys,
references between entries); loading the data and the models is
:mod:`.datasets` and :mod:`.models`. Problems are collected, not raised, so a
bad entry is reported without hiding the good ones.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")
DATASET_KINDS = ("image_folder", "npz", "csv")
MODEL_KINDS = ("autoencoder", "vae", "encoder")
BUILTIN_LOSSES = ("mse", "bce", "l1")
BASELINES = ("zeros", "mean", "blur")
MU_LAYOUTS = ("output", "first_half", "even")
LABEL_MODES = ("auto", "folders", "none")
NORMALIZE = ("none", "z")

# key -> (accepted python types, description of the expected value)
_STR = ((str,), "a string")
_INT = ((int,), "an integer")
_NUM = ((int, float), "a number")
_BOOL = ((bool,), "true or false")
_LIST = ((list,), "a list")
_TABLE = ((dict,), "a table")
PROJECT_KEYS: dict[str, tuple[tuple[type, ...], str]] = {"name": _STR, "python_path": _LIST}
DATASET_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "kind": _STR, "path": _STR, "test_path": _STR, "test_fraction": _NUM, "split_seed": _INT,
    "labels": _STR, "label_column": ((str, int), "a column name or index"), "class_names": _LIST,
    "resize": ((list, int), "[height, width] for images or a length for series"), "channels": _INT,
    "input_shape": _LIST, "value_range": _LIST, "baseline": ((str, int, float), '"zeros", "mean", "blur" or a number'),
    "title": _STR, "normalize": _STR, "delimiter": _STR, "header": ((bool, str), 'true, false or "auto"'),
    "max_examples": _INT,
}
MODEL_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "dataset": _STR, "factory": _STR, "factory_kwargs": _TABLE, "weights": _STR, "archive": _STR,
    "decoder_archive": _STR, "encoder": _STR, "decoder": _STR, "loss": _STR, "kind": _STR, "mu": _STR,
    "latent_dim": _INT, "tracin_checkpoints": _LIST, "title": _STR, "max_memory_mb": _NUM,
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a project file: where (entry, key, line) and what to change."""

    entry: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}[{self.entry}] {self.message}" if self.entry else f"{where}{self.message}"


@dataclass
class EntryConfig:
    """One validated ``[datasets.NAME]`` or ``[models.NAME]`` table (paths made absolute)."""

    name: str
    section: str
    values: dict[str, Any]
    line: int | None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)


@dataclass
class ProjectConfig:
    """A parsed project file: its entries and the problems found in it."""

    path: Path
    name: str
    python_path: list[Path]
    datasets: dict[str, EntryConfig]
    models: dict[str, EntryConfig]
    problems: list[Problem]

    @property
    def folder(self) -> Path:
        return self.path.parent

    def all_problems(self) -> list[Problem]:
        """File-level problems, then each entry's."""
        out = list(self.problems)
        for entry in [*self.datasets.values(), *self.models.values()]:
            out.extend(entry.problems)
        return out


class _LineIndex:
    """Where each table header and key stands in the file (tomllib keeps no positions)."""

    _HEADER = re.compile(r"^\s*\[\s*([^\]\[]+?)\s*\]\s*(#.*)?$")
    _KEY = re.compile(r"^\s*([A-Za-z0-9_\-\"']+)\s*=")

    def __init__(self, text: str) -> None:
        self.headers: dict[str, int] = {}
        self.keys: dict[tuple[str, str], int] = {}
        table = ""
        for number, line in enumerate(text.splitlines(), start=1):
            header = self._HEADER.match(line)
            if header:
                table = ".".join(part.strip().strip('"').strip("'") for part in header.group(1).split("."))
                self.headers.setdefault(table, number)
                continue
            key = self._KEY.match(line)
            if key:
                self.keys.setdefault((table, key.group(1).strip('"').strip("'")), number)

    def of(self, table: str, key: str | None = None) -> int | None:
        if key is not None and (table, key) in self.keys:
            return self.keys[(table, key)]
        return self.headers.get(table)


def _check_keys(table: str, entry: str, values: dict[str, Any], allowed: dict[str, tuple[tuple[type, ...], str]],
                lines: _LineIndex) -> list[Problem]:
    problems = []
    for key, value in values.items():
        if key not in allowed:
            close = [k for k in allowed if k.startswith(key[:3])][:3]
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            problems.append(Problem(entry, f"unknown key {key!r}{hint}; allowed keys: {', '.join(sorted(allowed))}",
                                    lines.of(table, key)))
            continue
        types, expected = allowed[key]
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not ok:
            problems.append(Problem(entry, f"{key} must be {expected}, got {type(value).__name__} {value!r}"[:300],
                                    lines.of(table, key)))
    return problems


def _choice(entry: str, values: dict[str, Any], key: str, options: tuple[str, ...], table: str,
            lines: _LineIndex) -> list[Problem]:
    value = values.get(key)
    if value is None or not isinstance(value, str) or value in options:
        return []
    return [Problem(entry, f"{key} must be one of {', '.join(options)}, got {value!r}", lines.of(table, key))]


def _resolve(folder: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return (path if path.is_absolute() else folder / path).resolve()


def _validate_dataset(name: str, values: dict[str, Any], folder: Path, lines: _LineIndex) -> EntryConfig:
    table = f"datasets.{name}"
    entry = EntryConfig(name, "datasets", dict(values), lines.of(table))
    where = f"datasets.{name}"
    problems = _check_keys(table, where, values, DATASET_KEYS, lines)
    kind = values.get("kind")
    if kind is None:
        problems.append(Problem(where, f"kind is missing; set kind = one of {', '.join(DATASET_KINDS)}",
                                lines.of(table)))
    problems += _choice(where, values, "kind", DATASET_KINDS, table, lines)
    problems += _choice(where, values, "labels", LABEL_MODES, table, lines)
    problems += _choice(where, values, "normalize", NORMALIZE, table, lines)
    if "path" not in values:
        problems.append(Problem(where, "path is missing: the folder or file that holds the data", lines.of(table)))
    for key in ("path", "test_path"):
        if isinstance(values.get(key), str):
            entry.values[key] = _resolve(folder, values[key])
    fraction = values.get("test_fraction")
    if isinstance(fraction, (int, float)) and not isinstance(fraction, bool) and not 0.0 < float(fraction) < 1.0:
        problems.append(Problem(where, f"test_fraction must lie strictly between 0 and 1, got {fraction}",
                                lines.of(table, "test_fraction")))
    baseline = values.get("baseline")
    if isinstance(baseline, str) and baseline not in BASELINES:
        problems.append(Problem(where, f"baseline must be one of {', '.join(BASELINES)} or a number, got {baseline!r}",
                                lines.of(table, "baseline")))
    vr = values.get("value_range")
    if isinstance(vr, list) and not (len(vr) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                          for v in vr) and vr[0] < vr[1]):
        problems.append(Problem(where, f"value_range must be [low, high] with low < high, got {vr!r}",
                                lines.of(table, "value_range")))
    resize = values.get("resize")
    if isinstance(resize, list) and not (len(resize) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                  and 1 <= v <= 1024 for v in resize)):
        problems.append(Problem(where, f"resize must be [height, width] with sizes 1..1024, got {resize!r}",
                                lines.of(table, "resize")))
    if isinstance(resize, int) and not isinstance(resize, bool) and not 2 <= resize <= 100_000:
        problems.append(Problem(where, f"a series length must lie in 2..100000, got {resize}",
                                lines.of(table, "resize")))
    channels = values.get("channels")
    if isinstance(channels, int) and not isinstance(channels, bool) and channels not in (1, 3):
        problems.append(Problem(where, f"channels must be 1 (grayscale) or 3 (RGB), got {channels}",
                                lines.of(table, "channels")))
    shape = values.get("input_shape")
    if isinstance(shape, list) and not (len(shape) in (2, 3) and all(isinstance(v, int) and not isinstance(v, bool)
                                                                     and v >= 1 for v in shape)):
        problems.append(Problem(where, f"input_shape must be [C, H, W] (images) or [T, 1] (series), got {shape!r}",
                                lines.of(table, "input_shape")))
    names = values.get("class_names")
    if isinstance(names, list) and not all(isinstance(v, str) and v for v in names):
        problems.append(Problem(where, "class_names must be a list of non-empty strings",
                                lines.of(table, "class_names")))
    maximum = values.get("max_examples")
    if isinstance(maximum, int) and not isinstance(maximum, bool) and maximum < 2:
        problems.append(Problem(where, f"max_examples must be at least 2, got {maximum}", lines.of(table, "max_examples")))
    entry.problems = problems
    return entry


def _validate_model(name: str, values: dict[str, Any], folder: Path, datasets: dict[str, EntryConfig],
                    builtin_datasets: tuple[str, ...], lines: _LineIndex) -> EntryConfig:
    table = f"models.{name}"
    entry = EntryConfig(name, "models", dict(values), lines.of(table))
    where = f"models.{name}"
    problems = _check_keys(table, where, values, MODEL_KEYS, lines)
    problems += _choice(where, values, "kind", MODEL_KINDS, table, lines)
    dataset = values.get("dataset")
    if dataset is None:
        problems.append(Problem(where, "dataset is missing: the name of a [datasets.NAME] table or a built-in "
                                       f"dataset ({', '.join(builtin_datasets)})", lines.of(table)))
    elif isinstance(dataset, str) and dataset not in datasets and dataset not in builtin_datasets:
        problems.append(Problem(where, f"dataset {dataset!r} is declared nowhere; declare [datasets.{dataset}] or use "
                                       f"one of {', '.join([*datasets, *builtin_datasets])}",
                                lines.of(table, "dataset")))
    has_factory, has_archive = "factory" in values, "archive" in values
    if has_factory == has_archive:
        problems.append(Problem(where, "give exactly one of factory (with weights) or archive (a torch.export .pt2 "
                                       "file)", lines.of(table)))
    if has_factory and isinstance(values["factory"], str) and not re.match(
            r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$", values["factory"]):
        problems.append(Problem(where, f"factory must look like 'package.module:function', got {values['factory']!r}",
                                lines.of(table, "factory")))
    if has_factory and "weights" not in values:
        problems.append(Problem(where, "weights is missing: a .safetensors file or a state-dict .pt/.pth file for "
                                       "the factory's model", lines.of(table)))
    if has_archive and ("encoder" in values and values["encoder"] not in ("", ".")):
        problems.append(Problem(where, "an archive is the encoder itself; leave encoder unset",
                                lines.of(table, "encoder")))
    loss = values.get("loss")
    if isinstance(loss, str) and loss not in BUILTIN_LOSSES and ":" not in loss:
        problems.append(Problem(where, f"loss must be one of {', '.join(BUILTIN_LOSSES)} or 'package.module:function', "
                                       f"got {loss!r}", lines.of(table, "loss")))
    mu = values.get("mu")
    if isinstance(mu, str) and mu not in MU_LAYOUTS and not re.match(r"^tuple:\d+$", mu):
        problems.append(Problem(where, f"mu must be one of {', '.join(MU_LAYOUTS)} or 'tuple:K', got {mu!r}",
                                lines.of(table, "mu")))
    latent = values.get("latent_dim")
    if isinstance(latent, int) and not isinstance(latent, bool) and not 1 <= latent <= 65536:
        problems.append(Problem(where, f"latent_dim must lie in 1..65536, got {latent}", lines.of(table, "latent_dim")))
    budget = values.get("max_memory_mb")
    if isinstance(budget, (int, float)) and not isinstance(budget, bool) and budget <= 0:
        problems.append(Problem(where, f"max_memory_mb must be positive, got {budget}", lines.of(table, "max_memory_mb")))
    for key in ("weights", "archive", "decoder_archive"):
        if isinstance(values.get(key), str):
            entry.values[key] = _resolve(folder, values[key])
    ckpts = values.get("tracin_checkpoints")
    if isinstance(ckpts, list):
        if not all(isinstance(c, str) for c in ckpts):
            problems.append(Problem(where, "tracin_checkpoints must be a list of file paths",
                                    lines.of(table, "tracin_checkpoints")))
        else:
            entry.values["tracin_checkpoints"] = [_resolve(folder, c) for c in ckpts]
    entry.problems = problems
    return entry


def parse_project(path: str | Path, builtin_datasets: tuple[str, ...] = ()) -> ProjectConfig:
    """Read and validate a project file; every problem is collected in the result, none is raised."""
    path = Path(path).expanduser().resolve()
    empty = ProjectConfig(path, path.stem, [], {}, {}, [])
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        empty.problems.append(Problem("", f"project file {path} not found"))
        return empty
    except (OSError, UnicodeDecodeError) as exc:
        empty.problems.append(Problem("", f"project file {path} cannot be read ({type(exc).__name__}: {exc})"))
        return empty
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        empty.problems.append(Problem("", f"not valid TOML: {exc}", int(match.group(1)) if match else None))
        return empty
    lines = _LineIndex(text)
    problems: list[Problem] = []
    for key in data:
        if key not in ("project", "datasets", "models"):
            problems.append(Problem("", f"unknown table [{key}]; a project file has [project], [datasets.NAME] and "
                                        "[models.NAME] tables", lines.of(key)))
    project = data.get("project", {})
    if not isinstance(project, dict):
        problems.append(Problem("project", "project must be a table", lines.of("", "project")))
        project = {}
    problems += _check_keys("project", "project", project, PROJECT_KEYS, lines)
    python_path = []
    if isinstance(project.get("python_path"), list):
        for item in project["python_path"]:
            if isinstance(item, str):
                python_path.append(_resolve(path.parent, item))
            else:
                problems.append(Problem("project", "python_path must be a list of folders",
                                        lines.of("project", "python_path")))
    sections: dict[str, dict[str, EntryConfig]] = {"datasets": {}, "models": {}}
    for section in ("datasets", "models"):
        tables = data.get(section, {})
        if not isinstance(tables, dict):
            problems.append(Problem("", f"{section} must hold [{section}.NAME] tables", lines.of("", section)))
            continue
        for name, values in tables.items():
            if not isinstance(values, dict):
                problems.append(Problem(f"{section}.{name}", f"{section}.{name} must be a table "
                                        f"([{section}.{name}] with keys under it)", lines.of(section, name)))
                continue
            if not NAME_PATTERN.match(name):
                problems.append(Problem(f"{section}.{name}", "names start with a letter and use only letters, digits, "
                                        "'_' and '-' (64 characters at most)", lines.of(f"{section}.{name}")))
                continue
            if section == "datasets":
                if name in builtin_datasets:
                    problems.append(Problem(f"datasets.{name}", f"{name!r} is a built-in dataset; choose another name",
                                            lines.of(f"datasets.{name}")))
                    continue
                sections[section][name] = _validate_dataset(name, values, path.parent, lines)
            else:
                sections[section][name] = _validate_model(name, values, path.parent, sections["datasets"],
                                                          builtin_datasets, lines)
    declared_name = project.get("name")
    title = declared_name if isinstance(declared_name, str) else path.parent.name
    return ProjectConfig(path, title, python_path, sections["datasets"], sections["models"], problems)
