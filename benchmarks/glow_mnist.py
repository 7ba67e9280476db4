"""Glow on MNIST: test bits/dim against published flows, the per-epoch curve and samples.

Trains ``glow`` from the CLI (``gentool fit glow --dataset mnist``; an existing
run in ``--run-dir`` is reused), measures the exact NLL on the test set with
``gentool evaluate --metric nll`` (fixed, seeded dequantisation noise) and prints
a Markdown table against the published MNIST numbers of Real NVP, Glow and
FFJORD (bits/dim of dequantised 8-bit pixels, as tabulated by Grathwohl et al.
2019). Writes 64-image grids at temperatures 0.7 and 1.0 and the bits/dim curve.

    GENTOOL_DATA_DIR=../shared/data python benchmarks/glow_mnist.py --epochs 10
    GENTOOL_DATA_DIR=../shared/data python benchmarks/glow_mnist.py --device cuda --epochs 100 \\
        --set hidden=256 --set steps=16 --run-dir runs/benchmarks/glow-mnist-large
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from shared import fit_once, gentool, machine

from gentoolkit.plots import plot_metrics
from gentoolkit.rundir import RunDir

PUBLISHED = [  # MNIST test bits/dim
    ("Real NVP (Dinh et al. 2017)", 1.06),
    ("Glow (Kingma & Dhariwal 2018)", 1.05),
    ("FFJORD (Grathwohl et al. 2019)", 0.99),
]
TEMPERATURES = (0.7, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, default=Path("runs/benchmarks/glow-mnist"))
    parser.add_argument("--epochs", type=int, help="default: the model's recipe")
    parser.add_argument("--lr", type=float, help="default: the model's recipe")
    parser.add_argument("--batch-size", type=int, help="default: the model's recipe")
    parser.add_argument("--lr-schedule", choices=["constant", "cosine"], default="constant")
    parser.add_argument("--set", dest="options", action="append", default=[], metavar="KEY=VALUE",
                        help="a model option, as for gentool fit --set (levels, steps, hidden, coupling, lu)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto: for training, evaluation and sampling")
    parser.add_argument("--max-steps", type=int, help="stop training after this many updates (smoke tests)")
    parser.add_argument("--limit", type=int, help="test images for the NLL (default: all 10,000)")
    parser.add_argument("--images", type=Path, default=Path("docs/images"), help="where grids and the plot go")
    args = parser.parse_args()

    fit = ["glow", "--dataset", "mnist", "--seed", "0", "--quiet", "--device", args.device,
           "--lr-schedule", args.lr_schedule]
    for flag, value in (("--epochs", args.epochs), ("--lr", args.lr), ("--batch-size", args.batch_size),
                        ("--max-steps", args.max_steps)):
        if value is not None:
            fit += [flag, str(value)]
    for option in args.options:
        fit += ["--set", option]
    minutes = fit_once(args.run_dir, fit)
    run = ["--run", str(args.run_dir), "--device", args.device]
    limit = ["--limit", str(args.limit)] if args.limit else []
    result = json.loads(gentool("evaluate", *run, "--metric", "nll", *limit, "--json"))
    args.images.mkdir(parents=True, exist_ok=True)
    grids = {t: args.images / f"glow-mnist-t{t}.png" for t in TEMPERATURES}
    for temperature, grid in grids.items():
        gentool("sample", *run, "-n", "64", "--temperature", str(temperature), "--out", str(grid), "--force")
    rows = RunDir(args.run_dir).metrics()
    plot = args.images / "glow-mnist-bits.png"
    curves = {split: [{"epoch": row["epoch"], "bits_per_dim": row[f"{split}_bits_per_dim"]} for row in rows]
              for split in ("train", "test")}
    plot_metrics(curves, ["bits_per_dim"], plot, title="Glow on MNIST: bits/dim per epoch")

    model = RunDir(args.run_dir).read_config()["model"]["config"]
    described = ", ".join(f"{key}={value}" for key, value in model.items())
    print(f"# Glow on MNIST, dequantised 8-bit pixels; {machine(args.device)}, seed 0")
    print(f"# NLL on {f'the first {args.limit:,}' if args.limit else 'all 10,000'} test images; "
          f"{rows[-1]['epoch']} epochs ({rows[-1]['step']} steps), {minutes:.1f} training minutes")
    print("| model | test bits/dim |")
    print("| --- | ---: |")
    print(f"| gentoolkit `glow` ({described}) | {result['nll_bits_per_dim']:.3f} |")
    for name, bits in PUBLISHED:
        print(f"| {name}, published | {bits:.2f} |")
    print()
    print("| epoch | train bits/dim | test bits/dim | seconds |")
    print("| ---: | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row['epoch']} | {row['train_bits_per_dim']:.3f} | {row['test_bits_per_dim']:.3f} | "
              f"{row['seconds']:.0f} |")
    print(f"\ntest NLL {result['nll']:.1f} nats per image ({result['nll_kind']})")
    print(f"trained with: `gentool fit {' '.join(fit)} --run-dir {args.run_dir}`")
    print(f"samples: {', '.join(f'{grid} (T={t})' for t, grid in grids.items())}; plot: {plot}")


if __name__ == "__main__":
    main()
