"""One schema for the zoo manifest's records: a bad record is reported and skipped, the rest stay usable.

``read_manifest`` returns the file as it is (training updates it record by record);
everything that *uses* trained models (the catalogue, ``load_entry``, ``zoo list`` and
``zoo verify``) reads :func:`valid_records` instead, so garbage, missing or mistyped
fields, or a path that leaves the checkpoint folder (``../../x``) never reaches a
loader. Problems name the record and the field, never the hash of a refused file.
"""
from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

from lfx_engine.errors import CheckpointError

SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


def _inside(root: Path, rel: Any) -> str:
    """Why ``rel`` is not a file path inside ``root`` ("" when it is)."""
    if not isinstance(rel, str) or not rel or len(rel) > 512 or "\x00" in rel:
        return "is not a relative file path"
    pure = PurePosixPath(rel.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts:
        return "points outside the checkpoint folder"
    try:
        (root / pure).resolve().relative_to(root.resolve())
    except (ValueError, OSError):
        return "points outside the checkpoint folder"
    return ""


def check_record(name: Any, rec: Any, root: Path) -> str:
    """What is wrong with one manifest record ("" when it can be loaded)."""
    from lfx_engine.models.registry import ARCHITECTURES
    from lfx_engine.training.zoo import DATASETS

    if not isinstance(name, str) or not NAME.match(name):
        return "its name is not a plain model name"
    if not isinstance(rec, dict):
        return "it is not a record (a JSON object)"
    if rec.get("name") != name:
        return "its name field differs from its key"
    for key, kind in (("file", str), ("sha256", str), ("arch", str), ("dataset", str), ("task", str)):
        if not isinstance(rec.get(key), kind):
            return f"field {key!r} is missing or not a {kind.__name__}"
    if why := _inside(root, rec["file"]):
        return f"its file {why}"
    if not SHA256.match(rec["sha256"]):
        return "its sha256 is not 64 hex digits"
    if rec["arch"] not in ARCHITECTURES:
        return "its architecture is not one of the zoo's"
    if rec["dataset"] not in DATASETS:
        return "its dataset is not a built-in dataset"
    if not isinstance(rec.get("arch_kwargs", {}), dict):
        return "field 'arch_kwargs' is not an object"
    latent = rec.get("latent_dim", 0)
    if isinstance(latent, bool) or not isinstance(latent, int) or not 0 <= latent <= 65536:
        return "field 'latent_dim' is not an integer in 0..65536"
    run = rec.get("run", 1)
    if isinstance(run, bool) or not isinstance(run, int) or run < 0:
        return "field 'run' is not a non-negative integer"
    beta = rec.get("beta")
    if beta is not None and (isinstance(beta, bool) or not isinstance(beta, (int, float))):
        return "field 'beta' is not a number"
    checkpoints = rec.get("tracin_checkpoints", [])
    if not isinstance(checkpoints, list):
        return "field 'tracin_checkpoints' is not a list"
    for item in checkpoints:
        if not isinstance(item, dict) or not isinstance(item.get("sha256"), str) or not SHA256.match(item["sha256"]):
            return "a TracIn checkpoint lacks a valid sha256"
        if isinstance(item.get("epoch"), bool) or not isinstance(item.get("epoch"), int):
            return "a TracIn checkpoint lacks an integer epoch"
        if why := _inside(root, item.get("file")):
            return f"a TracIn checkpoint file {why}"
    return ""


def valid_records(root: Path) -> tuple[dict[str, dict[str, Any]], list[tuple[str, str]]]:
    """``(records that pass the schema, [(name, problem), ...])``; a broken file gives no records and one problem."""
    from lfx_engine.training.zoo import MANIFEST_NAME, read_manifest

    try:
        entries = read_manifest(root)["entries"]
    except CheckpointError as exc:
        return {}, [(MANIFEST_NAME, str(exc))]
    good, bad = {}, []
    for name, rec in entries.items():
        problem = check_record(name, rec, Path(root))
        if problem:
            shown = name if isinstance(name, str) and NAME.match(name) else f"a record ({len(str(name))} characters)"
            bad.append((shown, f"manifest record skipped: {problem}"))
        else:
            good[name] = rec
    return good, bad
