"""Seconds per epoch: the source article's VAE loop vs `gentool fit vae` vs a minimal loop.

All three train the article's MLP VAE (784-400-20-400-784, Adam 3e-4, batch 128)
on MNIST, one after another in this process, and the ratios are printed:

- article: torchvision DataLoader with per-sample ToTensor, as the article does
  (its maths fixed: std = exp(0.5 logvar), BCE on data in [0, 1]);
- gentool: ``gentoolkit.api.fit("vae", ...)``, the same code path as the CLI,
  timed by the loop's own per-epoch ``seconds`` (test evaluation excluded);
- minimal: a hand-written loop over the preloaded uint8 tensor, batched by index
  with dynamic binarisation, the floor any toolkit overhead is measured against.

    GENTOOL_DATA_DIR=../shared/data python benchmarks/vae_speed.py --epochs 2
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable

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


def timed_epochs(batches: Callable[[], Iterable[torch.Tensor]], epochs: int) -> list[float]:
    """Train a fresh article VAE on ``batches()`` each epoch; return seconds per epoch."""
    model = ArticleVAE()
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        for x in batches():
            step(model, opt, x)
        times.append(time.perf_counter() - start)
    return times


def article_epochs(root: str, epochs: int) -> list[float]:
    data = torchvision.datasets.MNIST(root, train=True, download=False,
                                      transform=torchvision.transforms.ToTensor())
    loader = torch.utils.data.DataLoader(data, batch_size=128, shuffle=True)
    return timed_epochs(lambda: (x.flatten(1) for x, _ in loader), epochs)


def minimal_epochs(root: str, epochs: int) -> list[float]:
    images = torchvision.datasets.MNIST(root, train=True, download=False).data  # uint8 N x 28 x 28
    return timed_epochs(lambda: (torch.bernoulli(images[i].flatten(1).float() / 255)
                                 for i in torch.randperm(len(images)).split(128)), epochs)


def gentool_epochs(root: str, epochs: int) -> list[float]:
    with tempfile.TemporaryDirectory() as runs:
        run = gt.fit("vae", "mnist", data_dir=root, download=False, epochs=epochs, batch_size=128,
                     lr=3e-4, device="cpu", runs_dir=runs)
        return [row["seconds"] for row in run.metrics]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2, help="epochs per contender (the first is warm-up)")
    parser.add_argument("--data-dir", default=None, help="data root holding MNIST/raw")
    args = parser.parse_args()
    root = str(gt.data_root(args.data_dir))
    torch.manual_seed(0)
    results = {name: fn(root, args.epochs) for name, fn in
               [("article", article_epochs), ("gentool", gentool_epochs), ("minimal", minimal_epochs)]}
    # The first epoch pays for warm-up; report the median of the rest when there are any.
    per_epoch = {k: statistics.median(v[1:] or v) for k, v in results.items()}
    print(f"# VAE epoch time on MNIST (60,000 images, batch 128), {args.epochs} epochs each")
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, gentoolkit {gentoolkit.__version__}, seed 0")
    print("| loop | s/epoch | images/s |")
    print("| --- | ---: | ---: |")
    for name, seconds in per_epoch.items():
        print(f"| {name} | {seconds:.2f} | {60000 / seconds:,.0f} |")
    print()
    print(f"gentool speed-up over the article's loop: {per_epoch['article'] / per_epoch['gentool']:.2f}x "
          "(goal: >= 2x)")
    print(f"gentool time / minimal loop time: {per_epoch['gentool'] / per_epoch['minimal']:.2f}x "
          "(goal: <= 1.2x)")


if __name__ == "__main__":
    main()
