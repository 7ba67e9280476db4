"""What the benchmark scripts share: driving the CLI as a user would, and timing it."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from gentoolkit.rundir import RunDir

# The convolutional VAE recipe both VAE quality scripts train: `gentool fit` flags.
CONV_RECIPE = ["--epochs", "20", "--lr", "1e-3", "--lr-schedule", "cosine", "--set", "arch=conv",
               "--set", "latent_dim=32", "--set", "channels=32,64"]


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
