"""Does ranking GAN samples by the discriminator make them better? Measured on MNIST, over training.

Trains a DCGAN from the CLI one epoch at a time (``gentool fit``, then
``gentool fit --resume RUN --epochs E``, which continues exactly where the last
epoch stopped), and after every epoch draws n images with the plain ``prior``
sampler and n with the ``ranking`` sampler (the best n of ``--ratio`` x n
candidates; the article's 64 of 512 is a ratio of 8). Both sets are compared
with the MNIST test set in the offline classifier feature space of the
``metrics`` plugin: Frechet distance, precision and recall (Kynkaanniemi et al.
2019). These are NOT Inception FIDs (see docs/evaluation.md). The script prints
the tables, plots FID per epoch and writes the final two 64-image grids.

    GENTOOL_DATA_DIR=../shared/data python benchmarks/dcgan_ranking.py --epochs 5 --n 2000
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch
from shared import gentool

import gentoolkit
import gentoolkit.api as gt
from gentoolkit.images import save_grid
from gentoolkit.plots import plot_metrics
from gentoolkit_metrics.distances import frechet_distance, precision_recall
from gentoolkit_metrics.features import FeatureSpace, classifier_features


def measure(run: gt.Run, sampler: str, options: dict, n: int, space: FeatureSpace,
            real: torch.Tensor) -> dict[str, float]:
    """FID, precision, recall and mean discriminator logit of n images from one sampler."""
    samples = run.sample(n, sampler=sampler, seed=1, options=options)
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
    parser.add_argument("--ratio", type=int, default=8, help="ranking candidates per kept image")
    parser.add_argument("--images", type=Path, default=Path("docs/images"))
    args = parser.parse_args()
    command = ["fit", "dcgan", "--dataset", "mnist", "--epochs", "1", "--seed", "0", "--quiet",
               "--run-dir", str(args.run_dir)]
    if args.run_dir.exists():
        sys.exit(f"{args.run_dir} exists; this script trains it epoch by epoch from scratch. "
                 "Remove it or pass another --run-dir.")
    samplers = {"prior": ("prior", {}),
                f"ranking (best {args.n} of {args.ratio * args.n})": ("ranking", {"candidates": args.ratio * args.n})}
    curves: dict[str, list[dict[str, float]]] = {label: [] for label in samplers}
    for epoch in range(1, args.epochs + 1):
        if epoch == 1:
            gentool(*command)
        else:
            gentool("fit", "--resume", str(args.run_dir), "--epochs", str(epoch), "--quiet")
        run = gt.load_run(args.run_dir)
        if epoch == 1:
            data = gt.load_data(run.toolkit, run.config.dataset)
            space = classifier_features(data, torch.device("cpu"), "fid")
            real = space.embed(data.test, 500)
        for label, (name, options) in samplers.items():
            curves[label].append({"epoch": epoch, **measure(run, name, options, args.n, space, real)})
        print(f"epoch {epoch}: " + ", ".join(f"{label.split()[0]} FID {rows[-1]['fid']:.3f}"
                                             for label, rows in curves.items()), file=sys.stderr)

    for name, options in samplers.values():
        grid = run.sample(64, sampler=name, seed=0, options={"candidates": 512} if options else {})
        save_grid(grid.images, args.images / f"dcgan-mnist-{name}.png")
    plot = args.images / "dcgan-mnist-fid.png"
    plot_metrics(curves, ["fid", "precision", "recall"], plot,
                 title=f"DCGAN on MNIST: {args.n} samples vs the test set (classifier features)")

    last = run.metrics[-1]
    print(f"# DCGAN on MNIST, {last['epoch']} epochs ({last['step']} steps), {args.n} images per sampler, seed 1")
    print(f"# {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"gentoolkit {gentoolkit.__version__}; features: {space.name} (offline, not Inception)")
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
    print(f"plot: {plot}; grids: {args.images}/dcgan-mnist-prior.png, {args.images}/dcgan-mnist-ranking.png "
          "(64 images; ranking keeps the best 64 of 512, as the article does)")


if __name__ == "__main__":
    main()
