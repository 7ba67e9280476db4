"""Work whose memory can be estimated is refused up front, with the estimate and the limit.

A typo such as ``-n 100000000`` or ``--set hidden=100000000`` would otherwise grow
until the machine swaps or the process is killed, with nothing said.
"""

from __future__ import annotations

import os

from gentoolkit.errors import GentoolError

SHARE = 0.5  # of the machine's memory one request may take


def memory_limit() -> int:
    """Bytes one piece of work may hold at once: half of this machine's physical memory."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * SHARE)
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows): assume 16 GiB
        return int(16 * 2**30 * SHARE)


def check_memory(what: str, nbytes: int, fix: str) -> None:
    """Raise a GentoolError when ``what`` would need more than :func:`memory_limit` bytes."""
    limit = memory_limit()
    if nbytes > limit:
        raise GentoolError(f"{what} would need {_size(nbytes)} of memory at once, more than the {_size(limit)} "
                           f"allowed (half of this machine's memory); {fix}.")


def _size(nbytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if nbytes < 1024 or unit == "TiB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    raise AssertionError("unreachable")
