"""The loop's standard callbacks: progress bar, metrics file, sample grids, checkpoints."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch import Tensor

from gentoolkit.images import save_grid
from gentoolkit.training import Callback, TrainingLoop


class ProgressBar(Callback):
    """A Rich progress bar: epoch, steps, loss and images per second."""

    def __init__(self, console: Console | None = None, refresh_seconds: float = 0.25):
        super().__init__()
        self.console = console or Console(stderr=True)
        self.refresh_seconds = refresh_seconds
        self.progress: Progress | None = None

    def on_fit_start(self, loop: TrainingLoop) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("<"), TimeRemainingColumn(),
            TextColumn("{task.fields[stats]}"),
            console=self.console, refresh_per_second=4, transient=False)
        self.progress.start()
        self.task = self.progress.add_task(self._description(loop), total=loop.total_steps,
                                           completed=loop.state.step, stats="")
        self.last_refresh = 0.0
        self.last_step, self.last_time = loop.state.step, time.perf_counter()

    def _description(self, loop: TrainingLoop) -> str:
        return f"epoch {min(loop.state.epoch + 1, loop.options.epochs)}/{loop.options.epochs}"

    def on_step(self, loop: TrainingLoop, metrics: dict[str, Tensor]) -> None:
        now = time.perf_counter()
        if now - self.last_refresh < self.refresh_seconds:
            self.progress.update(self.task, advance=1)
            return
        rate = (loop.state.step - self.last_step) * loop.options.batch_size / max(now - self.last_time, 1e-9)
        shown = {k: v for k, v in metrics.items() if k in ("loss", "d_loss", "g_loss")}
        stats = " ".join(f"{k} {v.item():.4g}" for k, v in shown.items())
        self.progress.update(self.task, completed=loop.state.step, description=self._description(loop),
                             stats=f"{stats} {rate:,.0f} img/s")
        self.last_refresh, self.last_step, self.last_time = now, loop.state.step, now

    def on_epoch_end(self, loop: TrainingLoop, row: dict[str, Any]) -> None:
        self.progress.update(self.task, completed=loop.state.step, description=self._description(loop))
        shown = {k: v for k, v in row.items() if k.startswith(("train_", "test_")) and isinstance(v, float)}
        text = "  ".join(f"{k} {v:.4g}" for k, v in shown.items())
        self.progress.console.print(f"epoch {row['epoch']}: {text}  ({row['seconds']:.1f}s)")

    def on_fit_end(self, loop: TrainingLoop, error: BaseException | None) -> None:
        if self.progress is not None:
            self.progress.stop()  # leave the terminal clean, also on errors


class MetricsLog(Callback):
    """Appends each epoch's metrics to ``metrics.jsonl``, one JSON object per line."""

    def on_epoch_end(self, loop: TrainingLoop, row: dict[str, Any]) -> None:
        self.run_dir.append_metrics(row)


class SampleGrids(Callback):
    """Saves ``samples/epoch-NNN.png`` from the same latent codes every epoch."""

    def on_epoch_end(self, loop: TrainingLoop, row: dict[str, Any]) -> None:
        images = loop.sample_grid()
        if images is not None:
            save_grid(images, self.run_dir.sample_grid_path(row["epoch"]))


class Checkpoints(Callback):
    """Writes weights, trainer and loop state after every epoch and on Ctrl-C."""

    def on_epoch_end(self, loop: TrainingLoop, row: dict[str, Any]) -> None:
        self.save(loop)
        if loop.options.keep_best and loop.is_best(row):
            self.run_dir.save_best(loop.model, {"epoch": row["epoch"], "step": row["step"],
                                                loop.monitor: row[loop.monitor]})

    def on_fit_end(self, loop: TrainingLoop, error: BaseException | None) -> None:
        if isinstance(error, KeyboardInterrupt) and loop.state.step > 0:
            self.save(loop)

    def save(self, loop: TrainingLoop) -> None:
        partial = loop.state.partial
        self.run_dir.save_checkpoint(loop.model, {
            "model": loop.model.state_dict(), "trainer": loop.trainer.state_dict(), "rng": loop.rng_state(),
            "epoch": loop.state.epoch, "step": loop.state.step,
            "partial": dataclasses.asdict(partial) if partial is not None else None})
