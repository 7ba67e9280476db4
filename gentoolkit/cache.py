"""The user cache: where gentoolkit and its plugins keep what they can make again.

Downloaded data sets, decoded image folders, trained feature classifiers and the plugin
index all live under ``$XDG_CACHE_HOME/gentoolkit`` (else ``~/.cache/gentoolkit``), so
one environment variable moves (or empties) all of it.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(*parts: str) -> Path:
    """gentoolkit's cache folder, or a folder inside it; not created here."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "gentoolkit", *parts)
