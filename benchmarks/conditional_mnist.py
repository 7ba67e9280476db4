"""Class-conditional DCGAN and VAE on MNIST: does each sample show the digit it was drawn for?

Trains a conditional ``dcgan`` and a conditional ``bernoulli-vae`` (the convolutional VAE
of the other VAE scripts) from the CLI with ``--set conditional=true``, then measures each
with ``gentool evaluate``: ``label-accuracy``, the share of samples that the offline MNIST
classifier of the ``metrics`` plugin reads as the class they were drawn for (the goal is
above 95%; the classifier itself reads about 98% of the real test digits right), and
``fid`` in the same classifier's feature space, with the classes drawn in turn (NOT an
Inception FID; see docs/evaluation.md). Writes one grid per model with one row per class,
``docs/images/conditional-<model>-mnist.png``. A finished run is reused, so a second call
only measures (a run with fewer epochs than --epochs is trained on to that many).

    GENTOOL_DATA_DIR=../shared/data python benchmarks/conditional_mnist.py --epochs 10
    GENTOOL_DATA_DIR=../shared/data python benchmarks/conditional_mnist.py --epochs 10 --device cuda

A smoke test on the shapes data set, in a minute or two on a CPU (a check, not a measurement):

    python benchmarks/conditional_mnist.py --dataset shapes --set data.train_size=512 --set data.test_size=256 \\
        --epochs 1 --k 64 --runs-dir /tmp/smoke/runs --images /tmp/smoke/images
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from shared import CONV_OPTIONS, fit_once, gentool, machine

import gentoolkit.api as gt
from gentoolkit.api import resolve_device

MODELS = {"dcgan": [], "bernoulli-vae": CONV_OPTIONS}  # each model's `gentool fit` options beside conditional=true


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10, help="training epochs of each model")
    parser.add_argument("--k", type=int, default=10_000, help="generated images for label-accuracy and fid")
    parser.add_argument("--device", default="auto", help="where to train, sample and measure: auto, cpu, cuda")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {', '.join(MODELS)}")
    parser.add_argument("--dataset", default="mnist", help="a labelled data set; shapes for smoke tests")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="passed to every gentool fit (smoke tests: --set data.train_size=512)")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/benchmarks"))
    parser.add_argument("--images", type=Path, default=Path("docs/images"))
    args = parser.parse_args()
    models = args.models.split(",")
    unknown = [model for model in models if model not in MODELS]
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    device = str(resolve_device(args.device))
    args.images.mkdir(parents=True, exist_ok=True)

    rows, commands = [], []
    for model in models:
        run_dir = args.runs_dir / f"conditional-{model}-{args.dataset}"
        fit_args = [model, "--dataset", args.dataset, "--epochs", str(args.epochs), "--seed", "0", "--quiet",
                    "--device", device, "--set", "conditional=true", *MODELS[model],
                    *(arg for setting in args.overrides for arg in ("--set", setting))]
        minutes = fit_once(run_dir, fit_args)
        if len(gt.load_run(run_dir).metrics) < args.epochs:  # a shorter run of an earlier call: train it on
            gentool("fit", "--resume", str(run_dir), "--epochs", str(args.epochs), "--quiet", "--device", device)
            minutes = fit_once(run_dir, fit_args)
        results = json.loads(gentool("evaluate", "--run", str(run_dir), "--metric", "label-accuracy,fid",
                                     "--k", str(args.k), "--device", device, "--json"))
        classes = gt.load_run(run_dir).config.image_spec.classes
        grid = args.images / f"conditional-{model}-{args.dataset}.png"
        gentool("sample", "--run", str(run_dir), "-n", str(classes * classes), "--device", device, "--out", str(grid),
                "--force")
        rows.append(f"| {model} | {args.epochs} | {results['label_accuracy']:.2%} | {results['fid']:.3f} | "
                    f"{minutes:.1f} | {grid} |")
        commands.append(f"`gentool fit {' '.join(fit_args)} --run-dir {run_dir}`")

    print(f"# class-conditional models on {args.dataset}: {args.k} generated images per metric, classes in turn, "
          f"seed 0; features: {results['fid_features']} (offline, not Inception)")
    print(f"# {machine(args.device)}")
    print("| model | epochs | label accuracy | FID (classifier features) | training minutes | grid (a row per class) |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    print("\n".join(rows))
    print("\ntrained with: " + "; ".join(commands))


if __name__ == "__main__":
    main()
