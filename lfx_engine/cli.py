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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except LFXError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; no partial files were left behind", file=sys.stderr)
        return 130
