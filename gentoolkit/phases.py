"""Progress of long work, phase by phase: what ``gentool evaluate`` shows while it trains a
feature classifier, generates images or computes a metric.

Code that works for long opens a :func:`phase` and advances it; it never decides how
progress is shown. Whoever asked for progress does, with :func:`reporting`: a Rich
display with one row per phase on a terminal, one line per phase elsewhere (logs, CI),
nothing at all by default (the Python API, tests), so metrics can report progress
without making anyone read it.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID


class Phase:
    """One phase in progress: ``advance`` it by the units of work done (images, steps)."""

    def __init__(self, reporter: _Reporter | None, task: object) -> None:
        self._reporter = reporter
        self._task = task

    def advance(self, amount: int = 1) -> None:
        if self._reporter is not None:
            self._reporter.advance(self._task, amount)


class _Reporter(Protocol):
    def start(self, path: tuple[str, ...], total: int | None) -> object:
        """Show a new phase; ``path`` is its description after those of the phases it is in."""

    def advance(self, task: object, amount: int) -> None: ...

    def finish(self, task: object) -> None: ...


_reporter: contextvars.ContextVar[_Reporter | None] = contextvars.ContextVar("gentoolkit_phase_reporter",
                                                                             default=None)
_open: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("gentoolkit_phases", default=())


@contextmanager
def phase(description: str, total: int | None = None) -> Iterator[Phase]:
    """A phase of work, e.g. ``with phase(f"generating {n} images", total=n) as p: ... p.advance(batch)``.

    ``total`` is the units of work it has (None: unknown, shown with a spinner). Phases
    opened inside another are shown under it. Without :func:`reporting` this costs nothing.
    """
    reporter = _reporter.get()
    if reporter is None:
        yield Phase(None, None)
        return
    path = (*_open.get(), description)
    task = reporter.start(path, total)
    token = _open.set(path)
    try:
        yield Phase(reporter, task)
    finally:
        _open.reset(token)
        reporter.finish(task)


@contextmanager
def reporting(console: Console) -> Iterator[None]:
    """Show the phases opened inside the block on ``console``: a Rich display on a terminal,
    else one line per phase as it starts."""
    reporter: _Reporter = _RichReporter(console) if console.is_terminal else _LineReporter(console)
    token = _reporter.set(reporter)
    try:
        yield
    finally:
        _reporter.reset(token)
        if isinstance(reporter, _RichReporter):
            reporter.progress.stop()


class _LineReporter:
    """One line per phase when it starts, and one with its time when an outermost phase (a metric)
    ends: what a log needs to say what is going on and what it cost."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def start(self, path: tuple[str, ...], total: int | None) -> tuple[tuple[str, ...], float]:
        self.console.print(" › ".join(path), highlight=False, markup=False)
        return path, time.perf_counter()

    def advance(self, task: object, amount: int) -> None:
        pass

    def finish(self, task: tuple[tuple[str, ...], float]) -> None:
        path, started = task
        if len(path) == 1:
            self.console.print(f"{path[0]}: {time.perf_counter() - started:.1f} s", highlight=False, markup=False)


class _RichReporter:
    """A Rich progress display: a row per phase, nested phases indented, each with its time."""

    def __init__(self, console: Console) -> None:
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        count = TextColumn("{task.fields[count]}")  # done/total, for phases that have a total
        self.progress: Progress = Progress(SpinnerColumn(finished_text="✓"), TextColumn("{task.description}"),
                                           BarColumn(), count, TimeElapsedColumn(), console=console)
        self.progress.start()

    def start(self, path: tuple[str, ...], total: int | None) -> TaskID:
        return self.progress.add_task("  " * (len(path) - 1) + path[-1], total=total, count=self._count(0, total))

    def advance(self, task: TaskID, amount: int) -> None:
        self.progress.advance(task, amount)
        (state,) = [t for t in self.progress.tasks if t.id == task]
        self.progress.update(task, count=self._count(state.completed, state.total))

    def finish(self, task: TaskID) -> None:
        (state,) = [t for t in self.progress.tasks if t.id == task]
        total = state.total or 1  # a phase without a total is done when it ends: a full bar, its time stops
        self.progress.update(task, total=total, completed=total)

    @staticmethod
    def _count(done: float, total: int | None) -> str:
        return f"{int(done):,}/{total:,}" if total else ""
