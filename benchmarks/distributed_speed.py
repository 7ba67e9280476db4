"""Training images/s in one process against two under ``torchrun`` (gloo), the same global batch.

Each model trains ``--steps`` updates on MNIST with ``gentool fit``, once as one process
and once as ``torchrun --standalone --nproc-per-node 2 -m gentoolkit fit ...``, which splits
every batch in two and averages the gradients with bucketed all-reduces that start during
the backward pass (gentoolkit/distributed.py). Images/s are the run's own (metrics.jsonl:
the training loop, not start-up or held-out evaluation). torchrun gives each process one
thread (OMP_NUM_THREADS=1) unless the environment sets it; the single process uses torch's
default, so on this machine both use every core.

That two processes train the same weights as one is checked by tests/test_distributed.py.

    GENTOOL_DATA_DIR=../shared/data python benchmarks/distributed_speed.py --steps 60
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from shared import gentool, images_per_second, machine

TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
MODELS = {  # name: `gentool fit` options; the small U-Net is a CPU's size of the default ddpm
    "dcgan": ["dcgan"],
    "bernoulli-vae (conv)": ["bernoulli-vae", "--set", "arch=conv", "--set", "channels=32,64"],
    "ddpm (base_channels=32)": ["ddpm", "--set", "base_channels=32", "--set", "res_blocks=1"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60, help="updates of each run")
    parser.add_argument("--batch-size", type=int, default=128, help="global batch of every run")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of: {', '.join(MODELS)}")
    args = parser.parse_args()
    chosen = [name.strip() for name in args.models.split(",")]
    if unknown := [name for name in chosen if name not in MODELS]:
        sys.exit(f"unknown model {unknown[0]!r}; choose from {', '.join(MODELS)}")
    sys.stdout.reconfigure(line_buffering=True)
    print(f"# training images/s, 1 process against 2 gloo processes under torchrun; {machine('cpu')}")
    print(f"# {args.steps} updates of global batch {args.batch_size} on MNIST, seed 0")
    print("| model | 1 process | 2 processes | 2 / 1 |")
    print("| --- | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as runs:
        for name in chosen:
            fit = ["fit", *MODELS[name], "--dataset", "mnist", "--seed", "0", "--quiet", "--device", "cpu",
                   "--epochs", "1", "--max-steps", str(args.steps), "--batch-size", str(args.batch_size)]
            one, two = Path(runs, name, "one"), Path(runs, name, "two")
            gentool(*fit, "--run-dir", str(one))
            gentool(*fit, "--run-dir", str(two), launcher=TORCHRUN)
            rates = images_per_second(one), images_per_second(two)
            print(f"| {name} | {rates[0]:,.0f} | {rates[1]:,.0f} | {rates[1] / rates[0]:.2f}x |")


if __name__ == "__main__":
    main()
