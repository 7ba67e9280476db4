"""TensorBoard logging for gentoolkit runs: ``gentool fit ... --callback tensorboard``.

Needs the ``tensorboard`` extra (``pip install 'gentoolkit[tensorboard]'``).
``metrics.jsonl`` stays the source of truth; this mirrors into ``<run>/tensorboard/``,
against the training step, for ``tensorboard --logdir runs``: every ``--log-every``
steps the step's metrics (``train/loss``, ...) and learning rate (``train/lr``), and
after each epoch its row (``epoch/train_loss``, ``epoch/test_loss``, ...) and sample grid.
"""

from __future__ import annotations

from typing import Any

from gentoolkit import GentoolError, MetricLogger, hookimpl


class TensorBoard(MetricLogger):
    """Mirror the step metrics, each epoch's metrics and sample grid to TensorBoard."""

    name = "tensorboard"

    def on_fit_start(self, loop) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise GentoolError("the tensorboard callback needs TensorBoard: "
                               "pip install 'gentoolkit[tensorboard]'.") from None
        # A resumed run logs the steps after its checkpoint again: events from past it are dropped.
        self.writer = SummaryWriter(log_dir=str(self.run_dir.output("tensorboard")), purge_step=loop.state.step + 1)

    def log_step(self, step: int, epoch: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(f"train/{key}", value, step)

    def log_epoch(self, row: dict[str, Any]) -> None:
        for key, value in self.numbers(row).items():
            self.writer.add_scalar(f"epoch/{key}", value, row["step"])

    def on_epoch_end(self, loop, row: dict[str, Any]) -> None:
        super().on_epoch_end(loop, row)
        images = loop.sample_grid()
        if images is not None:
            self.writer.add_images("samples", images, row["step"])
        self.writer.flush()

    def on_fit_end(self, loop, error: BaseException | None) -> None:
        if hasattr(self, "writer"):
            self.writer.close()


@hookimpl
def register_callbacks(register):
    register(TensorBoard)
