"""Seconds per epoch: the source article's VAE loop vs `gentool fit vae` vs a minimal loop.

All train the article's MLP VAE (784-400-20-400-784, Adam 3e-4, batch 128)
on MNIST, one after another in this process, and the ratios are printed:

- article: torchvision DataLoader with per-sample ToTensor, as the article does
  (its maths fixed: std = exp(0.5 logvar), BCE on data in [0, 1]);
- gentool: ``gentoolkit.api.fit("vae", ...)``, the same code path as the CLI,
  timed by the loop's own per-epoch ``seconds`` (test evaluation excluded);
- minimal: a hand-written loop over the preloaded uint8 tensor, batched by index
  with dynamic binarisation, the floor any toolkit overhead is measured against.

    GENTOOL_DATA_DIR=../shared/data python benchmarks/vae_speed.py --rounds 3
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from collections.abc import Iterable

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import gentoolkit
import gentoolkit.api as gt


class ArticleVAE(nn.Module):
    """The article's MLP VAE, with the reparameterisation fixed."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc2_mean = nn.Linear(400, 20)
        self.fc2_logvar = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def forward(self, x):
        h = F.relu(self.fc1(x))
        mu, logvar = self.fc2_mean(h), self.fc2_logvar(h)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return self.fc4(F.relu(self.fc3(z))), mu, logvar


def step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor) -> None:
    """One Adam step on the summed negative ELBO, as the article does."""
    logits, mu, logvar = model(x)
    recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
    kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    opt.zero_grad()
    (recon + kl).backward()
    opt.step()


def timed_epoch(batches: Iterable[torch.Tensor], model: nn.Module, opt: torch.optim.Optimizer) -> float:
    """Seconds to train on ``batches`` once."""
    start = time.perf_counter()
    for x in batches:
        step(model, opt, x)
    return time.perf_counter() - start


class Article:
    """The article's loop: a DataLoader applying ToTensor to every image, every epoch."""

    def __init__(self, root: str):
        data = torchvision.datasets.MNIST(root, train=True, download=False,
                                          transform=torchvision.transforms.ToTensor())
        self.loader = torch.utils.data.DataLoader(data, batch_size=128, shuffle=True)
        self.model = ArticleVAE()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=3e-4)

    def epoch(self) -> float:
        return timed_epoch((x.flatten(1) for x, _ in self.loader), self.model, self.opt)


class Minimal:
    """A hand-written loop over the preloaded uint8 tensor, batched by index."""

    def __init__(self, root: str):
        self.images = torchvision.datasets.MNIST(root, train=True, download=False).data  # N x 28 x 28
        self.model = ArticleVAE()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=3e-4)

    def epoch(self) -> float:
        batches = (torch.bernoulli(self.images[i].flatten(1).float() / 255)
                   for i in torch.randperm(len(self.images)).split(128))
        return timed_epoch(batches, self.model, self.opt)


class Gentool:
    """``gentoolkit.api.fit``, the code path of ``gentool fit``, one epoch more per call."""

    def __init__(self, root: str, precision: str = "fp32"):
        self.root, self.precision = root, precision
        self.runs = tempfile.TemporaryDirectory()
        self.run = None

    def epoch(self) -> float:
        if self.run is None:
            self.run = gt.fit("vae", "mnist", data_dir=self.root, download=False, epochs=1, batch_size=128,
                              lr=3e-4, device="cpu", precision=self.precision, runs_dir=self.runs.name)
        else:
            self.run = gt.resume(self.run.path, epochs=len(self.run.metrics) + 1)
        return self.run.metrics[-1]["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="timed epochs per contender, interleaved")
    parser.add_argument("--data-dir", default=None, help="data root holding MNIST/raw")
    args = parser.parse_args()
    root = str(gt.data_root(args.data_dir))
    torch.manual_seed(0)
    contenders = {"article": Article(root), "gentool": Gentool(root), "gentool --precision bf16": Gentool(root, "bf16"),
                  "minimal": Minimal(root)}
    for c in contenders.values():
        c.epoch()  # warm-up: allocator, caches, first-call overheads
    # Interleaved rounds, so a slow moment of a shared machine hits every contender alike.
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, c in contenders.items():
            times[name].append(c.epoch())
    per_epoch = {k: statistics.median(v) for k, v in times.items()}
    print(f"# VAE epoch time on MNIST (60,000 images, batch 128), median of {args.rounds} interleaved epochs")
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, gentoolkit {gentoolkit.__version__}, seed 0")
    print("| loop | s/epoch | images/s | vs article |")
    print("| --- | ---: | ---: | ---: |")
    for name, seconds in per_epoch.items():
        print(f"| {name} | {seconds:.2f} | {60000 / seconds:,.0f} | {per_epoch['article'] / seconds:.2f}x |")
    print()
    print(f"gentool (fp32) speed-up over the article's loop: {per_epoch['article'] / per_epoch['gentool']:.2f}x "
          "(goal: >= 2.5x)")
    print(f"gentool (fp32) time / minimal loop time: {per_epoch['gentool'] / per_epoch['minimal']:.2f}x "
          "(goal: <= 1.2x)")


if __name__ == "__main__":
    main()
