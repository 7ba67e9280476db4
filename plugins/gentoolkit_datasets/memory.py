"""How much memory decoded images may take, so that an absurd image size is refused up front.

An image size of 100,000 asks for 30 GB per colour image: decoding it would end
in an out-of-memory kill, or an allocation error that reads like a bug. Each data
set works out what its decoded uint8 tensor would need before decoding anything,
and compares it with a share of the memory this process may really use (the
container's limit, when that is lower than the machine's RAM).
"""

from __future__ import annotations

import os
from pathlib import Path

from gentoolkit import GentoolError

MEMORY_SHARE = 0.5  # of the usable memory, for the decoded images; the rest is for the model and batches
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
    """Bytes the decoded images of a data set may take."""
    return int(MEMORY_SHARE * usable_memory())


def fits_in_memory(count: int, channels: int, size: int) -> bool:
    """Whether ``count`` decoded images of ``channels`` x ``size`` x ``size`` bytes stay within the limit."""
    return count * channels * size * size <= memory_limit()


def require_memory(source: str, count: int, channels: int, size: int, at_once: int | None = None) -> None:
    """Refuse, in one line, images too large to decode: ``at_once`` of them (all by default) must fit.

    Data sets that stream from disk pass the largest batch they decode at once.
    """
    at_once = count if at_once is None else min(at_once, count)
    if fits_in_memory(at_once, channels, size):
        return
    each = channels * size * size
    streamed = f", and even {at_once} at a time, streamed from disk, need {human(at_once * each)}" \
        if at_once < count else ""
    raise GentoolError(
        f"{source}: {count} images of {channels} x {size} x {size} would take {human(count * each)} decoded "
        f"({human(each)} each){streamed}, more than the {human(memory_limit())} data may take here "
        f"({MEMORY_SHARE:.0%} of {human(usable_memory())} of memory); choose a smaller --image-size.")


def human(count: int) -> str:
    """A byte count for people: "512 bytes", "27.9 GiB"."""
    value, unit = float(count), "bytes"
    for larger in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024:
            break
        value, unit = value / 1024, larger
    return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
