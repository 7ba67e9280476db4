"""Reading what ``gentool evaluate`` logs off a terminal (``gentoolkit.phases``): one line per phase
as it starts, and ``NAME: 1.2 s`` when the data set or a metric is done."""

from __future__ import annotations

import re

TIMED = re.compile(r"(.+): \d+\.\d s")


def phase_log(stderr: str) -> tuple[list[str], list[str]]:
    """The lines of the phases as they started, and the names of those that ended with their time."""
    started, timed = [], []
    for line in stderr.splitlines():
        match = TIMED.fullmatch(line)
        if match:
            timed.append(match[1])
        else:
            started.append(line)
    return started, timed
