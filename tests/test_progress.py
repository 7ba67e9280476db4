"""Progress: phases of long work (gentool evaluate) and the training progress bar."""

from __future__ import annotations

import io

from rich.console import Console

from gentoolkit import phase
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


def test_elsewhere_than_a_terminal_each_phase_is_one_line_naming_the_phases_it_is_in():
    out = io.StringIO()
    with reporting(Console(file=out, force_terminal=False, width=200)):
        work()
    assert out.getvalue().splitlines() == ["fid", "fid › generating 6 images", "fid › comparing"]


def test_on_a_terminal_each_phase_is_a_row_with_its_count_and_time():
    out = io.StringIO()
    with reporting(Console(file=out, force_terminal=True, width=100)):
        work()
    text = out.getvalue()
    assert "generating 6 images" in text and "6/6" in text and "comparing" in text and "0:00:00" in text
    assert "✓" in text  # finished phases are ticked
