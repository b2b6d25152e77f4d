"""``python -m lfx_engine data {list,fetch}``: see which datasets are present, download missing ones."""
from __future__ import annotations

import argparse
from pathlib import Path

from lfx_engine.config import data_dir
from lfx_engine.data.fetch import fetch
from lfx_engine.data.readers import describe
from lfx_engine.data.registry import get_spec, list_datasets


def _folder(args: argparse.Namespace) -> Path:
    return Path(args.data_dir).expanduser().resolve() if args.data_dir else data_dir()


def run_list(args: argparse.Namespace) -> int:
    """Print each dataset: present/missing/malformed, its files and array shapes."""
    folder = _folder(args)
    print(f"data directory: {folder} (set LFX_DATA_DIR or --data-dir to change)")
    for name in list_datasets():
        status = describe(name, folder, verify=args.verify)
        spec = get_spec(name)
        print(f"{name:<9} {status.status:<9} {', '.join(str(path) for path in status.paths)}")
        for key, shape in status.shapes.items():
            print(f"          {key}: {shape}")
        if status.status != "present":
            print(f"          {status.problem}; fix: {spec.fetch_command}")
    return 0


def run_fetch(args: argparse.Namespace) -> int:
    """Download and verify each named dataset."""
    folder = _folder(args)
    names = list_datasets() if "all" in args.names else args.names
    for name in names:
        fetch(name, folder, force=args.force)
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the ``data`` command with its ``list`` and ``fetch`` sub-commands."""
    parser = subparsers.add_parser("data", help="list and download datasets")
    commands = parser.add_subparsers(dest="data_command", required=True)

    listing = commands.add_parser("list", help="show which datasets are present, where, and their shapes")
    listing.add_argument("--data-dir", default=None, help="folder to inspect (default: LFX_DATA_DIR)")
    listing.add_argument("--verify", action="store_true", help="fully read and validate each dataset")
    listing.set_defaults(func=run_list)

    fetching = commands.add_parser("fetch", help="download datasets from their official sources")
    fetching.add_argument("names", nargs="+", choices=list_datasets() + ["all"], metavar="NAME",
                          help=f"dataset(s) to download: {', '.join(list_datasets())} or all")
    fetching.add_argument("--data-dir", default=None, help="folder to write to (default: LFX_DATA_DIR)")
    fetching.add_argument("--force", action="store_true", help="download even if valid files are present")
    fetching.set_defaults(func=run_fetch)
