"""Make the worked example's data and weights: an image folder from data you have, a trained autoencoder, a .pt2.

    python examples/own_encoder/prepare.py            # about a minute on a laptop CPU

1. Writes ``data/digits/<class>/*.png`` (an ImageFolder layout, labelled by folder) and
   ``data/unlabelled/*.png`` (a flat folder, no labels) from MNIST images in
   ``LFX_DATA_DIR`` (``python -m lfx_engine data fetch mnist`` downloads them). Any folder of
   your own PNG/JPEG images works the same way.
2. Trains ``my_models.SmallAutoencoder`` on them and saves its weights as safetensors, plus
   one checkpoint per epoch for TracIn, and a small β-VAE (``my_models.SmallVAE``).
3. Exports the trained encoder alone with ``torch.export`` (``weights/encoder.pt2``): a model
   LFX Explorer loads without any user code.

Then ``lfx check examples/own_encoder/lfx.toml`` and ``lfx serve examples/own_encoder/lfx.toml``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from my_models import build_autoencoder, build_vae  # noqa: E402


def write_images(out: Path, n_per_class: int, n_unlabelled: int, seed: int) -> torch.Tensor:
    """PNG files from MNIST's training split; returns the labelled images as a tensor for training."""
    from lfx_engine import load_split

    split = load_split("mnist", "train")
    rng = np.random.default_rng(seed)
    chosen = []
    for digit in range(10):
        positions = np.flatnonzero(split.y.numpy() == digit)
        chosen.extend(rng.choice(positions, n_per_class, replace=False).tolist())
    for k, index in enumerate(chosen):
        folder = out / "digits" / f"digit_{int(split.y[index])}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((split.x[index, 0].numpy() * 255).round().astype(np.uint8)).save(folder / f"{k:05d}.png")
    rest = np.setdiff1d(np.arange(len(split.y)), chosen)
    flat = out / "unlabelled"
    flat.mkdir(parents=True, exist_ok=True)
    for k, index in enumerate(rng.choice(rest, n_unlabelled, replace=False)):
        Image.fromarray((split.x[index, 0].numpy() * 255).round().astype(np.uint8)).save(flat / f"{k:05d}.png")
    return split.x[torch.as_tensor(chosen)]


def train(x: torch.Tensor, epochs: int, weights: Path, seed: int) -> torch.nn.Module:
    """A few epochs of Adam on the reconstruction loss; saves the final weights and one checkpoint per epoch."""
    torch.manual_seed(seed)
    model = build_autoencoder()
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    weights.mkdir(parents=True, exist_ok=True)
    for epoch in range(epochs):
        order = torch.randperm(len(x))
        total = 0.0
        for start in range(0, len(x), 64):
            batch = x[order[start:start + 64]]
            loss = torch.nn.functional.binary_cross_entropy(model(batch), batch)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * len(batch)
        save_file(model.state_dict(), str(weights / f"checkpoint_epoch{epoch}.safetensors"))
        print(f"epoch {epoch + 1}/{epochs}: reconstruction BCE {total / len(x):.4f}")
    save_file(model.state_dict(), str(weights / "autoencoder.safetensors"))
    return model.eval()


def train_vae(x: torch.Tensor, epochs: int, weights: Path, seed: int, beta: float = 1.0) -> None:
    """A β-VAE (Bernoulli reconstruction summed per image, KL to N(0, I)); saves its final weights."""
    torch.manual_seed(seed)
    model = build_vae()
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    for epoch in range(epochs):
        order = torch.randperm(len(x))
        for start in range(0, len(x), 64):
            batch = x[order[start:start + 64]]
            recon, mu, logvar = model(batch)
            rec = torch.nn.functional.binary_cross_entropy(recon, batch, reduction="sum") / len(batch)
            kl = -0.5 * (1 + logvar - mu.square() - logvar.exp()).sum(dim=1).mean()
            loss = rec + beta * kl
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    print(f"VAE: reconstruction {rec.item():.1f}, KL {kl.item():.2f} after {epochs} epochs")
    save_file(model.state_dict(), str(weights / "vae.safetensors"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder for data/ and weights/ (default: here)")
    parser.add_argument("--per-class", type=int, default=100, help="labelled images per digit (default 100)")
    parser.add_argument("--unlabelled", type=int, default=300, help="images in the unlabelled folder (default 300)")
    parser.add_argument("--epochs", type=int, default=8, help="training epochs (default 8)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    x = write_images(args.out / "data", args.per_class, args.unlabelled, args.seed)
    print(f"wrote {len(x)} labelled and {args.unlabelled} unlabelled PNGs under {args.out / 'data'}")
    model = train(x, args.epochs, args.out / "weights", args.seed)
    train_vae(x, args.epochs, args.out / "weights", args.seed)
    # the batch axis is dynamic, so the archive explains one input or a thousand
    program = torch.export.export(model.encoder, (x[:2],), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},))
    torch.export.save(program, str(args.out / "weights" / "encoder.pt2"))
    print(f"saved weights/autoencoder.safetensors, {args.epochs} TracIn checkpoints, vae.safetensors and encoder.pt2 "
          f"in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
