"""The loop's standard callbacks: progress bar, metrics file, sample grids, checkpoints; the base
of the loggers that mirror training's numbers elsewhere, and the ``csv`` logger."""

from __future__ import annotations

import csv
import dataclasses
import io
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

from gentoolkit.checkpoint import atomic_write
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
        stopped = " (stopped in the epoch; --resume finishes it)" if row.get("partial") else ""
        self.progress.console.print(f"epoch {row['epoch']}{stopped}: {text}  ({row['seconds']:.1f}s)")

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
            "epoch": loop.state.epoch, "step": loop.state.step, "skipped_steps": loop.trainer.skipped_steps,
            "partial": dataclasses.asdict(partial) if partial is not None else None})


class MetricLogger(Callback):
    """A callback that mirrors training's numbers somewhere else (TensorBoard, a CSV file, W&B):
    the step's metrics every ``--log-every`` steps, and every epoch's row as metrics.jsonl
    gets it. metrics.jsonl stays the run's record; a logger is a view of it, step by step.

    Subclasses implement :meth:`log_step` and :meth:`log_epoch`.
    """

    def on_step(self, loop: TrainingLoop, metrics: dict[str, Tensor]) -> None:
        step = loop.state.step
        if step % loop.options.log_every == 0:
            values = {key: value.item() for key, value in metrics.items()}
            optimizers = loop.trainer.optimizers()
            if optimizers:  # what a --lr-schedule makes of the learning rate
                values["lr"] = optimizers[0].param_groups[0]["lr"]
            self.log_step(step, loop.state.epoch + 1, values)

    def on_epoch_end(self, loop: TrainingLoop, row: dict[str, Any]) -> None:
        self.log_epoch(row)

    def log_step(self, step: int, epoch: int, values: dict[str, float]) -> None:
        """The numbers of one training step (a batch's losses, the learning rate) in ``epoch`` (1 for
        the first)."""

    def log_epoch(self, row: dict[str, Any]) -> None:
        """An epoch's row of metrics.jsonl: ``epoch``, ``step``, ``train_*`` means, ``test_*``, ``seconds``, ..."""

    @staticmethod
    def numbers(row: dict[str, Any]) -> dict[str, float]:
        """The numbers of an epoch's row to plot against its ``step``: all but the step and flags."""
        return {key: value for key, value in row.items()
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool)}


class CSVLog(MetricLogger):
    """Write the step metrics (every --log-every steps) and each epoch's row to metrics.csv."""

    name = "csv"
    FILE = "metrics.csv"

    def on_fit_start(self, loop: TrainingLoop) -> None:
        """Keep the rows of the steps the checkpoint holds: a resumed run writes the others again."""
        self.path = self.run_dir.output(self.FILE)
        self.columns: list[str] = ["step", "epoch"]
        if self.path.exists():
            text = self.path.read_text()
            complete = text[:text.rfind("\n") + 1]  # a line a kill cut short is dropped
            rows = [row for row in csv.DictReader(io.StringIO(complete))
                    if int(row["step"]) <= loop.state.step and row.get("partial") != "True"]
            self._rewrite(rows)

    def log_step(self, step: int, epoch: int, values: dict[str, float]) -> None:
        self._write({"step": step, "epoch": epoch, **values})

    def log_epoch(self, row: dict[str, Any]) -> None:
        self._write(row)

    def _write(self, row: dict[str, Any]) -> None:
        """Append a row; the first, and one with new columns, rewrite the file with the (widened) header."""
        if self.path.exists() and set(row) <= set(self.columns):
            with self.path.open("a", newline="") as handle:
                csv.DictWriter(handle, self.columns).writerow(row)
            return
        rows = list(csv.DictReader(io.StringIO(self.path.read_text()))) if self.path.exists() else []
        self._rewrite([*rows, row])

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            self.columns += [key for key in row if key not in self.columns]
        text = io.StringIO()
        writer = csv.DictWriter(text, self.columns)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(self.path, lambda tmp: tmp.write_text(text.getvalue()))
