"""Work whose memory can be estimated is refused up front, with the estimate and the limit.

A typo such as ``-n 100000000`` or ``--set hidden=100000000`` would otherwise grow
until the machine swaps or the process is killed, with nothing said.
"""

from __future__ import annotations

import os
from pathlib import Path

from gentoolkit.errors import GentoolError

SHARE = 0.5  # of the usable memory one piece of work may take; the rest is for everything else
ASSUMED_MEMORY = 16 * 2**30  # where the memory cannot be read (no sysconf: Windows)
CGROUP_LIMITS = (Path("/sys/fs/cgroup/memory.max"),  # cgroup v2: a number, or "max"
                 Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"))  # cgroup v1: a huge number when unset


def usable_memory() -> int:
    """Bytes of memory this process may use: the RAM, or the container's limit when it is lower."""
    try:
        sizes = [os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")]
    except (AttributeError, ValueError, OSError):
        sizes = [ASSUMED_MEMORY]
    for path in CGROUP_LIMITS:
        try:
            sizes.append(int(path.read_text()))
        except (OSError, ValueError):  # no such cgroup, or "max"
            continue
    return min(sizes)


def memory_limit() -> int:
    """Bytes one piece of work may hold at once: half of the usable memory."""
    return int(SHARE * usable_memory())


def check_memory(what: str, nbytes: int, fix: str) -> None:
    """Raise a GentoolError when ``what`` would need more than :func:`memory_limit` bytes."""
    if nbytes > memory_limit():
        raise GentoolError(f"{what} would need {format_bytes(nbytes)} of memory at once, more than the "
                           f"{format_bytes(memory_limit())} allowed ({SHARE:.0%} of "
                           f"{format_bytes(usable_memory())}); {fix}.")


def format_bytes(count: float) -> str:
    """A byte count for people: "512 bytes", "27.9 GiB"."""
    value, unit = float(count), "bytes"
    for larger in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024:
            break
        value, unit = value / 1024, larger
    return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
