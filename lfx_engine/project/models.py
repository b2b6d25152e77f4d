"""Load a user's encoder declared in a project file, or registered from Python, as an engine model.

The engine explains models that have an ``encoder`` (inputs → ``(N, d)``) and,
for TracIn and Influence Functions, a ``decoder`` with ``model(x) ==
decoder(encoder(x))``. :class:`UserModel` gives any user module that shape:
its ``encoder`` is an :class:`EncoderAdapter` that picks μ out of the user's
encoder output (a VAE's ``(μ, log σ²)`` tuple or concatenation), and the
pretext loss is a built-in (mse, bce, l1) or the user's own function.

Weights are read with safetensors or ``torch.load(..., weights_only=True)``;
a ``torch.export`` archive is loaded only after checking that it holds no
pickled Python objects, with weights-only unpickling forced.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import sys
import threading
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from lfx_engine.errors import CheckpointError, ParameterError

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_IMPORT_LOCK = threading.Lock()
_ENV_LOCK = threading.Lock()


def _bce_per_example(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of each example (for decoders that end in a sigmoid)."""
    out = output.clamp(1e-6, 1 - 1e-6)
    return nn.functional.binary_cross_entropy(out, target.clamp(0, 1), reduction="none").reshape(len(out), -1).mean(1)


def builtin_losses() -> dict[str, LossFn]:
    """Per-example pretext losses ``(output, target) -> (N,)`` a project can name."""
    from lfx_engine.example_importance.gradients import l1_per_example, mse_per_example

    return {"mse": mse_per_example, "l1": l1_per_example, "bce": _bce_per_example}


class EncoderAdapter(nn.Module):
    """The user's encoder, returning the representation ``(N, d)`` (μ for a VAE).

    ``mu``: ``output`` (the encoder returns it), ``first_half`` (``[μ, log σ²]``
    concatenated), ``even`` (interleaved, μ at even indices) or ``tuple:K``
    (element K of a returned tuple).
    """

    def __init__(self, net: nn.Module, mu: str = "output") -> None:
        super().__init__()
        self.net = net
        self.mu = mu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        if self.mu.startswith("tuple:"):
            if not isinstance(out, (tuple, list)):
                raise ParameterError(f"mu = {self.mu!r} expects the encoder to return a tuple, it returned "
                                     f"{type(out).__name__}")
            out = out[int(self.mu.split(":", 1)[1])]
        if isinstance(out, (tuple, list)):
            raise ParameterError(f"the encoder returns a {type(out).__name__} of {len(out)} items, not one tensor; set "
                                 "mu = 'tuple:0' (or the index of the representation)")
        if not isinstance(out, torch.Tensor):
            raise ParameterError(f"the encoder returns {type(out).__name__}, not a tensor (N, d)")
        if self.mu == "first_half":
            out = out[:, : out.shape[1] // 2]
        elif self.mu == "even":
            out = out[:, 0::2]
        return out


class _BoundMethod(nn.Module):
    """A module's method (e.g. ``model.decode``) as a module, so it can serve as the decoder."""

    def __init__(self, owner: nn.Module, method: str) -> None:
        super().__init__()
        self.owner = owner
        self.method = method

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return getattr(self.owner, self.method)(z)


class UserModel(nn.Module):
    """A user's encoder (and optional decoder) in the engine's model contract."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module | None, *, mu: str = "output", kind: str = "encoder",
                 loss: str = "mse", loss_fn: LossFn | None = None) -> None:
        super().__init__()
        self.encoder = EncoderAdapter(encoder, mu)
        self.decoder = decoder
        self.kind = kind
        self.loss_name = loss
        self.loss_fn = loss_fn or builtin_losses().get(loss)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.decoder is None:
            raise ParameterError("this model has no decoder; declare decoder = 'attribute' for TracIn and Influence "
                                 "Functions")
        return self.decoder(self.encoder(x))


@contextlib.contextmanager
def _python_path(folders: list[Path]) -> Iterator[None]:
    with _IMPORT_LOCK:
        added = [str(f) for f in folders if str(f) not in sys.path]
        sys.path[:0] = added
        try:
            yield
        finally:
            for item in added:
                with contextlib.suppress(ValueError):
                    sys.path.remove(item)


_SOURCE_STAMPS: dict[str, tuple[int, int]] = {}


def _fresh(module: Any) -> Any:
    """The module, re-imported when its source file changed since it was imported (a user editing a factory)."""
    source = getattr(module, "__file__", None)
    if not source:
        return module
    try:
        stat = os.stat(source)
    except OSError:
        return module
    stamp = (stat.st_mtime_ns, stat.st_size)
    known = _SOURCE_STAMPS.setdefault(module.__name__, stamp)
    if known != stamp:
        _SOURCE_STAMPS[module.__name__] = stamp
        return importlib.reload(module)
    return module


def import_callable(spec: str, folders: list[Path], what: str) -> Callable[..., Any]:
    """``package.module:function`` → the function; CheckpointError saying why when it does not import."""
    module_name, _, attr = spec.partition(":")
    with _python_path(folders):
        try:
            module = importlib.import_module(module_name)
            module = _fresh(module)
        except ModuleNotFoundError as exc:
            raise CheckpointError(f"{what} {spec!r} does not import: no module named {exc.name!r} (looked in "
                                  f"{', '.join(str(f) for f in folders)} and the installed packages); fix the module "
                                  "path or add its folder to [project] python_path") from None
        except Exception as exc:  # noqa: BLE001 - user code may raise anything on import
            raise CheckpointError(f"{what} {spec!r} does not import: {type(exc).__name__}: {exc}") from None
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise CheckpointError(f"{what} {spec!r}: module {module_name!r} has no attribute {part!r}")
        target = getattr(target, part)
    if not callable(target):
        raise CheckpointError(f"{what} {spec!r} is not callable")
    return target


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` or a state-dict ``.pt``/``.pth`` file (never unpickling code)."""
    if not path.is_file():
        raise CheckpointError(f"weights file {path} not found (paths are relative to the project file)")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path)))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"weights file {path} is not a readable safetensors file ({exc})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError...
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"weights file {path} cannot be loaded safely (weights_only=True): {first}. Save a "
                              "state dict (torch.save(model.state_dict(), ...)) or a .safetensors file") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"weights file {path} holds a {type(state).__name__}, not a state dict of tensors")
    return dict(state)


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """``load_state_dict(strict=True)`` with a message listing what does not fit."""
    from lfx_engine.training.io import load_matching_state

    load_matching_state(model, state, lambda what: f"weights {path.name} do not fit the factory's architecture: "
                                                   f"{what}. Check factory_kwargs, or that the file was saved from "
                                                   "this architecture")


def resolve_attribute(root: nn.Module, path: str, what: str) -> nn.Module:
    """``root`` itself for ``""``/``"."``, else the (dotted) attribute, as a module."""
    if path in ("", "."):
        return root
    target: Any = root
    owner: Any = root
    for part in path.split("."):
        if not hasattr(target, part):
            available = [n for n, _ in root.named_children()][:8]
            raise CheckpointError(f"the model has no {what} {path!r} (its submodules: {', '.join(available) or 'none'})")
        owner, target = target, getattr(target, part)
    if isinstance(target, nn.Module):
        return target
    if callable(target) and isinstance(owner, nn.Module):
        return _BoundMethod(owner, path.split(".")[-1])
    raise CheckpointError(f"the {what} {path!r} is a {type(target).__name__}, not a module or method")


class ExportedModule(nn.Module):
    """A ``torch.export`` module: runs as exported (its train/eval mode is fixed when it was exported)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.program = module

    def train(self, mode: bool = True) -> "ExportedModule":
        self.training = mode  # the exported graph cannot switch modes; it keeps the one it was exported in
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.program(x)


def load_export_archive(path: Path) -> nn.Module:
    """The module of a ``torch.export`` ``.pt2`` archive, refusing archives that carry pickled Python objects."""
    from torch.export.pt2_archive import constants as pt2

    if not path.is_file():
        raise CheckpointError(f"archive {path} not found (paths are relative to the project file)")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(f"{path} is not a torch.export archive (not a zip file: {exc})") from None
    if not any(n.endswith(pt2.ARCHIVE_FORMAT_PATH) for n in names):
        raise CheckpointError(f"{path} is not a torch.export .pt2 archive (no {pt2.ARCHIVE_FORMAT_PATH}); save it with "
                              "torch.export.save(torch.export.export(encoder, (example,)), path)")
    risky = [n for n in names if os.path.basename(n).startswith((pt2.CUSTOM_OBJ_FILENAME_PREFIX,
                                                                  pt2.OPAQUE_OBJ_FILENAME_PREFIX))]
    if risky:
        raise CheckpointError(f"{path} holds pickled Python objects ({risky[0]}); such archives are refused because "
                              "unpickling can run arbitrary code")
    with _ENV_LOCK:
        previous = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
        os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"  # every tensor inside is read weights-only
        try:
            program = torch.export.load(str(path))
            module = program.module()
        except Exception as exc:  # noqa: BLE001 - deserialisation raises many types
            first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"archive {path} could not be loaded: {first}") from None
        finally:
            if previous is None:
                os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
            else:
                os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = previous
    return ExportedModule(module)


def files_digest(paths: list[Path]) -> str:
    """sha256 over the contents of files (weights, archives, the factory's source)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def state_digest(module: nn.Module) -> str:
    """sha256 of a module's state dict (for models registered from Python)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
