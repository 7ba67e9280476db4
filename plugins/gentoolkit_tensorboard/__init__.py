"""TensorBoard logging for gentoolkit runs: ``gentool fit ... --callback tensorboard``.

Needs the ``tensorboard`` extra (``pip install 'gentoolkit[tensorboard]'``).
``metrics.jsonl`` stays the source of truth; this mirrors each epoch's numbers
and sample grid into ``<run>/tensorboard/`` for ``tensorboard --logdir runs``.
"""

from __future__ import annotations

from typing import Any

from gentoolkit import Callback, GentoolError, hookimpl


class TensorBoard(Callback):
    """Mirror each epoch's metrics and sample grid to TensorBoard."""

    name = "tensorboard"

    def on_fit_start(self, loop) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise GentoolError("the tensorboard callback needs TensorBoard: "
                               "pip install 'gentoolkit[tensorboard]'.") from None
        self.writer = SummaryWriter(log_dir=str(self.run_dir.output("tensorboard")), purge_step=loop.state.epoch + 1)

    def on_epoch_end(self, loop, row: dict[str, Any]) -> None:
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)):
                self.writer.add_scalar(key.replace("_", "/", 1), value, row["epoch"])
        images = loop.sample_grid()
        if images is not None:
            self.writer.add_images("samples", images, row["epoch"])
        self.writer.flush()

    def on_fit_end(self, loop, error: BaseException | None) -> None:
        if hasattr(self, "writer"):
            self.writer.close()


@hookimpl
def register_callbacks(register):
    register(TensorBoard)
