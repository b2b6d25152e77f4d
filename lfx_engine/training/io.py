"""Checkpoint files: safetensors only, atomic writes, strict verification on load.

Why this module is strict:

* **Never unpickle.** ``torch.load`` on an untrusted file can run arbitrary
  code, so weights are only ever read with ``safetensors`` (a JSON header plus
  raw tensor bytes). A pickle or ``torch.save`` zip file is recognised and
  refused with a :class:`CheckpointError`.
* **Atomic writes.** Bytes go to a temporary file in the target folder, are
  fsynced, then ``os.replace``-d into place, so Ctrl-C or a crash never leaves
  half a checkpoint (or half a manifest) behind.
* **Architecture check.** The safetensors metadata records the architecture
  name and its full keyword arguments; on load the model is rebuilt from the
  registry and every key and shape must match.

File layout: safetensors with string metadata ``lfx_format``, ``arch``,
``arch_kwargs`` (JSON), ``storage_dtype`` (``float32`` or ``float16``) and
``metadata`` (JSON of the caller's dict). float16 storage halves the file and is
cast back to float32 on load.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor, nn

from lfx_engine.atomic import atomic_write
from lfx_engine.errors import CheckpointError, LFXError, ParameterError
from lfx_engine.models.registry import build_model

PathLike = Union[str, os.PathLike]

FORMAT = "lfx-checkpoint/1"
STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16}
MAX_HEADER_BYTES = 100 * 1024 * 1024
FLOAT16_MAX = 65504.0
_ST_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                   "BOOL": 1}


@dataclass(frozen=True)
class CheckpointFile:
    """What :func:`save_checkpoint` wrote."""

    path: Path
    sha256: str
    size_bytes: int


# --------------------------------------------------------------------------- atomic writes


def _write_fully(fh: Any, data: bytes) -> None:
    """Write all bytes (separate so tests can simulate an interruption mid-write)."""
    fh.write(data)


def atomic_write_bytes(path: PathLike, data: bytes, mode: int = 0o644) -> Path:
    """Write ``data`` to ``path`` atomically (:mod:`lfx_engine.atomic`); no partial file survives an exception."""
    return atomic_write(Path(path), lambda fh: _write_fully(fh, data), mode=mode)


def atomic_write_text(path: PathLike, text: str) -> Path:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def file_sha256(path: PathLike) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- saving


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, (torch.device, torch.dtype)):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def save_checkpoint(model: nn.Module, path: PathLike, metadata: Optional[Mapping[str, Any]] = None, *,
                    storage_dtype: str = "float32", arch: Optional[str] = None,
                    arch_kwargs: Optional[Mapping[str, Any]] = None) -> CheckpointFile:
    """Save ``model.state_dict()`` as safetensors, atomically; returns path, sha256 and size.

    ``arch``/``arch_kwargs`` default to what :func:`build_model` recorded on the
    model. ``storage_dtype="float16"`` stores floating tensors in half precision
    (refused if a value would overflow).
    """
    if storage_dtype not in STORAGE_DTYPES:
        raise ParameterError(f"storage_dtype must be one of {sorted(STORAGE_DTYPES)}, got {storage_dtype!r}")
    arch = arch or getattr(model, "arch", None)
    if not arch:
        raise ParameterError("cannot save a checkpoint without an architecture name: build the model with "
                             "lfx_engine.models.build_model or pass arch=...")
    kwargs = dict(arch_kwargs if arch_kwargs is not None else getattr(model, "arch_kwargs", {}) or {})
    target_dtype = STORAGE_DTYPES[storage_dtype]
    tensors: dict[str, Tensor] = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu")
        if tensor.is_floating_point():
            if target_dtype == torch.float16 and tensor.numel() and tensor.abs().max().item() > FLOAT16_MAX:
                raise ParameterError(f"{name} has values beyond the float16 range; save with storage_dtype='float32'")
            tensor = tensor.to(target_dtype)
        tensors[name] = tensor.contiguous().clone()
    header = {
        "lfx_format": FORMAT,
        "arch": arch,
        "arch_kwargs": json.dumps(kwargs, sort_keys=True, default=_json_default),
        "storage_dtype": storage_dtype,
        "metadata": json.dumps(dict(metadata or {}), sort_keys=True, default=_json_default),
    }
    data = st_save(tensors, metadata=header)
    target = atomic_write_bytes(path, data)
    return CheckpointFile(target, hashlib.sha256(data).hexdigest(), len(data))


# --------------------------------------------------------------------------- reading


def _describe_foreign(prefix: bytes) -> str:
    if prefix.startswith(b"PK\x03\x04"):
        return "a zip archive (torch.save format, which holds a pickle)"
    if prefix[:1] == b"\x80":
        return "a Python pickle"
    if prefix.startswith(b"\x93NUMPY"):
        return "a NumPy .npy array"
    return "not a safetensors file"


def _read_verified_bytes(path: PathLike, expected_sha256: Optional[str]) -> tuple[Path, bytes]:
    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"checkpoint {file} not found; train it with `python -m lfx_engine train NAME` "
                              f"or set LFX_CHECKPOINT_DIR to the folder holding it")
    data = file.read_bytes()
    if expected_sha256 is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual.lower() != expected_sha256.strip().lower():
            raise CheckpointError(f"checkpoint {file} has sha256 {actual}, but {expected_sha256} was expected: the "
                                  f"file is corrupt or was replaced; re-train or re-download it")
    return file, data


def _parse_header(file: Path, data: bytes) -> dict[str, Any]:
    """Validate the safetensors framing without trusting it; returns the JSON header."""
    if len(data) < 8:
        raise CheckpointError(f"checkpoint {file} is truncated ({len(data)} bytes); delete it and re-train")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len == 0 or header_len > MAX_HEADER_BYTES or header_len > len(data) - 8:
        kind = _describe_foreign(data[:8])
        if kind == "not a safetensors file" and 0 < header_len <= MAX_HEADER_BYTES:
            raise CheckpointError(f"checkpoint {file} is truncated (header cut off); delete it and re-train")
        raise CheckpointError(f"{file} is {kind}; only safetensors checkpoints are accepted (pickle-based files are "
                              f"never loaded, because unpickling can run arbitrary code)")
    try:
        header = json.loads(data[8:8 + header_len].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CheckpointError(f"{file} has no valid safetensors header; it is corrupt or not a checkpoint") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{file} has a malformed safetensors header")
    body = len(data) - 8 - header_len
    end = 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            start, stop = (int(v) for v in info["data_offsets"])
            count = math.prod(int(s) for s in info["shape"])
            width = _ST_DTYPE_BYTES[info["dtype"]]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{file} has a malformed entry {key!r} in its header; it is corrupt") from None
        if stop - start != count * width or start < 0:
            raise CheckpointError(f"{file}: tensor {key!r} has inconsistent offsets; the file is corrupt")
        end = max(end, stop)
    if end > body:
        raise CheckpointError(f"checkpoint {file} is truncated ({body} of {end} data bytes present); delete it and "
                              f"re-train")
    if end < body:
        raise CheckpointError(f"checkpoint {file} has {body - end} unexpected trailing bytes; it is corrupt")
    return header


def _decode_metadata(file: Path, header: Mapping[str, Any]) -> dict[str, Any]:
    raw = header.get("__metadata__") or {}
    if raw.get("lfx_format") != FORMAT or not raw.get("arch"):
        raise CheckpointError(f"{file} is a safetensors file but not an LFX checkpoint (no architecture metadata); "
                              f"it cannot be checked against a model")
    try:
        return {
            "format": raw["lfx_format"],
            "arch": raw["arch"],
            "arch_kwargs": json.loads(raw.get("arch_kwargs") or "{}"),
            "storage_dtype": raw.get("storage_dtype", "float32"),
            "metadata": json.loads(raw.get("metadata") or "{}"),
        }
    except json.JSONDecodeError:
        raise CheckpointError(f"{file} has unreadable metadata; it is corrupt") from None


def read_checkpoint_metadata(path: PathLike) -> dict[str, Any]:
    """Decoded metadata (``arch``, ``arch_kwargs``, ``storage_dtype``, ``metadata``) of a checkpoint file."""
    file, data = _read_verified_bytes(path, None)
    return _decode_metadata(file, _parse_header(file, data))


def load_state_dict(path: PathLike, *, expected_sha256: Optional[str] = None) -> tuple[dict[str, Tensor],
                                                                                       dict[str, Any]]:
    """Read a checkpoint's tensors (floating ones cast to float32) and its metadata, without building a model.

    Useful for TracIn, which swaps saved states into one model via
    ``torch.func.functional_call``.
    """
    file, data = _read_verified_bytes(path, expected_sha256)
    header = _parse_header(file, data)
    meta = _decode_metadata(file, header)
    try:
        raw = st_load(data)
    except Exception as exc:  # safetensors raises its own error types
        raise CheckpointError(f"{file} could not be decoded ({exc}); it is corrupt") from None
    state: dict[str, Tensor] = {}
    for name, tensor in raw.items():
        if tensor.is_floating_point():
            tensor = tensor.to(torch.float32)
            if not torch.isfinite(tensor).all():
                raise CheckpointError(f"{file}: tensor {name!r} contains NaN or infinite values")
        state[name] = tensor
    return state, meta


def state_dict_mismatch(expected: Mapping[str, Tensor], state: Mapping[str, Tensor]) -> str:
    """What keeps ``state`` from loading into a model whose state dict is ``expected`` ("" when it fits)."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
    if wrong_shape:
        k = wrong_shape[0]
        parts.append(f"shape mismatch for {len(wrong_shape)} tensors (e.g. {k}: file {tuple(state[k].shape)}, model "
                     f"{tuple(expected[k].shape)})")
    return "; ".join(parts)


def load_matching_state(model: nn.Module, state: Mapping[str, Tensor], error: Any) -> None:
    """``load_state_dict(strict=True)`` after checking keys and shapes; ``error(what)`` words the CheckpointError."""
    expected = model.state_dict()
    problem = state_dict_mismatch(expected, state)
    if problem:
        raise CheckpointError(error(problem))
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)


def load_checkpoint(path: PathLike, arch: Optional[str] = None, *, expected_sha256: Optional[str] = None,
                    device: Optional[Union[str, torch.device]] = None, **arch_kwargs: Any) -> nn.Module:
    """Rebuild the model a checkpoint was saved from and load its weights; returned in ``eval()`` mode.

    ``arch`` (and any ``arch_kwargs``) state what the caller expects: a file
    saved for a different architecture or with different arguments is refused.
    When omitted, the architecture recorded in the file is used. The decoded
    metadata is attached as ``model.checkpoint_metadata``.
    """
    state, meta = load_state_dict(path, expected_sha256=expected_sha256)
    file = Path(path)
    if arch is not None and meta["arch"] != arch:
        raise CheckpointError(f"{file} holds a {meta['arch']!r} model, not the expected {arch!r}")
    stored_kwargs = dict(meta["arch_kwargs"])
    for key, value in arch_kwargs.items():
        if key in stored_kwargs and stored_kwargs[key] != value:
            raise CheckpointError(f"{file} was saved with {key}={stored_kwargs[key]!r}, but {key}={value!r} was "
                                  f"requested")
    try:
        model = build_model(meta["arch"], **{**stored_kwargs, **arch_kwargs})
    except LFXError as exc:
        raise CheckpointError(f"{file} describes an architecture that cannot be built: {exc}") from None
    load_matching_state(model, state, lambda what: f"{file} does not match architecture {meta['arch']!r}: {what}")
    setattr(model, "checkpoint_metadata", meta)  # a plain attribute (torch types Module attributes Tensor | Module)
    if device is not None:
        model.to(device)
    return model.eval()
