"""How much memory decoded images may take, so that an absurd image size is refused up front.

An image size of 100,000 asks for 30 GB per colour image: decoding it would end
in an out-of-memory kill, or an allocation error that reads like a bug. Each data
set works out what its decoded uint8 tensor would need before decoding anything,
and compares it with the core's memory limit (a share of the memory this process
may really use: the container's limit, when that is lower than the machine's RAM).
"""

from __future__ import annotations

from gentoolkit import GentoolError, format_bytes, memory_limit, usable_memory


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
    streamed = f", and even {at_once} at a time, streamed from disk, need {format_bytes(at_once * each)}" \
        if at_once < count else ""
    raise GentoolError(
        f"{source}: {count} images of {channels} x {size} x {size} would take {format_bytes(count * each)} decoded "
        f"({format_bytes(each)} each){streamed}, more than the {format_bytes(memory_limit())} data may take here "
        f"(half of {format_bytes(usable_memory())} of memory); choose a smaller --image-size.")
