"""Progress: phases of long work (gentool evaluate) and the training progress bar."""

from __future__ import annotations

import io
import re

from rich.console import Console

import gentoolkit.api as gt
from gentoolkit import phase
from gentoolkit.callbacks import ProgressBar
from gentoolkit.phases import reporting


def work() -> None:
    with phase("fid"):
        with phase("generating 6 images", total=6) as progress:
            for _ in range(3):
                progress.advance(2)
        with phase("comparing"):
            pass


def test_phases_cost_nothing_and_show_nothing_unless_reported(capsys):
    work()
    assert capsys.readouterr() == ("", "")


def test_elsewhere_than_a_terminal_each_phase_is_one_line_naming_the_phases_it_is_in_and_a_metric_ends_timed():
    out = io.StringIO()
    with reporting(Console(file=out, force_terminal=False, width=200)):
        work()
    *lines, took = out.getvalue().splitlines()
    assert lines == ["fid", "fid › generating 6 images", "fid › comparing"]
    assert re.fullmatch(r"fid: \d+\.\d s", took)  # an outermost phase (a metric) ends with its time


def test_on_a_terminal_each_phase_is_a_row_with_its_count_and_time():
    out = io.StringIO()
    with reporting(Console(file=out, force_terminal=True, width=100)):
        work()
    text = out.getvalue()
    assert "generating 6 images" in text and "6/6" in text and "comparing" in text and "0:00:00" in text
    assert "✓" in text  # finished phases are ticked


class RecordedBar(ProgressBar):
    """The progress bar, on a terminal of its own, remembering what it said."""

    def __init__(self):
        self.out = io.StringIO()
        super().__init__(console=Console(file=self.out, force_terminal=True, force_interactive=True, width=150),
                         refresh_seconds=0)
        self.said: list[tuple[str, float, float]] = []  # description, steps done, steps in all

    def on_fit_start(self, loop):
        super().on_fit_start(loop)
        self.remember()

    def on_step(self, loop, metrics):
        super().on_step(loop, metrics)
        self.remember()

    def remember(self):
        (task,) = self.progress.tasks
        self.said.append((task.description, task.completed, task.total))

    def text(self) -> str:
        """What the terminal showed, without its colours and cursor moves."""
        return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", self.out.getvalue())


def test_after_a_max_steps_stop_the_resumed_bar_finishes_the_interrupted_epoch(toy, tmp_path):
    gt.fit("pixels", "stripes", epochs=2, max_steps=5, run_dir=tmp_path / "r", device="cpu")  # 8 steps per epoch
    bar = RecordedBar()
    gt.resume(tmp_path / "r", max_steps=16, callbacks=[bar])
    assert bar.said[0] == ("epoch 1/2", 5, 16)  # epoch 1 was never finished: the bar says so
    assert [said[0] for said in bar.said[1:4]] == ["epoch 1/2"] * 3  # steps 6 to 8
    assert bar.said[4] == ("epoch 2/2", 9, 16) and bar.said[-1] == ("epoch 2/2", 16, 16)
    assert "epoch 1: train_loss" in bar.text()


def test_a_stop_in_an_epoch_says_so(toy, tmp_path):
    bar = RecordedBar()
    gt.fit("pixels", "stripes", epochs=2, max_steps=5, run_dir=tmp_path / "r", device="cpu", callbacks=[bar])
    assert "epoch 1 (stopped in the epoch; --resume finishes it): train_loss" in bar.text()
