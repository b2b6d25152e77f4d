"""Turn a project's ``[models.NAME]`` table, or a Python registration, into a checked catalogue entry.

Loading runs the user's factory (or reads the ``.pt2`` archive), loads the
weights, and probes the result on two inputs of its dataset: the encoder must
accept them and return a finite ``(N, d)`` tensor; gradients decide which
methods work; a decoder must reproduce the input's shape for TracIn and
Influence Functions. Every failure becomes the entry's ``problem`` (the model is
then listed but not offered) or a per-view reason, never an exception.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from lfx_engine.catalogue import Catalogue, DatasetEntry, ModelEntry
from lfx_engine.errors import LFXError
from lfx_engine.project.models import (
    UserModel,
    builtin_losses,
    files_digest,
    import_callable,
    load_export_archive,
    load_weights,
    read_state_dict,
    resolve_attribute,
    state_digest,
)

#: Largest model (weights, float32) a project may declare by default; ``max_memory_mb`` changes it.
DEFAULT_MODEL_BUDGET_MB = 4096
PROBE_INPUTS = 2


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text else type(exc).__name__


def probe(model: UserModel, dataset: DatasetEntry, catalogue: Catalogue, declared_dim: int | None,
          budget_mb: float) -> tuple[int, dict[str, str], str]:
    """``(latent_dim, unsupported views, problem)`` of a built model on two inputs of its dataset."""
    unsupported: dict[str, str] = {}
    n_params = sum(p.numel() for p in model.parameters())
    size_mb = n_params * 4 / 2 ** 20
    if size_mb > budget_mb:
        return 0, {}, (f"the model has {n_params:,} parameters ({size_mb:,.0f} MB in float32), more than the memory "
                       f"budget of {budget_mb:g} MB; raise max_memory_mb if this machine has the memory")
    try:
        x_all, _ = catalogue.split(dataset.name, "test")
    except LFXError as exc:
        return 0, {}, f"its dataset {dataset.name} cannot be loaded: {exc}"
    x = x_all[:PROBE_INPUTS].clone()
    shape = tuple(x.shape[1:])
    try:
        with torch.no_grad():
            z = model.encoder(x)
    except LFXError as exc:
        return 0, {}, str(exc)
    except Exception as exc:  # noqa: BLE001 - user code
        return 0, {}, (f"the encoder fails on inputs of shape {shape} from dataset {dataset.name} "
                       f"({_first_line(exc)}); check the dataset's resize/channels or the model's expected input")
    if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.shape[0] != len(x):
        got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        return 0, {}, (f"the encoder must return (N, d) for N inputs; for {len(x)} inputs of shape {shape} it returned "
                       f"{got}. Point encoder at the submodule that returns the representation, or flatten it")
    if not torch.isfinite(z).all():
        return 0, {}, "the encoder returns NaN or infinite values on the dataset's inputs"
    try:
        with torch.no_grad():
            single = model.encoder(x[:1])
        if not isinstance(single, torch.Tensor) or tuple(single.shape) != (1, z.shape[1]):
            raise ValueError(f"returned {getattr(single, 'shape', type(single).__name__)}")
    except Exception as exc:  # noqa: BLE001 - user code
        return 0, {}, (f"the encoder works on {len(x)} inputs but not on a batch of 1 ({_first_line(exc)}); an "
                       "exported archive needs a dynamic batch axis: torch.export.export(..., dynamic_shapes="
                       "({0: torch.export.Dim.DYNAMIC},))")
    d = int(z.shape[1])
    if declared_dim is not None and declared_dim != d:
        return d, {}, f"latent_dim says {declared_dim}, but the encoder returns d = {d}"
    # gradients with respect to the input (every gradient-based attribution method)
    try:
        xg = x.clone().requires_grad_(True)
        out = model.encoder(xg)
        (out * out.detach()).sum().backward()
        grad_ok = xg.grad is not None and bool(torch.isfinite(xg.grad).all())
        why = "its output does not depend differentiably on the input" if not grad_ok else ""
    except Exception as exc:  # noqa: BLE001
        grad_ok, why = False, f"backpropagation through the encoder fails ({_first_line(exc)})"
    model.zero_grad(set_to_none=True)
    if not grad_ok:
        unsupported["gradients"] = (f"the model cannot be differentiated: {why}. Occlusion, DKNN, cosine and SimplEx "
                                    "still work")
        unsupported["lucent"] = "feature visualisation needs gradients through the encoder"
    if len(shape) != 3:
        unsupported["lucent"] = "torch-lucent optimises images; it does not apply to a 1-D series encoder"
    # decoder and pretext loss for TracIn / Influence Functions
    reason = ""
    if model.decoder is None:
        reason = "needs a decoder and a loss: declare decoder = 'attribute' (and loss) for this model"
    elif not grad_ok:
        reason = "needs gradients through the encoder, which this model does not have"
    elif model.loss_fn is None:
        reason = f"unknown loss {model.loss_name!r}"
    elif not any(p.requires_grad for p in model.encoder.parameters()):
        reason = "the encoder has no trainable parameters to differentiate"
    else:
        try:
            with torch.no_grad():
                rec = model(x)
                loss = model.loss_fn(rec, x)
            if tuple(rec.shape) != tuple(x.shape):
                reason = (f"the decoder returns {tuple(rec.shape)} for inputs {tuple(x.shape)}; it must reconstruct "
                          "the input's shape")
            elif tuple(loss.shape) != (len(x),) or not torch.isfinite(loss).all():
                reason = f"the loss must return one finite value per example, got shape {tuple(loss.shape)}"
        except Exception as exc:  # noqa: BLE001
            reason = f"the decoder or loss fails ({_first_line(exc)})"
    if reason:
        unsupported["tracin"] = unsupported["influence"] = reason
    return d, unsupported, ""


def _entry(name: str, dataset: str, source: str, kind: str, sha: str, record: dict[str, Any], title: str,
           problem: str = "") -> ModelEntry:
    return ModelEntry(name=name, dataset=dataset, source=source, experiment=source, task=kind, latent_dim=0,
                      sha256=sha, record=record, title=title or name, problem=problem)


def _finish(entry: ModelEntry, catalogue: Catalogue, build: Callable[[], UserModel], declared_dim: int | None,
            budget_mb: float, tracin: Callable[[], list[dict[str, torch.Tensor]]] | None) -> ModelEntry:
    """Probe the model and fill in the entry (loader, dimension, views)."""
    try:
        dataset = catalogue.dataset_entry(entry.dataset)
    except LFXError as exc:
        entry.problem = str(exc)
        return entry
    if not dataset.available:
        entry.problem = f"its dataset {dataset.name} is not usable: {dataset.problem}"
        return entry
    try:
        model = build().eval()
    except LFXError as exc:
        entry.problem = str(exc)
        return entry
    except Exception as exc:  # noqa: BLE001 - a user factory may raise anything
        entry.problem = f"building the model failed ({_first_line(exc)})"
        return entry
    d, unsupported, problem = probe(model, dataset, catalogue, declared_dim, budget_mb)
    entry.latent_dim, entry.unsupported, entry.problem = d, unsupported, problem
    entry.record["latent_dim"] = d
    if tracin is None and "tracin" not in unsupported:
        unsupported["tracin"] = "needs saved training checkpoints: list them in tracin_checkpoints"
    if entry.task != "vae":
        unsupported["disentanglement"] = "per-unit maps are for VAEs (kind = \"vae\")"
    elif len(dataset.input_shape or ()) != 3:
        unsupported["disentanglement"] = "per-unit maps are drawn for image VAEs"
    elif "gradients" in unsupported:
        unsupported["disentanglement"] = "per-unit GradientShap needs gradients through the encoder"
    entry.loss_fn = model.loss_fn
    entry.tracin_loader = tracin
    entry.loader = lambda device: build().eval().to(device)
    return entry


def build_project_model(catalogue: Catalogue, project: Any, cfg: Any) -> ModelEntry:
    """A ``[models.NAME]`` table → a probed :class:`ModelEntry` (its ``problem`` says what is wrong)."""
    kind = str(cfg.get("kind") or ("autoencoder" if cfg.get("decoder") or cfg.get("decoder_archive") else "encoder"))
    title = str(cfg.get("title") or cfg.name)
    record = {k: (str(v) if isinstance(v, Path) else v) for k, v in cfg.values.items()}
    record.update(project=str(project.path), kind=kind)
    entry = _entry(cfg.name, str(cfg.get("dataset")), "user", kind, "", record, title)
    if cfg.problems:
        entry.problem = "; ".join(str(p) for p in cfg.problems)
        return entry
    folders = [project.folder, *project.python_path]
    loss = str(cfg.get("loss", "mse"))
    try:
        loss_fn = builtin_losses().get(loss) or import_callable(loss, folders, "loss")
        files = [p for p in (cfg.get("weights"), cfg.get("archive"), cfg.get("decoder_archive")) if p is not None]
        for path in files:
            if not Path(path).is_file():
                raise LFXError(f"file {path} not found (paths are relative to the project file)")
        factory = import_callable(cfg.get("factory"), folders, "factory") if cfg.get("factory") else None
        source_files = []
        if factory is not None:
            with_source = inspect.getsourcefile(factory)
            if with_source:
                source_files.append(Path(with_source))
        entry.sha256 = files_digest([*files, *(cfg.get("tracin_checkpoints") or []), *source_files])
    except LFXError as exc:
        entry.problem = str(exc)
        return entry
    kwargs = dict(cfg.get("factory_kwargs") or {})

    def make(weights: Path) -> UserModel:
        if factory is not None:
            try:
                net = factory(**kwargs)
            except Exception as exc:  # noqa: BLE001
                raise LFXError(f"factory {cfg.get('factory')!r} raised {_first_line(exc)}") from None
            if not isinstance(net, nn.Module):
                raise LFXError(f"factory {cfg.get('factory')!r} returned {type(net).__name__}, not a torch.nn.Module")
            load_weights(net, read_state_dict(Path(weights)), Path(weights))
            encoder = resolve_attribute(net, str(cfg.get("encoder", "encoder")), "encoder")
            decoder = resolve_attribute(net, str(cfg.get("decoder")), "decoder") if cfg.get("decoder") else None
        else:
            encoder = load_export_archive(Path(cfg.get("archive")))
            decoder = load_export_archive(Path(cfg.get("decoder_archive"))) if cfg.get("decoder_archive") else None
        return UserModel(encoder, decoder, mu=str(cfg.get("mu", "output")), kind=kind, loss=loss, loss_fn=loss_fn)

    checkpoints = [Path(p) for p in cfg.get("tracin_checkpoints") or []]
    missing = [p for p in checkpoints if not p.is_file()]
    if missing:
        entry.problem = f"TracIn checkpoint {missing[0]} not found"
        return entry
    tracin = None
    if checkpoints and factory is not None:
        def tracin() -> list[dict[str, torch.Tensor]]:
            return [make(path).state_dict() for path in checkpoints]

    weights = cfg.get("weights")
    return _finish(entry, catalogue, lambda: make(weights), cfg.get("latent_dim"),
                   float(cfg.get("max_memory_mb", DEFAULT_MODEL_BUDGET_MB)), tracin)


def build_python_model(catalogue: Catalogue, name: str, spec: dict[str, Any]) -> ModelEntry:
    """A :func:`~lfx_engine.catalogue.register_model` registration → a probed :class:`ModelEntry`."""
    model: nn.Module = spec["model"]
    loss = spec["loss"]
    loss_name = loss if isinstance(loss, str) else getattr(loss, "__name__", "custom")
    loss_fn = builtin_losses().get(loss) if isinstance(loss, str) else loss
    kind = spec["kind"] or ("autoencoder" if spec["decoder"] else "encoder")
    entry = _entry(name, str(spec["dataset"]), "python", kind, state_digest(model),
                   {"kind": kind, "loss": loss_name}, spec["title"] or name)

    def make(source: nn.Module) -> UserModel:
        encoder = resolve_attribute(source, spec["encoder"], "encoder")
        decoder = resolve_attribute(source, spec["decoder"], "decoder") if spec["decoder"] else None
        return UserModel(encoder, decoder, mu=spec["mu"], kind=kind, loss=loss_name, loss_fn=loss_fn)

    def copy_with(state: dict[str, torch.Tensor] | None = None) -> nn.Module:
        import copy

        clone = copy.deepcopy(model)
        if state is not None:
            load_weights(clone, dict(state), Path(f"{name} TracIn state"))
        return clone

    states = spec["tracin_states"]
    tracin = (lambda: [make(copy_with(state)).state_dict() for state in states]) if states else None

    def build() -> UserModel:
        return make(copy_with())

    return _finish(entry, catalogue, build, None, float("inf"), tracin)
