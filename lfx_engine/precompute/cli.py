"""``lfx precompute MODEL --what attributions|examples|masking --executor local|ray``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from lfx_engine.config import results_dir

    from . import Job, make_executor, precompute

    methods = tuple(m for m in args.methods.split(",") if m)
    job = Job(model=args.model, what=args.what, methods=methods, n_test=args.n_test, n_train=args.n_train,
              test_block=args.test_block, train_block=args.train_block)
    out = Path(args.out) if args.out else results_dir() / "precompute" / f"{args.model}_{args.what}"
    executor = make_executor(args.executor, address=args.address, num_cpus=args.num_cpus)

    def progress(done: int, total: int) -> None:
        print(f"\r{done}/{total} tiles", end="" if done < total else "\n", file=sys.stderr, flush=True)

    try:
        result = precompute(job, executor, sink=args.sink, k=args.k, out=out, progress=progress)
    finally:
        if hasattr(executor, "shutdown"):
            executor.shutdown()
    summary = result.summary()
    print(f"{summary['tiles']} tiles on {args.executor} in {summary['wall_seconds']:.1f} s "
          f"({summary['tile_seconds_mean']:.3f} s per tile where it ran); results in {out}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "precompute", help="dataset-wide attributions, example scores or masking curves, in tiles, local or on Ray")
    parser.add_argument("model", help="a trained model's name (zoo, study or your project's: see `lfx check`)")
    parser.add_argument("--what", required=True, choices=("attributions", "examples", "masking"))
    parser.add_argument("--methods", required=True,
                        help="comma-separated methods (attributions/masking: feature methods; examples: one method)")
    parser.add_argument("--executor", default="local", choices=("local", "ray"))
    parser.add_argument("--address", default=None, help="a running Ray cluster's address (default: start one here)")
    parser.add_argument("--num-cpus", type=int, default=None, help="workers of a Ray cluster started here")
    parser.add_argument("--n-test", type=int, default=None, help="only the first N test inputs")
    parser.add_argument("--n-train", type=int, default=None, help="only the first N training examples (examples)")
    parser.add_argument("--test-block", type=int, default=256, help="test inputs per tile")
    parser.add_argument("--train-block", type=int, default=8192, help="training examples per tile (examples)")
    parser.add_argument("--sink", default="topk", choices=("dense", "topk", "shards"),
                        help="example scores: the whole matrix, the top/bottom k per test input, or one file per "
                             "test block")
    parser.add_argument("--k", type=int, default=10, help="k of the topk sink")
    parser.add_argument("--out", default=None, help="output folder (default: the results folder)")
    parser.set_defaults(func=run)

