"""``lfx cache info`` and ``lfx cache clear [--namespace NS]``: see and empty the disk cache."""
from __future__ import annotations

import argparse

from lfx_engine import cache


def _mb(n: int) -> str:
    return f"{n / 2 ** 20:,.1f} MB"


def run_info(args: argparse.Namespace) -> int:
    summary = cache.info()
    print(f"cache folder {summary['folder']}: {summary['entries']} entries, {_mb(summary['bytes'])} of a "
          f"{_mb(summary['cap_bytes'])} cap (LFX_CACHE_MAX_MB)")
    for namespace, row in sorted(summary["namespaces"].items()):
        print(f"  {namespace:<28} {row['entries']:>6} entries  {_mb(row['bytes']):>12}")
    return 0


def run_clear(args: argparse.Namespace) -> int:
    count = cache.clear(args.namespace)
    print(f"deleted {count} cache entr{'y' if count == 1 else 'ies'}"
          + (f" of {args.namespace}" if args.namespace else "") + f" in {cache.cache_dir()}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("cache", help="show or empty the disk cache of heavy results")
    commands = parser.add_subparsers(dest="cache_command", required=True)
    info = commands.add_parser("info", help="folder, size, cap and entries per namespace")
    info.set_defaults(func=run_info)
    clear = commands.add_parser("clear", help="delete cached results (all, or one namespace)")
    clear.add_argument("--namespace", default=None, help="only this namespace (see `lfx cache info`)")
    clear.set_defaults(func=run_clear)
