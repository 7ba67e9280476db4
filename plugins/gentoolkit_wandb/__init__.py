"""Weights & Biases logging for gentoolkit runs: ``gentool fit ... --callback wandb``.

Needs the ``wandb`` extra (``pip install 'gentoolkit[wandb]'``) and, to upload, ``wandb
login``; ``WANDB_MODE=offline`` keeps everything on disk for ``wandb sync`` later. The W&B
run is named after the run directory, holds its config.json as its config, and keeps its
files in ``<run>/wandb/``; a resumed run continues the same W&B run. Like the other
loggers it gets the step metrics every ``--log-every`` steps (``train/loss``,
``train/lr``, ...) and each epoch's row (``epoch/test_loss``, ...) with its sample grid,
all against the training step. ``WANDB_PROJECT`` names the project (default: gentoolkit).
"""

from __future__ import annotations

import os
from typing import Any

from gentoolkit import GentoolError, MetricLogger, hookimpl

RUN_ID = "gentoolkit-run-id"  # in <run>/wandb/: the W&B run a resume continues


class WandB(MetricLogger):
    """Log the step metrics, each epoch's metrics and sample grid to Weights & Biases."""

    name = "wandb"

    def on_fit_start(self, loop) -> None:
        try:
            import wandb
        except ImportError:
            raise GentoolError("the wandb callback needs Weights & Biases: pip install 'gentoolkit[wandb]'.") from None
        folder = self.run_dir.output("wandb")  # W&B keeps its files in the folder "wandb" inside dir
        id_file = folder / RUN_ID
        config = self.run_dir.read_config()
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "gentoolkit"), dir=str(folder.parent),
                              id=id_file.read_text().strip() if id_file.is_file() else None, resume="allow",
                              name=f"{config['model']['name']}/{self.run_dir.path.name}", config=config)
        id_file.write_text(self.run.id)
        self.image = wandb.Image

    def log_step(self, step: int, epoch: int, values: dict[str, float]) -> None:
        self.run.log({f"train/{key}": value for key, value in values.items()}, step=step)

    def log_epoch(self, row: dict[str, Any]) -> None:
        values: dict[str, Any] = {f"epoch/{key}": value for key, value in self.numbers(row).items()}
        grid = self.run_dir.sample_grid_path(row["epoch"])  # saved by the loop just before
        if grid.is_file():
            values["samples"] = self.image(str(grid))
        self.run.log(values, step=row["step"])

    def on_fit_end(self, loop, error: BaseException | None) -> None:
        if hasattr(self, "run"):
            self.run.finish(exit_code=0 if error is None else 1)


@hookimpl
def register_callbacks(register):
    register(WandB)
