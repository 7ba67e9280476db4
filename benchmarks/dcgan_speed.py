"""Images per second: the source article's DCGAN loop vs `gentool fit dcgan`, 96x96 RGB, batch 64.

Both train the article's 96x96 architecture (nz=100, ngf=ndf=64) with the
article's schedule (discriminator every batch, generator every 5th) on the same
folder of JPEG images, one after the other in this process:

- article: ``torchvision.datasets.ImageFolder`` + ``DataLoader`` (resize, crop,
  ToTensor, Normalize per image, every epoch), Sigmoid + BCELoss, its loop;
- gentool: ``gentoolkit.api.fit("dcgan", "anime", ...)``: the folder decoded once
  into a uint8 cache, batches gathered from memory.

Both are timed from the end of their first step to the end of the last, so
neither pays for warm-up; the folder is decoded (and cached) before gentool's
timer starts, as it is once per folder in real use.

With no folder given, a synthetic one is made (coloured blobs saved as JPEG).

    python benchmarks/dcgan_speed.py --images 2048 --steps 24
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from PIL import Image
from shared import StepClock
from torch import nn

import gentoolkit
import gentoolkit.api as gt


def make_folder(folder: Path, count: int, size: int = 128) -> None:
    """JPEG images of random soft colour blobs, a stand-in for face crops."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    sub = folder / "faces"
    sub.mkdir(parents=True)
    for i in range(count):
        centre = torch.rand(2, generator=g) * 1.2 - 0.6
        blob = torch.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / 0.2)
        colour = torch.rand(3, 1, 1, generator=g)
        image = (colour * blob + (1 - blob) * torch.rand(3, 1, 1, generator=g)).clamp(0, 1)
        Image.fromarray((image.permute(1, 2, 0) * 255).byte().numpy()).save(sub / f"{i:05d}.jpg", quality=90)


def article_nets(nz: int = 100, ngf: int = 64, ndf: int = 64) -> tuple[nn.Module, nn.Module]:
    """The article's NetG and NetD (its model.py), layer for layer."""
    netg = nn.Sequential(
        nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
        nn.ConvTranspose2d(ngf, 3, 5, 3, 1, bias=False), nn.Tanh())
    netd = nn.Sequential(
        nn.Conv2d(3, ndf, 5, 3, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid(), nn.Flatten(0))
    return netg, netd


def article_images_per_second(folder: Path, steps: int, batch: int, workers: int) -> float:
    transform = torchvision.transforms.Compose([
        torchvision.transforms.Resize(96), torchvision.transforms.CenterCrop(96),
        torchvision.transforms.ToTensor(), torchvision.transforms.Normalize((0.5,) * 3, (0.5,) * 3)])
    loader = torch.utils.data.DataLoader(torchvision.datasets.ImageFolder(str(folder), transform=transform),
                                         batch_size=batch, shuffle=True, num_workers=workers, drop_last=True)
    netg, netd = article_nets()
    opt_g = torch.optim.Adam(netg.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(netd.parameters(), 2e-4, betas=(0.5, 0.999))
    criterion = nn.BCELoss()
    ones, zeros = torch.ones(batch), torch.zeros(batch)
    done, start = 0, None
    while done < steps:
        for ii, (real, _) in enumerate(loader):
            if done == 1:
                start = time.perf_counter()  # the first step pays for warm-up
            opt_d.zero_grad()
            criterion(netd(real), ones).backward()
            fake = netg(torch.randn(batch, 100, 1, 1)).detach()
            criterion(netd(fake), zeros).backward()
            opt_d.step()
            if ii % 5 == 0:
                opt_g.zero_grad()
                criterion(netd(netg(torch.randn(batch, 100, 1, 1))), ones).backward()
                opt_g.step()
            done += 1
            if done == steps:
                break
    return (steps - 1) * batch / (time.perf_counter() - start)


def gentool_images_per_second(folder: Path, steps: int, batch: int) -> float:
    clock = StepClock(warmup=1)  # steps 2..N, as the article's loop is timed
    with tempfile.TemporaryDirectory() as runs:
        gt.fit("dcgan", "anime", data_dir=folder, download=False, batch_size=batch, lr=2e-4, max_steps=steps,
               epochs=10_000, device="cpu", runs_dir=runs, overrides=["trainer.d_every=1", "trainer.g_every=5"],
               callbacks=[clock])
    return clock.images_per_second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, help="image folder (default: a synthetic one)")
    parser.add_argument("--images", type=int, default=2048, help="images in the synthetic folder")
    parser.add_argument("--steps", type=int, default=24, help="discriminator steps timed per contender")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for the article's loop")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder
        if folder is None:
            folder = Path(tmp) / "images"
            make_folder(folder, args.images)
        torch.manual_seed(0)
        article = article_images_per_second(folder, args.steps, args.batch_size, args.workers)
        gentool = gentool_images_per_second(folder, args.steps, args.batch_size)
    print(f"# DCGAN 96x96 RGB training, batch {args.batch_size}, d_every=1 g_every=5, {args.steps} steps")
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, gentoolkit {gentoolkit.__version__}, seed 0")
    print("| loop | images/s |")
    print("| --- | ---: |")
    print(f"| article (ImageFolder + DataLoader, {args.workers} workers) | {article:.1f} |")
    print(f"| gentool fit dcgan (decoded once, in memory) | {gentool:.1f} |")
    print()
    print(f"gentool / article: {gentool / article:.2f}x (goal: >= 2x)")


if __name__ == "__main__":
    main()
