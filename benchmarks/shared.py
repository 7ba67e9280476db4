"""What the benchmark scripts share: driving the CLI as a user would, and timing it."""

from __future__ import annotations

import math
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

import gentoolkit
from gentoolkit import Callback
from gentoolkit.api import resolve_device
from gentoolkit.rundir import RunDir

# The convolutional VAE the VAE scripts train: its model settings (`--set` values), its network and
# optimiser settings as `gentool fit` flags, and its whole recipe.
CONV_VAE = ["arch=conv", "latent_dim=32", "channels=32,64"]
CONV_OPTIONS = ["--lr", "1e-3", "--lr-schedule", "cosine", *(arg for setting in CONV_VAE for arg in ("--set", setting))]
CONV_RECIPE = ["--epochs", "20", *CONV_OPTIONS]


def gentool(*args: str, launcher: Sequence[str] = ()) -> str:
    """Run ``gentool ARGS`` in a fresh process (started by ``python LAUNCHER``, such as torchrun's
    ``-m torch.distributed.run ...``, when given); its stdout, or exit with its error."""
    result = subprocess.run([sys.executable, *launcher, "-m", "gentoolkit", *args], capture_output=True, text=True)
    if result.returncode:
        sys.exit(result.stderr)
    return result.stdout


def timed(work: Callable[[], object]) -> float:
    """Minutes ``work()`` takes."""
    start = time.perf_counter()
    work()
    return (time.perf_counter() - start) / 60


def fit_once(run_dir: Path, fit_args: list[str]) -> float:
    """Train with ``gentool fit FIT_ARGS --run-dir RUN_DIR`` unless that run is already there;
    its training minutes: the epochs' own ``seconds`` in metrics.jsonl, so a fresh run and a
    reused one count the same (the training loop, not process start-up or held-out evaluation)."""
    if not (run_dir / RunDir.WEIGHTS).exists():
        gentool("fit", *fit_args, "--run-dir", str(run_dir))
    return sum(row["seconds"] for row in RunDir(run_dir).metrics()) / 60


def images_per_second(run_dir: Path) -> float:
    """Training throughput over the run's epochs, weighted by their length."""
    rows = RunDir(run_dir).metrics()
    images = sum(row["images_per_second"] * row["seconds"] for row in rows)
    return images / sum(row["seconds"] for row in rows)


def machine(device: str) -> str:
    """Where a benchmark runs, for its header: CPU, threads, torch and the device (with the GPU's name)."""
    resolved = resolve_device(device)
    where = f"{resolved} ({torch.cuda.get_device_name(resolved)})" if resolved.type == "cuda" else str(resolved)
    return (f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
            f"gentoolkit {gentoolkit.__version__}, device {where}")


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device``, so a host clock read after it counts that work."""
    if device.type != "cpu":
        torch.accelerator.synchronize(device)


class StepClock(Callback):
    """Times a training run's steady state: every step after the first ``warmup`` ones, which pay
    for compilation, allocation and caches.

    The device is synchronised at each timed step's end. A step after an epoch's end is not
    timed, since the held-out evaluation and checkpoint before it are not training. Once
    ``steps`` steps or ``budget`` seconds are timed, the run stops after that step (the loop
    reads its ``max_steps`` at every step).
    """

    def __init__(self, warmup: int = 1, steps: int | None = None, budget: float = math.inf):
        super().__init__()
        self.warmup, self.max_steps, self.budget = max(warmup, 1), steps, budget
        self.steps, self.seconds, self.images = 0, 0.0, 0  # timed so far
        self.warmup_seconds = 0.0  # from the run's start to the end of the warm-up steps
        self.mark: float | None = None  # end of the last step, while the clock runs
        self.seen = 0  # images the epoch had trained at that mark

    def on_fit_start(self, loop) -> None:
        self.started = time.perf_counter()

    def on_step(self, loop, metrics: dict[str, torch.Tensor]) -> None:
        if loop.state.step < self.warmup:
            return
        synchronize(loop.model.device)
        now, seen = time.perf_counter(), loop.state.partial.images  # an epoch's last batch may be smaller
        if loop.state.step == self.warmup:
            self.warmup_seconds = now - self.started
        elif self.mark is not None:
            self.steps += 1
            self.seconds += now - self.mark
            self.images += seen - self.seen
        self.mark, self.seen = now, seen
        if self.steps == self.max_steps or self.seconds >= self.budget:
            loop.options.max_steps = loop.state.step

    def on_epoch_end(self, loop, row: dict[str, Any]) -> None:
        self.mark = None

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds
