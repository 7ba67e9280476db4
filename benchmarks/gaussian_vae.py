"""Gaussian VAE on MNIST grey levels: test ELBO and NLL in nats and in bits per dimension.

The Gaussian VAE models the 8-bit pixels dequantised into [0, 1] (uniform noise
within each pixel's 1/256 bin), so its bounds are bounds on the probability of
the stored bytes and convert to bits/dim: (-log p + D ln 256) / (D ln 2); a
uniform model scores 8. Each recipe is a ``gentool fit`` command, measured with
``gentool evaluate --metric elbo,nll`` on the test set (fixed, seeded dequantisation
noise). The script prints a Markdown table and writes a grid of samples per recipe.

    GENTOOL_DATA_DIR=../shared/data python benchmarks/gaussian_vae.py --k 500
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch
from shared import CONV_RECIPE, fit_once, gentool

import gentoolkit

RECIPES = {  # run folder: (description, gentool fit flags)
    "gaussian": ("MLP 784-400-20, learned per-pixel sigma, Adam 1e-3, 20 epochs", ["--epochs", "20"]),
    "gaussian-conv": ("conv, 32-d latent, learned sigma, Adam 1e-3 with cosine schedule, 20 epochs",
                      CONV_RECIPE),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/benchmarks"))
    parser.add_argument("--k", type=int, default=500, help="importance samples for the NLL")
    parser.add_argument("--images", type=Path, default=Path("docs/images"))
    parser.add_argument("--only", choices=list(RECIPES), help="run only this recipe")
    args = parser.parse_args()
    rows = []
    for name, (description, flags) in RECIPES.items():
        if args.only and args.only != name:
            continue
        run_dir = args.runs_dir / name
        fit = ["gaussian-vae", "--dataset", "mnist", "--seed", "0", "--quiet", *flags]
        minutes = fit_once(run_dir, fit)
        result = json.loads(gentool("evaluate", "--run", str(run_dir), "--metric", "elbo,nll", "--k", str(args.k),
                                    "--json"))
        grid = args.images / f"{name}-vae-samples.png"
        gentool("sample", "--run", str(run_dir), "-n", "64", "--out", str(grid))
        rows.append((name, description, f"gentool fit {' '.join(fit)} --run-dir {run_dir}", result, minutes, grid))
    print(f"# Gaussian VAE, MNIST dequantised to [0, 1]; {platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, gentoolkit {gentoolkit.__version__}, seed 0")
    print(f"# all 10,000 test images; ELBO with one code per image, NLL with k={args.k}")
    print("| recipe | test ELBO (nats) | ELBO bits/dim | test NLL (nats) | NLL bits/dim | training minutes |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, description, _, r, minutes, _ in rows:
        print(f"| {name} ({description}) | {r['elbo']:.1f} | {r['elbo_bits_per_dim']:.3f} | {r['nll']:.1f} | "
              f"{r['nll_bits_per_dim']:.3f} | {minutes:.1f} |")
    print()
    for name, _, command, *_, grid in rows:
        print(f"- {name}: `{command}`; samples: {grid}")


if __name__ == "__main__":
    main()
