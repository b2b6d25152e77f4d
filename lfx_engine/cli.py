"""Command-line entry point: ``lfx <command> ...`` (the same as ``python -m lfx_engine <command> ...``).

Each command family lives next to the code it drives and contributes an
``add_parser(subparsers)`` function; this module only wires them together and
turns user errors (``LFXError``) into a clear message and exit code 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from lfx_engine.errors import LFXError

# module path -> it defines add_parser(subparsers) registering one sub-command
COMMAND_MODULES = (
    "lfx_engine.data.cli",
    "lfx_engine.training.cli",
    "lfx_engine.experiments.cli",
    "lfx_engine.project.cli",
    "lfx_engine.cache_cli",
    "lfx_engine.precompute.cli",
)


def build_parser() -> argparse.ArgumentParser:
    from lfx_engine.version import engine_version

    parser = argparse.ArgumentParser(prog="lfx", description="LFX Explorer: label-free explanations of encoders")
    parser.add_argument("--version", action="version", version=f"lfx-explorer {engine_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # a command family not installed yet
            if exc.name != module_name:
                raise
            continue
        module.add_parser(subparsers)
    return parser


def _one_line(text: str) -> str:
    """A message on one line (the CLI's error contract: one line starting ``error:``)."""
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        from lfx_engine import cache

        cache.clean_start()  # temporary files of writes killed in an earlier run
        return int(args.func(args) or 0)
    except LFXError as exc:
        print(f"error: {_one_line(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:  # an unwritable, missing or invalid folder given on the command line or in LFX_*
        where = f" {exc.filename}" if getattr(exc, "filename", None) else ""
        print(f"error: cannot use{where}: {exc.strerror or type(exc).__name__}; choose a folder that exists and "
              "is writable (--out, --results, LFX_CACHE_DIR, LFX_RESULTS_DIR, LFX_CHECKPOINT_DIR)", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory; use smaller sizes (--n-test, --n-train, --max-memory-mb)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; no partial files were left behind", file=sys.stderr)
        return 130
