"""Does ranking GAN samples by the discriminator make them better? Measured on MNIST.

Trains (or reuses) a DCGAN run made from the CLI, then draws n images with the
plain ``prior`` sampler and n with the ``ranking`` sampler (the best n of
``--ratio`` x n candidates, the article's 64 of 512 is a ratio of 8), and
compares both sets with the MNIST test set in the offline classifier feature
space of the ``metrics`` plugin: Frechet distance, precision and recall
(Kynkaanniemi et al. 2019). These are NOT Inception FIDs (see docs/evaluation.md).
It also writes the two 64-image grids.

    GENTOOL_DATA_DIR=../shared/data python benchmarks/dcgan_ranking.py --epochs 5 --n 2000
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
from pathlib import Path

import torch

import gentoolkit
import gentoolkit.api as gt
from gentoolkit.images import save_grid
from gentoolkit_metrics.distances import frechet_distance, precision_recall
from gentoolkit_metrics.features import classifier_features


def gentool(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "gentoolkit", *args], capture_output=True, text=True)
    if result.returncode:
        sys.exit(result.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, default=Path("runs/benchmarks/dcgan-mnist"))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--n", type=int, default=2000, help="images per sampler")
    parser.add_argument("--ratio", type=int, default=8, help="ranking candidates per kept image")
    parser.add_argument("--images", type=Path, default=Path("docs/images"))
    args = parser.parse_args()
    command = ["fit", "dcgan", "--dataset", "mnist", "--epochs", str(args.epochs), "--seed", "0", "--quiet",
               "--run-dir", str(args.run_dir)]
    if not (args.run_dir / "model.safetensors").exists():
        gentool(*command)
    run = gt.load_run(args.run_dir)
    data = gt.load_data(run.toolkit, run.config["dataset"])
    space = classifier_features(data, torch.device("cpu"), "fid")
    real = space.embed(data.test, 500)

    samplers = {"prior": ("prior", {}),
                f"ranking (best {args.n} of {args.ratio * args.n})": ("ranking", {"candidates": args.ratio * args.n})}
    rows = []
    for label, (name, options) in samplers.items():
        samples = run.sample(args.n, sampler=name, seed=1, options=options)
        fake = space.embed(samples.images.mul(255).round().to(torch.uint8), 500)
        precision, recall = precision_recall(real, fake)
        with torch.no_grad():
            score = run.model.discriminator_score(samples.images).mean().item()
        rows.append((label, frechet_distance(real, fake), precision, recall, score))
        grid = run.sample(64, sampler=name, seed=0, options={"candidates": 512} if options else {})
        save_grid(grid.images, args.images / f"dcgan-mnist-{name}.png")

    print(f"# DCGAN on MNIST, {run.metrics[-1]['epoch']} epochs ({run.metrics[-1]['step']} steps), "
          f"{args.n} images per sampler, seed 1")
    print(f"# {platform.machine()}, torch {torch.__version__}, gentoolkit {gentoolkit.__version__}; "
          f"features: {space.name} (offline, not Inception)")
    print("| sampler | FID (classifier features) | precision | recall | mean D logit |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, fid, precision, recall, score in rows:
        print(f"| {label} | {fid:.3f} | {precision:.3f} | {recall:.3f} | {score:.2f} |")
    print(f"\ntrained with: `gentool {' '.join(command)}`")
    print(f"grids: {args.images}/dcgan-mnist-prior.png, {args.images}/dcgan-mnist-ranking.png "
          "(64 images; ranking keeps the best 64 of 512, as the article does)")


if __name__ == "__main__":
    main()
