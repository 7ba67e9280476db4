"""What this machine's arithmetic allows: dense FLOP/s against what DCGAN training and the conv VAE's NLL need.

Two of the speed goals are ceilings set by arithmetic, not by software, on a small CPU.
This script measures both sides in one run:

- peak: the best rate of an n x n fp32 matrix product over a few seconds, the practical
  ceiling of dense arithmetic here (convolutions rarely reach it);
- dcgan: the FLOPs per training image of ``gentool fit dcgan`` at 96 x 96 RGB (batch 64,
  discriminator every batch, generator every 5th), counted by torch's ``FlopCounterMode``
  over five batches of the real trainer, against its measured images/s and the article's
  loop (both timed as ``dcgan_speed.py`` times them);
- nll: the FLOPs per test image of the conv VAE's ``nll`` metric at k importance samples,
  counted on a few images, and its measured rate on a few more.

For each it prints the rate at 100% of the peak and the share of the peak the goal needs.
FLOPs here count the matrix products and convolutions (a multiply-add is two), which is
all but a few percent of the work.

    GENTOOL_DATA_DIR=../shared/data python benchmarks/compute_bound.py
    GENTOOL_DATA_DIR=../shared/data python benchmarks/compute_bound.py --quick   # a check, as the tests run it
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from dcgan_speed import article_images_per_second, gentool_images_per_second, make_folder
from shared import CONV_VAE, machine
from torch.utils.flop_counter import FlopCounterMode

import gentoolkit.api as gt
from gentoolkit import Callback

DCGAN_CYCLE = 5  # batches in which the generator steps once (g_every=5)


def matmul_peak(n: int, seconds: float) -> float:
    """The best FLOP/s of one n x n fp32 matrix product, over ``seconds`` of repeats."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - start))
    return best


class FlopCount(Callback):
    """Counts the FLOPs of the trainer's ``train_step`` calls after the first, for ``steps`` calls;
    what the loop does between them (an epoch's held-out evaluation and sample grid) is not counted."""

    def __init__(self, steps: int):
        super().__init__()
        self.steps, self.calls, self.flops = steps, 0, 0

    def on_fit_start(self, loop) -> None:
        train_step = loop.trainer.train_step

        def counted(*args, **kwargs):
            self.calls += 1
            if not 1 < self.calls <= 1 + self.steps:
                return train_step(*args, **kwargs)
            with FlopCounterMode(display=False) as counter:
                metrics = train_step(*args, **kwargs)
            self.flops += counter.get_total_flops()
            return metrics

        loop.trainer.train_step = counted


def dcgan_flops_per_image(folder: Path, batch: int) -> float:
    """FLOPs per training image of gentool's dcgan over one generator cycle."""
    count = FlopCount(DCGAN_CYCLE)
    with tempfile.TemporaryDirectory() as runs:
        gt.fit("dcgan", "anime", data_dir=folder, download=False, batch_size=batch, max_steps=1 + DCGAN_CYCLE,
               epochs=10_000, device="cpu", runs_dir=runs, overrides=["trainer.d_every=1", "trainer.g_every=5"],
               callbacks=[count], progress=False)
    return count.flops / (DCGAN_CYCLE * batch)


def nll_measurements(data_dir: str | None, k: int, images: int) -> tuple[float, float]:
    """The conv VAE nll metric's FLOPs per test image at k samples, and its seconds per image."""
    with tempfile.TemporaryDirectory() as runs:
        run = gt.fit("vae", "mnist", data_dir=data_dir, download=False, max_steps=1, epochs=1, device="cpu",
                     runs_dir=runs, overrides=CONV_VAE, progress=False)
        test = gt.load_data(run.toolkit, run.config.dataset).test
        x = run.model.prepare(test[:images])
        metric = run.toolkit.metrics.get("nll").Config()

        def log_prob(x: torch.Tensor) -> None:
            with torch.no_grad():
                run.model.log_prob(x, k=k, generator=torch.Generator().manual_seed(0), max_floats=metric.max_floats)

        with FlopCounterMode(display=False) as counter:
            log_prob(x[:2])
        log_prob(x[:2])  # warm-up
        start = time.perf_counter()
        log_prob(x)
        return counter.get_total_flops() / 2, (time.perf_counter() - start) / images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="data folder holding MNIST/raw; default $GENTOOL_DATA_DIR")
    parser.add_argument("--steps", type=int, default=24, help="steps timed per DCGAN loop, as in dcgan_speed.py")
    parser.add_argument("--k", type=int, default=5000, help="importance samples per image for the nll")
    parser.add_argument("--nll-images", type=int, default=20, help="test images the nll is timed on")
    parser.add_argument("--quick", action="store_true", help="a small matmul, 3 steps, k=8 on 2 images: a check")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.k, args.nll_images = 3, 8, 2
    batch, side = 64, 256 if args.quick else 2048
    peak = matmul_peak(side, 0.2 if args.quick else 3.0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        make_folder(folder, 128 if args.quick else 2048)
        torch.manual_seed(0)
        article = article_images_per_second(folder, args.steps, batch, workers=2)
        gentool = gentool_images_per_second(folder, args.steps, batch)
        dcgan_flops = dcgan_flops_per_image(folder, batch)
    nll_flops, nll_seconds = nll_measurements(args.data_dir, args.k, args.nll_images)

    print(f"# what the arithmetic allows; {machine('cpu')}")
    print(f"# peak: best {side} x {side} fp32 matmul, {peak / 1e9:.0f} GFLOP/s")
    print("| work | GFLOP each | measured | measured GFLOP/s | at 100% of peak | goal | goal needs |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    goal = 2 * article
    print(f"| dcgan 96x96 training image (batch {batch}, g_every=5) | {dcgan_flops / 1e9:.3g} | "
          f"{gentool:.1f} images/s (article {article:.1f}) | {gentool * dcgan_flops / 1e9:.0f} | "
          f"{peak / dcgan_flops:.0f} images/s | {goal:.0f} images/s (2x article) | "
          f"{goal * dcgan_flops / peak:.0%} of peak |")
    total = 10_000 * nll_flops
    print(f"| conv VAE nll, one test image at k={args.k} | {nll_flops / 1e9:.3g} | "
          f"{10_000 * nll_seconds / 60:.0f} min per 10,000 images | {nll_flops / nll_seconds / 1e9:.0f} | "
          f"{total / peak / 60:.1f} min per 10,000 images | 20 min | {total / (20 * 60) / peak:.0%} of peak |")


if __name__ == "__main__":
    main()
