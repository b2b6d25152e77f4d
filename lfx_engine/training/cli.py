"""``python -m lfx_engine train ...`` and ``python -m lfx_engine zoo ...``.

* ``train NAME|PATTERN|all [--dataset D] [--epochs N] [--max-train N] [--device cpu|cuda] [--out DIR]
  [--storage-dtype float32|float16] [--skip-existing] [--beta B] [--latent-dim D] [--save-as NAME]``
  trains zoo entries with a live progress bar, prints their final metrics and
  records them in the manifest.
* ``zoo list [--dataset D] [--out DIR]`` prints every entry, marking the untrained ones;
  ``zoo show NAME`` prints one manifest record; ``zoo verify`` re-checks every file's sha256.
* ``zoo import-study PATH [--out DIR] [--commit SHA]`` converts the reproduction study's models
  (:mod:`lfx_engine.study`).

User errors raise ``LFXError`` subclasses, which ``lfx_engine.cli.main`` turns
into ``error: ...`` and exit code 2.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys
from typing import Any, Optional

from lfx_engine.errors import CheckpointError, ParameterError
from lfx_engine.models.base import MAX_LATENT_DIM, check_latent_dim
from lfx_engine.training.io import file_sha256
from lfx_engine.training.manifest import valid_records
from lfx_engine.training.zoo import (
    DATASETS,
    VAE_TASKS,
    ZooEntry,
    list_entries,
    manifest_path,
    read_manifest,
    select_entries,
    train_entry,
)


def add_parser(subparsers: Any) -> None:
    """Register the ``train`` and ``zoo`` sub-commands."""
    train = subparsers.add_parser("train", help="train zoo models (checkpoints + TracIn checkpoints + manifest)",
                                  description="Train zoo entries by name, glob pattern (quote it) or 'all'.")
    train.add_argument("name", help="zoo entry name, a glob such as 'mnist_pretext_*', or 'all'")
    train.add_argument("--dataset", help=f"only entries of this dataset ({', '.join(DATASETS)})")
    train.add_argument("--epochs", type=int, help="maximum epochs (default: the recipe's)")
    train.add_argument("--max-train", type=int, help="cap training/held-out/test examples (quick runs)")
    train.add_argument("--device", choices=("cpu", "cuda"), help="default: CUDA when available")
    train.add_argument("--out", help="checkpoint folder (default: LFX_CHECKPOINT_DIR or <repo>/checkpoints)")
    train.add_argument("--storage-dtype", choices=("float32", "float16"), default="float32",
                       help="dtype of the stored weights (float16 halves the files; loaded back as float32)")
    train.add_argument("--tracin-every", type=int, default=10,
                       help="save a TracIn checkpoint after every N epochs (default 10, as in the study)")
    train.add_argument("--skip-existing", action="store_true", help="skip entries already in the manifest")
    train.add_argument("--beta", type=float, help="override beta (VAE entries; saved under a new name)")
    train.add_argument("--batch-size", type=int,
                       help="override the recipe's batch size (recorded in the manifest; the name is kept)")
    train.add_argument("--latent-dim", type=int, help="override the latent size (saved under a new name)")
    train.add_argument("--kl-warmup", type=int, default=0, metavar="STEPS",
                       help="VAE entries: raise the KL weight linearly from 0 to 1 over this many optimiser steps "
                            "(a remedy for posterior collapse at large beta; default 0, none)")
    train.add_argument("--save-as", help="name for an overridden recipe (default: derived from the overrides)")
    train.set_defaults(func=run_train)

    zoo = subparsers.add_parser("zoo", help="inspect the model zoo manifest")
    zoo_sub = zoo.add_subparsers(dest="zoo_command", required=True)
    zoo_list = zoo_sub.add_parser("list", help="table of every zoo entry and its metrics")
    zoo_list.add_argument("--dataset", help="only this dataset")
    zoo_list.add_argument("--out", help="checkpoint folder (default: LFX_CHECKPOINT_DIR or <repo>/checkpoints)")
    zoo_list.set_defaults(func=run_zoo_list)
    zoo_show = zoo_sub.add_parser("show", help="print one entry's manifest record as JSON")
    zoo_show.add_argument("name")
    zoo_show.add_argument("--out", help="checkpoint folder")
    zoo_show.set_defaults(func=run_zoo_show)
    zoo_verify = zoo_sub.add_parser("verify", help="re-check the sha256 of every trained checkpoint")
    zoo_verify.add_argument("--out", help="checkpoint folder")
    zoo_verify.set_defaults(func=run_zoo_verify)
    quality = zoo_sub.add_parser(
        "quality", help="check every trained VAE against the quality floors (active units, reconstruction)",
        description="Measure each trained VAE on the first N test images: active units (Var_x mu_j > 0.01), "
                    "reconstruction against the training mean image and KL, with a verdict (ok, undertrained, "
                    "collapsed, dead). --write records the result in the manifest as 'quality'.")
    quality.add_argument("--dataset", help="only this dataset")
    quality.add_argument("--out", help="checkpoint folder (default: LFX_CHECKPOINT_DIR or <repo>/checkpoints)")
    quality.add_argument("--n-test", type=int, default=1000, help="test images to measure on (default 1000)")
    quality.add_argument("--write", action="store_true", help="record the measurement in the manifest")
    quality.set_defaults(func=run_zoo_quality)
    study = zoo_sub.add_parser(
        "import-study", help="convert the reproduction study's trained models (a local clone of its repository)",
        description="Load every model file of a local clone of https://github.com/jwagenbach/FACT (weights only), "
                    "map its keys onto our architectures and write safetensors plus a manifest to the study folder "
                    "(LFX_STUDY_DIR; a user folder, never the repository). Missing, foreign or corrupt files are "
                    "reported and skipped. The models then appear as study_* beside the zoo; "
                    "`reproduce ... --models study` explains them.")
    study.add_argument("path", help="the clone's root folder (holding results/ and TrainedModels/)")
    study.add_argument("--out", help="study folder (default: LFX_STUDY_DIR or the user's data folder)")
    study.add_argument("--commit", help="the clone's commit, when the folder is not a git clone (recorded)")
    study.set_defaults(func=run_zoo_import_study)


# --------------------------------------------------------------------------- train


SAVE_AS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-.]{0,99}$")


def _apply_overrides(entries: list[ZooEntry], args: argparse.Namespace) -> list[ZooEntry]:
    if args.batch_size is not None:
        if not 1 <= args.batch_size <= 65536:
            raise ParameterError(f"--batch-size must be an integer in 1..65536, got {args.batch_size}")
        entries = [dataclasses.replace(e, batch_size=args.batch_size) for e in entries]
    if args.beta is None and args.latent_dim is None:
        if args.save_as:
            raise ParameterError("--save-as only applies together with --beta or --latent-dim")
        return entries
    if args.beta is not None and not (math.isfinite(args.beta) and args.beta > 0):
        raise ParameterError(f"--beta must be a positive number, got {args.beta}")
    if args.latent_dim is not None:
        try:
            check_latent_dim(args.latent_dim)
        except ParameterError:
            raise ParameterError(f"--latent-dim must be an integer in 1..{MAX_LATENT_DIM}, got {args.latent_dim}") \
                from None
    if args.save_as is not None and not SAVE_AS.match(args.save_as):
        raise ParameterError("--save-as is a plain name (letters, digits, '_', '-' and '.', no folders), "
                             f"got {len(args.save_as)} characters that are not one")
    if len(entries) != 1:
        raise ParameterError("--beta/--latent-dim override one entry at a time; name a single entry")
    entry = entries[0]
    changes: dict[str, Any] = {}
    suffix = ""
    if args.beta is not None:
        if entry.task not in VAE_TASKS:
            raise ParameterError(f"--beta applies to VAE entries only; {entry.name} is a {entry.task} model")
        changes["beta"] = float(args.beta)
        suffix += f"_beta{args.beta:g}"
    if args.latent_dim is not None:
        changes["latent_dim"] = args.latent_dim
        suffix += f"_d{args.latent_dim}"
    name = args.save_as or f"{entry.name}{suffix}"
    return [dataclasses.replace(entry, name=name, **changes)]


def _command_line(entry: ZooEntry, args: argparse.Namespace) -> str:
    parts = ["python -m lfx_engine train", entry.name]
    for flag, value in (("--epochs", args.epochs), ("--max-train", args.max_train), ("--device", args.device),
                        ("--beta", args.beta), ("--latent-dim", args.latent_dim),
                        ("--batch-size", args.batch_size)):
        if value is not None:
            parts.append(f"{flag} {value}")
    if args.storage_dtype != "float32":
        parts.append(f"--storage-dtype {args.storage_dtype}")
    if args.kl_warmup:
        parts.append(f"--kl-warmup {args.kl_warmup}")
    if entry.tracin and args.tracin_every != 10:
        parts.append(f"--tracin-every {args.tracin_every}")
    return " ".join(parts)


def _summary(record: dict[str, Any]) -> str:
    bits = [f"epochs {record['epochs_trained']} (best {record['best_epoch']})",
            f"val loss {record['best_val_loss']:.5g}"]
    if record.get("test_loss") is not None:
        bits.append(f"test loss {record['test_loss']:.5g}")
    if record.get("val_accuracy") is not None:
        bits.append(f"val acc {record['val_accuracy']:.4f}")
    if record.get("test_accuracy") is not None:
        bits.append(f"test acc {record['test_accuracy']:.4f}")
    if record.get("baseline_val_loss") is not None:
        bits.append(f"mean-image baseline {record['baseline_val_loss']:.5g}")
    if record.get("rec") is not None:
        bits.append(f"rec {record['rec']:.5g}, KL {record['kl']:.5g}")
    bits.append(f"{record['wall_time_s']:.1f}s on {record['device']}")
    return "; ".join(bits)


def run_train(args: argparse.Namespace) -> int:
    """Train the selected entries, one after another."""
    from tqdm.auto import tqdm

    if args.epochs is not None and args.epochs <= 0:
        raise ParameterError(f"--epochs must be a positive integer, got {args.epochs}")
    if args.max_train is not None and args.max_train < 2:
        raise ParameterError(f"--max-train must be at least 2, got {args.max_train}")
    if args.kl_warmup < 0:
        raise ParameterError(f"--kl-warmup must be a whole number of steps >= 0, got {args.kl_warmup}")
    entries = _apply_overrides(select_entries(args.name, args.dataset), args)
    for entry in entries:
        entry.validate()
        if args.kl_warmup and entry.task not in VAE_TASKS:
            raise ParameterError(f"--kl-warmup applies to VAE entries only; {entry.name} is a {entry.task} model")
    from lfx_engine.config import checkpoint_dir, writable_folder

    root = writable_folder(args.out if args.out else checkpoint_dir(), "--out" if args.out else "LFX_CHECKPOINT_DIR")
    if args.skip_existing:
        done = set(read_manifest(root)["entries"])
        entries = [e for e in entries if e.name not in done]
    print(f"training {len(entries)} model(s)", file=sys.stderr)
    for number, entry in enumerate(entries, start=1):
        n_epochs = args.epochs or entry.max_epochs
        bars: dict[str, Any] = {}  # created on the first callback, so data errors print no empty bar

        def ensure_bars() -> None:
            if not bars:
                bars["epoch"] = tqdm(total=n_epochs, desc=f"[{number}/{len(entries)}] {entry.name}", unit="epoch",
                                     file=sys.stderr, dynamic_ncols=True)
                bars["batch"] = tqdm(total=0, leave=False, unit="batch", file=sys.stderr, dynamic_ncols=True)

        def on_batch(done: int, total: int, loss: float) -> None:
            ensure_bars()
            bar = bars["batch"]
            if bar.total != total or done < bar.n:
                bar.reset(total=total)
            bar.n = done
            bar.set_postfix(loss=f"{loss:.5g}", refresh=False)
            bar.refresh()

        def on_epoch(done: int, total: int, train_loss: float, val_loss: float) -> None:
            ensure_bars()
            bar = bars["epoch"]
            bar.n = done
            bar.set_postfix(train=f"{train_loss:.5g}", val=f"{val_loss:.5g}", refresh=False)
            bar.refresh()

        try:
            record = train_entry(entry, epochs=args.epochs, max_train=args.max_train, device=args.device,
                                 out_dir=root, storage_dtype=args.storage_dtype, command=_command_line(entry, args),
                                 tracin_every=args.tracin_every, kl_warmup=args.kl_warmup,
                                 progress=on_epoch, batch_progress=on_batch)
        finally:
            for key in ("batch", "epoch"):
                if key in bars:
                    bars[key].close()
        print(f"{entry.name}: {_summary(record)}")
        print(f"  -> {manifest_path(root).parent / record['file']} (sha256 {record['sha256'][:12]}..., "
              f"{len(record['tracin_checkpoints'])} TracIn checkpoints)")
    return 0


# --------------------------------------------------------------------------- zoo


def _fmt(value: Optional[float], digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def _metric(row: dict[str, Any]) -> str:
    if not row.get("trained"):
        return ""
    if row.get("val_accuracy") is not None:
        return f"acc {_fmt(row.get('test_accuracy', row['val_accuracy']), 4)}"
    if row.get("baseline_val_loss") is not None:
        return f"baseline {_fmt(row['baseline_val_loss'])}"
    if row.get("rec") is not None:
        return f"rec {_fmt(row['rec'])} KL {_fmt(row['kl'])}"
    return ""


def run_zoo_list(args: argparse.Namespace) -> int:
    """Print one line per entry: recipe, status and headline metrics."""
    if args.dataset is not None and args.dataset not in DATASETS:
        raise ParameterError(f"unknown dataset {args.dataset!r}; choose one of {DATASETS}")
    rows = [r for r in list_entries(args.out) if args.dataset is None or r.get("dataset") == args.dataset]
    width = max([len("name")] + [len(str(r["name"])) for r in rows])
    header = f"{'name':<{width}} {'dataset':<9} {'task':<15} {'beta':>4} {'run':>3} {'d':>3} {'status':<12} " \
             f"{'epochs':>6} {'val loss':>10}  metric"
    print(header)
    print("-" * len(header))
    n_trained = 0
    for row in rows:
        trained = bool(row.get("trained"))
        n_trained += trained
        status = "trained" if trained else ("not trained" if row.get("shipped", True) else "not shipped")
        beta = "-" if row.get("beta") is None else f"{row['beta']:g}"
        print(f"{row['name']:<{width}} {row.get('dataset', '?'):<9} {row.get('task', '?'):<15} {beta:>4} "
              f"{row.get('run', '-'):>3} {row.get('latent_dim', '-'):>3} {status:<12} "
              f"{row.get('epochs_trained', '') if trained else '':>6} "
              f"{_fmt(row.get('best_val_loss')) if trained else '':>10}  {_metric(row)}")
    print(f"{n_trained} of {len(rows)} entries trained (manifest: {manifest_path(args.out)})")
    for name, problem in valid_records(manifest_path(args.out).parent)[1]:
        print(f"skipped {name}: {problem}")
    return 0


def run_zoo_quality(args: argparse.Namespace) -> int:
    """Measure (and optionally record) the quality floors of every trained VAE; exit 0 even when some fail."""
    from lfx_engine.training.quality import measure_zoo_quality

    if args.n_test < 2:
        raise ParameterError(f"--n-test must be at least 2, got {args.n_test}")
    if args.dataset is not None and args.dataset not in DATASETS:
        raise ParameterError(f"unknown dataset {args.dataset!r}; choose one of {DATASETS}")
    rows = measure_zoo_quality(args.out, dataset=args.dataset, n_test=args.n_test, write=args.write)
    for name, q in rows:
        print(f"{name:<32} {q['verdict']:<12} active {q['active_units']}/{q['latent_dim']}  "
              f"rec/mean-image {q['rec_ratio']:.3f}  KL {q['kl']:.3f}")
    failing = sum(q["verdict"] != "ok" for _, q in rows)
    print(f"{len(rows)} VAE(s) measured, {failing} below the floors" + ("; recorded in the manifest" if args.write
                                                                        else ""))
    return 0


def run_zoo_import_study(args: argparse.Namespace) -> int:
    """Import the study's models; exit 0 when at least one imported, 2 when none could be."""
    from lfx_engine.study import import_study

    if args.commit is not None and not re.fullmatch(r"[0-9a-fA-F]{7,40}", args.commit):
        raise ParameterError("--commit must be a git commit hash (7 to 40 hex digits)")
    report = import_study(args.path, args.out, commit=args.commit)
    print(report.summary())
    if report.missing:
        print(f"missing ({len(report.missing)}), e.g. {', '.join(report.missing[:3])}: a partial copy of the "
              f"repository; the other files imported", file=sys.stderr)
    for path, why in report.refused:
        print(f"skipped {path}: {why}", file=sys.stderr)
    if not report.imported:
        raise CheckpointError(f"no model could be imported from {args.path}")
    return 0


def run_zoo_show(args: argparse.Namespace) -> int:
    """Print one manifest record."""
    record = read_manifest(args.out)["entries"].get(args.name)
    if record is None:
        raise ParameterError(f"{args.name!r} is not in the manifest {manifest_path(args.out)}")
    print(json.dumps(record, indent=1))
    return 0


def run_zoo_verify(args: argparse.Namespace) -> int:
    """Check every recorded file's sha256 (model and TracIn checkpoints)."""
    base = manifest_path(args.out).parent
    entries, skipped = valid_records(base)
    problems = [f"{name}: {problem}" for name, problem in skipped]
    for name, record in entries.items():
        files = [(record["file"], record["sha256"])]
        files += [(t["file"], t["sha256"]) for t in record.get("tracin_checkpoints", [])]
        for rel, expected in files:
            path = base / rel
            if not path.is_file():
                problems.append(f"{name}: {rel} missing")
            elif file_sha256(path) != expected:
                problems.append(f"{name}: {rel} sha256 mismatch")
    for line in problems:
        print(line)
    if problems:
        raise CheckpointError(f"{len(problems)} problem(s) in {len(entries) + len(skipped)} manifest entries")
    print(f"all {len(entries)} entries verified")
    return 0
