"""Metric curves as PNG files (matplotlib, the optional ``plot`` extra)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gentoolkit.checkpoint import atomic_write
from gentoolkit.errors import GentoolError


def plot_metrics(series: Mapping[str, Sequence[Mapping[str, Any]]], keys: Sequence[str], path: Path,
                 title: str = "") -> None:
    """Plot ``keys`` against epoch for each labelled list of metrics rows, one panel per key."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise GentoolError("plots need matplotlib: pip install 'gentoolkit[plot]'.") from None
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.5), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for label, rows in series.items():
            points = [(r["epoch"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
