"""What the benchmark scripts share: driving the CLI as a user would, and timing it."""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

import gentoolkit
from gentoolkit.api import resolve_device
from gentoolkit.rundir import RunDir

# The convolutional VAE network and optimiser settings: `gentool fit` flags.
CONV_OPTIONS = ["--lr", "1e-3", "--lr-schedule", "cosine", "--set", "arch=conv", "--set", "latent_dim=32",
                "--set", "channels=32,64"]
# The convolutional VAE recipe both VAE quality scripts train.
CONV_RECIPE = ["--epochs", "20", *CONV_OPTIONS]


def gentool(*args: str) -> str:
    """Run ``gentool ARGS`` in a fresh process; its stdout, or exit with its error."""
    result = subprocess.run([sys.executable, "-m", "gentoolkit", *args], capture_output=True, text=True)
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
    the training minutes either way (a finished run's come from its metrics.jsonl)."""
    if (run_dir / RunDir.WEIGHTS).exists():
        return sum(row["seconds"] for row in RunDir(run_dir).metrics()) / 60
    return timed(lambda: gentool("fit", *fit_args, "--run-dir", str(run_dir)))


def machine(device: str) -> str:
    """Where a benchmark runs, for its header: CPU, threads, torch and the device (with the GPU's name)."""
    resolved = resolve_device(device)
    where = f"{resolved} ({torch.cuda.get_device_name(resolved)})" if resolved.type == "cuda" else str(resolved)
    return (f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
            f"gentoolkit {gentoolkit.__version__}, device {where}")
