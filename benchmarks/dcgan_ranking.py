"""Do discriminator samplers make GAN samples better? Measured on MNIST, over training.

Trains a DCGAN from the CLI one epoch at a time (``gentool fit``, then
``gentool fit --resume RUN --epochs E``, which continues exactly where the last
epoch stopped), and after every epoch draws n images with each sampler of
``--samplers``: the plain ``prior``, ``ranking`` (the best n of ``--ratio`` x n
candidates; the article's 64 of 512 is a ratio of 8) and ``drs``
(discriminator rejection sampling with ``--gamma``). Every set is compared
with the test set in the offline classifier feature space of the ``metrics``
plugin: Frechet distance, precision and recall (Kynkaanniemi et al. 2019).
These are NOT Inception FIDs (see docs/evaluation.md). The script prints the
tables, plots FID per epoch and writes the final 64-image grid of each sampler.

    GENTOOL_DATA_DIR=../shared/data python benchmarks/dcgan_ranking.py --epochs 5 --n 2000
    GENTOOL_DATA_DIR=../shared/data python benchmarks/dcgan_ranking.py --epochs 5 --n 2000 --device cuda

A smoke test on the shapes data set, in a minute on a CPU (check, not measurement):

    python benchmarks/dcgan_ranking.py --dataset shapes --set data.train_size=512 --set ngf=8 --set ndf=8 \
        --epochs 2 --n 64 --run-dir /tmp/smoke/run --images /tmp/smoke/images
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from shared import gentool, machine

import gentoolkit.api as gt
from gentoolkit.api import resolve_device
from gentoolkit.images import save_grid
from gentoolkit.plots import plot_metrics
from gentoolkit_metrics.distances import frechet_distance, precision_recall
from gentoolkit_metrics.features import FeatureSpace, classifier_features
from gentoolkit_ranking import DiscriminatorRejectionSampler


@dataclass(frozen=True)
class Column:
    """A sampler measured by the benchmark: its name, its options for the n images, and for the grid."""

    label: str  # the column's heading
    sampler: str
    options: dict[str, Any]
    grid_options: dict[str, Any]


def columns(names: list[str], n: int, ratio: int, gamma: str) -> list[Column]:
    """The samplers named by --samplers, in that order."""
    known = {"prior": Column("prior", "prior", {}, {}),
             "ranking": Column(f"ranking (best {n} of {ratio * n})", "ranking", {"candidates": ratio * n},
                               {"candidates": 512}),  # the article's 64 of 512
             "drs": Column(f"drs (gamma {gamma})", "drs", {"gamma": gamma}, {"gamma": gamma})}
    unknown = [name for name in names if name not in known]
    if unknown:
        sys.exit(f"--samplers: unknown {', '.join(unknown)}; choose from {', '.join(known)}.")
    return [known[name] for name in names]


def measure(run: gt.Run, column: Column, n: int, space: FeatureSpace, real: torch.Tensor) -> dict[str, float]:
    """FID, precision, recall and mean discriminator logit of n images from one sampler."""
    samples = run.sample(n, sampler=column.sampler, seed=1, options=column.options)
    fake = space.embed(samples.images.mul(255).round().to(torch.uint8), 500)
    precision, recall = precision_recall(real, fake)
    with torch.no_grad():
        score = run.model.discriminator_score(samples.images).mean().item()
    return {"fid": frechet_distance(real, fake), "precision": precision, "recall": recall, "d_logit": score}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", type=Path, default=Path("runs/benchmarks/dcgan-mnist"))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--n", type=int, default=2000, help="images per sampler")
    parser.add_argument("--samplers", default="prior,ranking,drs", help="comma-separated: prior, ranking, drs")
    parser.add_argument("--ratio", type=int, default=8, help="ranking candidates per kept image")
    parser.add_argument("--gamma", default=DiscriminatorRejectionSampler.Config.gamma,
                        help="drs's gamma: a percentile of F per batch (80%%) or a fixed number")
    parser.add_argument("--device", default="auto", help="where to train and sample: auto, cpu, cuda")
    parser.add_argument("--dataset", default="mnist", help="for smoke tests: shapes")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="passed to gentool fit (smoke tests: --set ngf=8 --set data.train_size=512)")
    parser.add_argument("--images", type=Path, default=Path("docs/images"))
    args = parser.parse_args()
    device = resolve_device(args.device)
    command = ["fit", "dcgan", "--dataset", args.dataset, "--epochs", "1", "--seed", "0", "--quiet",
               "--device", str(device), "--run-dir", str(args.run_dir),
               *(arg for setting in args.overrides for arg in ("--set", setting))]
    if args.run_dir.exists():
        sys.exit(f"{args.run_dir} exists; this script trains it epoch by epoch from scratch. "
                 "Remove it or pass another --run-dir.")
    samplers = columns(args.samplers.split(","), args.n, args.ratio, args.gamma)
    curves: dict[str, list[dict[str, float]]] = {column.label: [] for column in samplers}
    for epoch in range(1, args.epochs + 1):
        if epoch == 1:
            gentool(*command)
        else:
            gentool("fit", "--resume", str(args.run_dir), "--epochs", str(epoch), "--quiet")
        run = gt.load_run(args.run_dir, device=str(device))
        if epoch == 1:
            data = gt.load_data(run.toolkit, run.config.dataset)
            space = classifier_features(data, device, "fid")
            real = space.embed(data.test.to(device), 500)
        for column in samplers:
            curves[column.label].append({"epoch": epoch, **measure(run, column, args.n, space, real)})
        print(f"epoch {epoch}: " + ", ".join(f"{label.split()[0]} FID {rows[-1]['fid']:.3f}"
                                             for label, rows in curves.items()), file=sys.stderr)

    name = f"dcgan-{args.dataset}"
    args.images.mkdir(parents=True, exist_ok=True)
    for column in samplers:
        grid = run.sample(64, sampler=column.sampler, seed=0, options=column.grid_options)
        save_grid(grid.images, args.images / f"{name}-{column.sampler}.png")
    plot = args.images / f"{name}-fid.png"
    plot_metrics(curves, ["fid", "precision", "recall"], plot,
                 title=f"DCGAN on {args.dataset}: {args.n} samples vs the test set (classifier features)")

    last = run.metrics[-1]
    print(f"# DCGAN on {args.dataset}, {last['epoch']} epochs ({last['step']} steps), {args.n} images per sampler, "
          "seed 1")
    print(f"# {machine(str(device))}; features: {space.name} (offline, not Inception)")
    print(f"## after epoch {last['epoch']}")
    print("| sampler | FID (classifier features) | precision | recall | mean D logit |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, rows in curves.items():
        r = rows[-1]
        print(f"| {label} | {r['fid']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} | {r['d_logit']:.2f} |")
    print("## FID per epoch")
    print("| epoch | " + " | ".join(curves) + " |")
    print("| ---: |" + " ---: |" * len(curves))
    for i in range(args.epochs):
        print(f"| {i + 1} | " + " | ".join(f"{rows[i]['fid']:.3f}" for rows in curves.values()) + " |")
    print(f"\ntrained with: `gentool {' '.join(command)}`, then "
          f"`gentool fit --resume {args.run_dir} --epochs E --quiet` for E = 2..{args.epochs}")
    grids = ", ".join(f"{args.images}/{name}-{column.sampler}.png" for column in samplers)
    print(f"plot: {plot}; grids: {grids} (64 images; ranking keeps the best 64 of 512, as the article does)")


if __name__ == "__main__":
    main()
