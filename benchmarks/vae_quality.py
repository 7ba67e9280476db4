"""Bernoulli VAE on binarised MNIST: train recipes from the CLI, measure test ELBO and NLL.

Each recipe is a ``gentool fit`` command; each run is then measured with
``gentool evaluate --metric elbo,nll`` (NLL: importance weighted, Burda et al.
2015, on a fixed seeded binarisation of the test set). The script prints a
Markdown table and writes the test-ELBO-per-epoch plot.

    GENTOOL_DATA_DIR=../shared/data python benchmarks/vae_quality.py --k 5000 --limit 1000
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

import gentoolkit
import gentoolkit.api as gt
from gentoolkit.plots import plot_metrics

RECIPES = {  # run folder: (description, gentool fit flags)
    "default": ("the article's: MLP 784-400-20, Adam 3e-4, batch 128, 20 epochs", ["--epochs", "20"]),
    "conv": ("conv, 32-d latent, Adam 1e-3 with cosine schedule, 20 epochs", [
        "--epochs", "20", "--lr", "1e-3", "--lr-schedule", "cosine", "--set", "arch=conv",
        "--set", "latent_dim=32", "--set", "channels=32,64"]),
}


def gentool(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "gentoolkit", *args], capture_output=True, text=True)
    if result.returncode:
        sys.exit(result.stderr)
    return result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/benchmarks"))
    parser.add_argument("--k", type=int, default=5000, help="importance samples for the NLL")
    parser.add_argument("--limit", type=int, default=1000, help="test images for the NLL (all: 10000)")
    parser.add_argument("--plot", type=Path, default=Path("docs/images/vae-test-elbo.png"))
    parser.add_argument("--only", choices=list(RECIPES), help="run only this recipe")
    args = parser.parse_args()
    rows, curves = [], {}
    for name, (description, flags) in RECIPES.items():
        if args.only and args.only != name:
            continue
        run_dir = args.runs_dir / name
        command = ["fit", "vae", "--dataset", "mnist", "--seed", "0", "--quiet", "--run-dir", str(run_dir), *flags]
        if not (run_dir / "model.safetensors").exists():
            start = time.perf_counter()
            gentool(*command)
            minutes = (time.perf_counter() - start) / 60
        else:
            minutes = sum(r["seconds"] for r in gt.load_run(run_dir).metrics) / 60
        elbo = json.loads(gentool("evaluate", "--run", str(run_dir), "--metric", "elbo", "--json"))
        nll = json.loads(gentool("evaluate", "--run", str(run_dir), "--metric", "nll", "--k", str(args.k),
                                 "--limit", str(args.limit), "--json"))
        curves[name] = gt.load_run(run_dir).metrics
        rows.append((f"{name} ({description})", "gentool " + " ".join(command), elbo["elbo"], nll["nll"], minutes))
    print(f"# Bernoulli VAE, binarised MNIST; {platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, gentoolkit {gentoolkit.__version__}, seed 0")
    print(f"# test ELBO on all 10,000 test images; NLL with k={args.k} on the first {args.limit}")
    print("| recipe | test ELBO (nats) | test NLL (nats) | training minutes |")
    print("| --- | ---: | ---: | ---: |")
    for name, _, elbo, nll, minutes in rows:
        print(f"| {name} | {elbo:.2f} | {nll:.2f} | {minutes:.1f} |")
    print()
    for name, command, *_ in rows:
        print(f"- {name}: `{command}`")
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    plot_metrics(curves, ["test_elbo"], args.plot, title="Bernoulli VAE on MNIST: test ELBO per epoch")
    print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
