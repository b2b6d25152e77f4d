"""The worked example of ``examples/own_encoder`` built small in a temporary folder, for the project tests.

``build_example_project`` copies the example (user code, project file, prepare
script), runs its ``prepare.py`` on a few MNIST images from the real data, and
returns the path of its ``lfx.toml``: an encoder that is not in the zoo, an
image folder with labels, one without, and a ``torch.export`` archive.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "own_encoder"
FILES = ("my_models.py", "prepare.py", "lfx.toml")


def build_example_project(root: Path, data_dir: Path) -> Path:
    """Copy and prepare the example under ``root`` (12 images per digit, 60 unlabelled, 8 epochs)."""
    root.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copy(EXAMPLE / name, root / name)
    env = {**os.environ, "LFX_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(root / "prepare.py"), "--out", str(root), "--per-class", "12",
                    "--unlabelled", "60", "--epochs", "8"], check=True, env=env, capture_output=True, timeout=600)
    return root / "lfx.toml"
