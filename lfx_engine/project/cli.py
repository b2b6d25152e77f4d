"""``lfx check PROJECT.toml`` and ``lfx serve PROJECT.toml``: validate a project file, or open it in the app."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lfx_engine.catalogue import VIEWS, Catalogue
from lfx_engine.config import REPO_ROOT, in_checkout
from lfx_engine.errors import ParameterError
from lfx_ui.launch import streamlit_command  # stdlib only: launching the app imports no Streamlit

VIEW_TITLES = {"saliency": "saliency", "masking": "masking", "examples": "top examples", "tracin": "TracIn",
               "influence": "influence", "disentanglement": "unit maps", "lucent": "lucent"}


def _project_paths(args: argparse.Namespace) -> list[Path]:
    paths = [Path(p).expanduser().resolve() for p in args.project]
    for path in paths:
        if not path.is_file():
            raise ParameterError(f"project file {path} not found; give the path of your lfx.toml")
    return paths


def check_report(paths: list[Path]) -> tuple[list[str], int]:
    """Lines describing every dataset and model of the project files, and the number of problems."""
    catalogue = Catalogue(projects=paths)
    lines, problems = [], 0
    for path, problem in catalogue.project_problems():
        lines.append(f"error  {path}: {problem}")
        problems += 1
    user_datasets = [d for d in catalogue.datasets() if d.source == "user"]
    lines.append(f"datasets ({len(user_datasets)}):")
    for d in user_datasets:
        if d.problem:
            problems += 1
            lines.append(f"  error  {d.name}: {d.problem}")
            continue
        x_train, _ = catalogue.split(d.name, "train")
        x_test, _ = catalogue.split(d.name, "test")
        labels = f"{len(d.class_names)} classes" if d.labelled else "unlabelled"
        lines.append(f"  ok     {d.name}: {len(x_train)} train / {len(x_test)} test, input "
                     f"{'×'.join(map(str, d.input_shape or ()))}, {labels}, baseline {d.baseline}")
        for note in d.notes:
            lines.append(f"           {note}")
    user_models = [m for m in catalogue.models() if m.source == "user"]
    lines.append(f"models ({len(user_models)}):")
    for m in user_models:
        if m.problem:
            problems += 1
            lines.append(f"  error  {m.name}: {m.problem}")
            continue
        views = [VIEW_TITLES[v] for v in VIEWS if m.supports(v)]
        lines.append(f"  ok     {m.name}: dataset {m.dataset}, latent dimension {m.latent_dim}, {m.task}; "
                     f"views: {', '.join(views)}")
        for view, reason in sorted(m.unsupported.items()):
            if view in VIEW_TITLES or view == "gradients":
                lines.append(f"           no {VIEW_TITLES.get(view, 'gradient methods')}: {reason}")
    return lines, problems


def run_check(args: argparse.Namespace) -> int:
    lines, problems = check_report(_project_paths(args))
    print("\n".join(lines))
    print(f"{problems} problem{'s' if problems != 1 else ''} found" if problems else "all entries ok")
    return 1 if problems else 0


def run_serve(args: argparse.Namespace) -> int:
    paths = _project_paths(args)
    app = REPO_ROOT / "app.py"
    if not in_checkout() or not app.is_file():
        raise ParameterError("lfx serve runs the app files of a checkout (app.py, pages/): clone LFX Explorer and "
                             "install it with `pip install -e .`, then run lfx serve again")
    lines, problems = check_report(paths)
    print("\n".join(lines))
    if problems:
        print(f"{problems} problem(s): those entries are listed in the app with their problem; the rest work")
    env = {**os.environ, "LFX_PROJECT": os.pathsep.join(str(p) for p in paths)}
    command = streamlit_command(app, args.port, args.address, watch_files=True)
    print(f"LFX Explorer on http://{args.address or 'localhost'}:{args.port} (Ctrl-C stops it)", flush=True)
    # become the server (no child process): a SIGTERM to `lfx serve` (a service manager, a container stop, a
    # test's teardown) then stops Streamlit itself instead of leaving it running orphaned
    os.chdir(REPO_ROOT)
    os.execve(sys.executable, command, env)
    return 0  # not reached: execve replaces this process


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    check = subparsers.add_parser("check", help="validate a project file: each model and dataset, its status and "
                                                "views (exit 1 on problems)")
    check.add_argument("project", nargs="+", help="project file(s), e.g. lfx.toml")
    check.set_defaults(func=run_check)
    serve = subparsers.add_parser("serve", help="run the app with the project's models next to the zoo")
    serve.add_argument("project", nargs="+", help="project file(s), e.g. lfx.toml")
    serve.add_argument("--port", type=int, default=8501, help="port (default 8501)")
    serve.add_argument("--address", default=None, help="address to bind (default: Streamlit's)")
    serve.set_defaults(func=run_serve)
