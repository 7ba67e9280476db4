"""Input checks shared by the metrics."""

from __future__ import annotations

from gentoolkit import GentoolError


def sample_count(metric: str, k: int | None, default: int) -> int:
    """The ``k`` a metric uses: the caller's, else its default; never zero or negative."""
    if k is None:
        return default
    if k <= 0:
        raise GentoolError(f"{metric}: k must be a positive integer, got {k}.")
    return k
