"""``python -m lfx_engine reproduce EXPERIMENT --data DATASET [...]``: run experiments headless.

Writes ``<results>/<experiment>/<dataset>/`` (CSV, PNG, LaTeX, run.json) for
each (experiment, dataset) pair; a pair whose data or checkpoints are missing
is reported as skipped (``skipped.json``, exit code 0). ``reproduce all`` runs
every pair of METHOD.md §7 (``--data`` restricts it to one dataset) and keeps
going past failures, exiting 2 when any pair failed.
"""
from __future__ import annotations

import argparse
import inspect
import sys
import time
from typing import Any, Callable, Sequence

import torch

from lfx_engine.errors import LFXError, ParameterError
from lfx_engine.experiments.common import (
    EXPERIMENT_ACCEPTS,
    EXPERIMENT_DATASETS,
    EXPERIMENTS,
    ExperimentResult,
    ExperimentSkipped,
    now_iso,
    write_result,
    write_skipped,
)


def runners() -> dict[str, tuple[Callable[..., ExperimentResult], Any]]:
    """experiment → (run function, its module, which holds ``QUICK`` and maybe ``QUICK_BY_DATASET``)."""
    from lfx_engine.experiments import (
        consistency_examples,
        consistency_features,
        disvae,
        encoder_vs_full,
        lucid,
        pretext,
    )

    return {
        "consistency_features": (consistency_features.run_consistency_features, consistency_features),
        "consistency_examples": (consistency_examples.run_consistency_examples, consistency_examples),
        "pretext": (pretext.run_pretext, pretext),
        "disvae": (disvae.run_disvae, disvae),
        "lucid": (lucid.run_lucid, lucid),
        "encoder_vs_full": (encoder_vs_full.run_encoder_vs_full, encoder_vs_full),
    }


def quick_preset(module: Any, dataset: str) -> dict[str, Any]:
    """The ``--quick`` keyword arguments of an experiment module for ``dataset``."""
    return {**getattr(module, "QUICK", {}), **getattr(module, "QUICK_BY_DATASET", {}).get(dataset, {})}


def _log(start: float) -> Callable[[str], None]:
    def log(message: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f}s] {message}", file=sys.stderr, flush=True)
    return log


def run_experiment(experiment: str, dataset: str, *, quick: bool = False, log: Callable[[str], None] | None = None,
                   **options: Any) -> tuple[ExperimentResult, dict[str, Any], list[str]]:
    """Call ``run_<experiment>(dataset, ...)`` with the options it accepts (``--quick`` preset underneath).

    Returns the result, the keyword arguments used and the options it ignored.
    """
    fn, module = runners()[experiment]
    preset = quick_preset(module, dataset)
    accepted = set(inspect.signature(fn).parameters)
    given = {k: v for k, v in options.items() if v is not None}
    kwargs = {**(preset if quick else {}), **given}
    ignored = sorted(k for k in kwargs if k not in accepted)
    if kwargs.get("model_source", "zoo") != "zoo" and "model_source" not in accepted:
        raise ParameterError(f"{experiment} runs on our own models only; --models {kwargs['model_source']} does "
                             "not apply to it")
    kwargs = {k: v for k, v in kwargs.items() if k in accepted}
    result = fn(dataset, log=log, **kwargs)
    result.model_source = str(kwargs.get("model_source", "zoo"))
    result.params["quick"] = quick
    result.params["options"] = {k: (str(v) if isinstance(v, torch.device) else v) for k, v in kwargs.items()}
    return result, kwargs, ignored


def reproduce(experiment: str, dataset: str, *, results: str | None = None, command: str | None = None,
              quick: bool = False, verbose: bool = True, **options: Any) -> str:
    """Run one pair and write its folder; returns ``"ok"`` or ``"skipped"`` (LFXError propagates)."""
    start = time.perf_counter()
    log = _log(start) if verbose else None
    started = now_iso()
    try:
        result, kwargs, ignored = run_experiment(experiment, dataset, quick=quick, log=log, **options)
    except ExperimentSkipped as exc:
        path = write_skipped(experiment, dataset, exc.reason, results, command,
                             {"quick": quick, **{k: v for k, v in options.items() if v is not None}},
                             model_source=options.get("model_source") or "zoo")
        print(f"skipped {experiment} on {dataset}: {exc.reason} (recorded in {path / 'skipped.json'})")
        return "skipped"
    if ignored and verbose:
        print(f"note: {experiment} does not use {', '.join('--' + k.replace('_', '-') for k in ignored)}",
              file=sys.stderr)
    path = write_result(result, results, command, started)
    runs = f", {result.n_runs} run(s)" if result.n_runs is not None else ""
    print(f"{experiment} on {dataset}: done in {result.wall_time_s:.1f}s{runs}; wrote {path}")
    for warning in result.warnings:
        print(f"  warning: {warning}")
    for note in result.notes:
        print(f"  note: {note}")
    return "ok"


def _device(value: str | None) -> torch.device | None:
    from lfx_engine.config import parse_device

    return None if value is None else parse_device(value, "--device")


def run_reproduce(args: argparse.Namespace) -> int:
    """Entry point of ``reproduce``."""
    if args.n_test is not None and args.n_test < 1:
        raise ParameterError(f"--n-test must be a positive integer, got {args.n_test}")
    if args.n_train is not None and args.n_train < 1:
        raise ParameterError(f"--n-train must be a positive integer, got {args.n_train}")
    if args.steps is not None and args.steps < 1:
        raise ParameterError(f"--steps must be a positive integer, got {args.steps}")
    if args.max_memory_mb is not None and not args.max_memory_mb > 0:
        raise ParameterError(f"--max-memory-mb must be a positive number, got {args.max_memory_mb}")
    options = {"n_test": args.n_test, "n_train": args.n_train, "steps": args.steps, "seed": args.seed,
               "device": _device(args.device), "leaky_relu": True if args.leaky_relu else None,
               "use_cache": False if args.no_cache else None,
               "if_hessian": args.if_hessian, "full_output": args.full_output, "max_memory_mb": args.max_memory_mb,
               "model_source": args.models, "include_unfit": True if args.include_unfit else None,
               "design": "factorial" if args.factorial else None, "study_classifiers": args.study_classifiers}
    command = command_line(args)
    if args.experiment == "all":
        pairs = [(e, d) for e in EXPERIMENTS for d in EXPERIMENT_DATASETS[e] if args.data in (None, "all", d)]
        if not pairs:
            raise ParameterError(f"no experiment covers dataset {args.data!r}")
    else:
        accepted = EXPERIMENT_ACCEPTS[args.experiment]
        if args.data in (None, "all"):
            if args.data is None:
                raise ParameterError(f"--data is required for {args.experiment}: one of {', '.join(accepted)} "
                                     f"or all")
            datasets = list(EXPERIMENT_DATASETS[args.experiment])
        elif args.data not in accepted:
            raise ParameterError(f"{args.experiment} runs on {', '.join(accepted)}, not {args.data!r}")
        else:
            datasets = [args.data]
        pairs = [(args.experiment, d) for d in datasets]
    from lfx_engine.config import cache_dir, results_dir, writable_folder

    writable_folder(args.results if args.results else results_dir(), "--results" if args.results else "LFX_RESULTS_DIR")
    if not args.no_cache:
        writable_folder(cache_dir(), "the cache folder (LFX_CACHE_DIR)")
    single = len(pairs) == 1
    outcomes: dict[str, list[str]] = {"ok": [], "skipped": [], "failed": []}
    for experiment, dataset in pairs:
        try:
            status = reproduce(experiment, dataset, results=args.results, command=command, quick=args.quick,
                               **options)
        except LFXError as exc:
            if single:
                raise
            print(f"error: {experiment} on {dataset} failed: {exc}", file=sys.stderr)
            status = "failed"
        outcomes[status].append(f"{experiment}/{dataset}")
    if not single:
        print(f"reproduce: {len(outcomes['ok'])} done, {len(outcomes['skipped'])} skipped, "
              f"{len(outcomes['failed'])} failed" + (f" ({', '.join(outcomes['failed'])})" if outcomes["failed"]
                                                     else ""))
    return 2 if outcomes["failed"] else 0


def command_line(args: argparse.Namespace) -> str:
    """The ``reproduce`` command equivalent to the parsed arguments (recorded in run.json)."""
    parts = ["python -m lfx_engine reproduce", args.experiment]
    for flag, value in (("--data", args.data), ("--results", args.results), ("--n-test", args.n_test),
                        ("--n-train", args.n_train), ("--device", args.device), ("--seed", args.seed),
                        ("--steps", args.steps), ("--if-hessian", args.if_hessian),
                        ("--full-output", args.full_output), ("--max-memory-mb", args.max_memory_mb),
                        ("--models", args.models), ("--study-classifiers", args.study_classifiers)):
        if value is not None:
            parts.append(f"{flag} {value}")
    parts += [flag for flag, on in (("--quick", args.quick), ("--leaky-relu", args.leaky_relu),
                                    ("--no-cache", args.no_cache), ("--include-unfit", args.include_unfit),
                                    ("--factorial", args.factorial)) if on]
    return " ".join(parts)


def add_parser(subparsers: Any) -> None:
    """Register ``reproduce``."""
    datasets = sorted({d for v in EXPERIMENT_ACCEPTS.values() for d in v})
    parser = subparsers.add_parser(
        "reproduce", help="run the paper's experiments headless and write CSV/PNG/LaTeX results",
        description="Run an experiment of METHOD.md §7 on trained zoo checkpoints and write "
                    "<results>/<experiment>/<dataset>/ (tidy CSVs, PNG figures, LaTeX tables, run.json). "
                    "Missing datasets/checkpoints are reported as skipped (exit code 0).")
    parser.add_argument("experiment", choices=(*EXPERIMENTS, "all"),
                        help="experiment to run, or all")
    parser.add_argument("--data", choices=(*datasets, "all"),
                        help="dataset (required unless the experiment is 'all'; 'all' = every dataset it covers)")
    parser.add_argument("--results", help="results folder (default: LFX_RESULTS_DIR or <repo>/results)")
    parser.add_argument("--n-test", type=int, help="number of test examples (default: METHOD's full size)")
    parser.add_argument("--n-train", type=int,
                        help="training subset size for consistency_examples and pretext (default 1000)")
    parser.add_argument("--quick", action="store_true",
                        help="smaller preset for a CPU (fewer examples/steps; recorded in run.json)")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default: LFX_DEVICE, else CUDA when available)")
    parser.add_argument("--seed", type=int, help="seed of the stochastic methods (default 0)")
    parser.add_argument("--steps", type=int, help="lucid: optimisation steps (default 1000)")
    parser.add_argument("--leaky-relu", action="store_true",
                        help="lucid: render with ReLU swapped for LeakyReLU(0.1), as the study did")
    parser.add_argument("--if-hessian", choices=("auto", "exact", "gauss_newton"),
                        help="consistency_examples: Influence Functions Hessian (default auto: the fast "
                             "encoder-Gauss-Newton one for image AEs, exact LiSSA otherwise)")
    parser.add_argument("--max-memory-mb", type=float,
                        help="consistency_examples: memory budget of the per-example gradients TracIn and "
                             "Influence Functions hold at once (default 2048); below it they stream in blocks "
                             "and give the same scores, more slowly")
    parser.add_argument("--full-output", choices=("logits", "softmax"),
                        help="encoder_vs_full: explain the classifier through its logits (default, METHOD) or "
                             "its softmax probabilities (as the earlier code's Softmax-ended classifier did)")
    parser.add_argument("--models", choices=("zoo", "study"),
                        help="whose models to explain: zoo (ours, default) or study (the reproduction study's, "
                             "imported with `lfx zoo import-study`); study results go to <dataset>-study/")
    parser.add_argument("--include-unfit", action="store_true",
                        help="disvae: keep VAEs that fail the quality floors (collapsed, dead, undertrained) in the "
                             "summary, flagged; by default they are listed but left out")
    parser.add_argument("--factorial", action="store_true",
                        help="encoder_vs_full: the factorial design (output logits/softmax x BatchNorm eval/train x "
                             "GradientShap pairing paired/tiled) that finds which setting gives the study's numbers; "
                             "writes encoder_vs_full_factorial/")
    parser.add_argument("--study-classifiers", choices=("head", "2023-01-19", "both"),
                        help="encoder_vs_full --models study: the study's classifiers at HEAD (default), as first "
                             "committed on 2023-01-19, or both (factorial only; its default)")
    parser.add_argument("--no-cache", action="store_true", help="recompute instead of reading the disk cache")
    parser.set_defaults(func=run_reproduce)


def main(argv: Sequence[str] | None = None) -> int:
    """``reproduce`` alone (for ``python -m lfx_engine.experiments.cli``)."""
    from lfx_engine.cli import main as engine_main

    return engine_main(["reproduce", *(argv if argv is not None else sys.argv[1:])])
