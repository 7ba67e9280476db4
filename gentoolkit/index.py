"""The names of installed components and plugin commands, readable without importing torch or any plugin.

``gentool --help`` lists the commands plugins add, and shell completion offers model,
data set, sampler and metric names. Knowing them means loading every plugin, which
imports torch (seconds), so both read this index instead: a small JSON file in the
user cache that every process which loads the plugins rewrites when what they
register has changed. It is keyed by a fingerprint of what decides which plugins
load (the entry points of installed distributions with their versions, and the
GENTOOL_* switches), so installing, upgrading or removing a plugin makes it stale.
A stale index is rebuilt in a child process (``python -m gentoolkit.index``): that
first ``--help`` or Tab after a change takes as long as loading the plugins, and the
child's plugin warnings never reach the shell's completion output.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gentoolkit.cache import cache_dir

# The kinds of registered component, in the order listings show them (gentoolkit.registry.KINDS
# holds their base classes).
KINDS = ("model", "objective", "sampler", "trainer", "dataset", "metric", "callback")
SWITCHES = ("GENTOOL_PLUGINS", "GENTOOL_DISABLE_PLUGINS", "GENTOOL_PIN")
REFRESH_SECONDS = 300  # a plugin that takes longer to load leaves the index empty for this call


@dataclass
class Index:
    """Every usable name of each kind (aliases included) with a one-line description, and the
    commands plugins add with their short help."""

    components: dict[str, dict[str, str]] = field(default_factory=dict)  # kind -> name -> description
    commands: dict[str, str] = field(default_factory=dict)  # plugin command -> short help

    def names(self, kind: str) -> dict[str, str]:
        return self.components.get(kind, {})


def path() -> Path:
    """The index of this Python environment: ``$XDG_CACHE_HOME`` (else ``~/.cache``)/gentoolkit."""
    environment = hashlib.sha256(sys.prefix.encode()).hexdigest()[:12]
    return cache_dir(f"index-{environment}.json")


def fingerprint() -> str:
    """A hash of what decides which components load: the ``gentoolkit`` entry points, the
    distributions that declare them and their versions, this gentoolkit, and the switches."""
    import importlib.metadata  # here: gentool --version needs no metadata

    from gentoolkit import __version__

    points = sorted((ep.name, ep.value, ep.dist.name if ep.dist else "", ep.dist.version if ep.dist else "")
                    for ep in importlib.metadata.entry_points(group="gentoolkit"))
    key = {"gentoolkit": __version__, "entry_points": points, "switches": [os.environ.get(s) for s in SWITCHES]}
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()


def save(index: Index) -> None:
    """Write the index of the plugins this process loaded, unless the file already says the same.
    A cache: a folder that cannot be written only means the next ``--help`` loads plugins again."""
    data = {"fingerprint": fingerprint(), "components": index.components, "commands": index.commands}
    target = path()
    try:
        if target.is_file() and json.loads(target.read_text()) == data:
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")  # readers never see half a file
        partial.write_text(json.dumps(data))
        os.replace(partial, target)
    except (OSError, ValueError):
        pass


def _read(expected: str) -> Index | None:
    try:
        data = json.loads(path().read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, Mapping) or data.get("fingerprint") != expected:
        return None
    return Index(dict(data.get("components", {})), dict(data.get("commands", {})))


def load() -> Index:
    """The current index, rebuilt in a child process first when it is missing or stale; an empty
    one when that fails (a broken installation still gets gentool's own help and completion)."""
    expected = fingerprint()
    index = _read(expected)
    if index is not None:
        return index
    import subprocess  # here: only a stale index needs it, not every --help and Tab

    try:
        subprocess.run([sys.executable, "-m", "gentoolkit.index"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=REFRESH_SECONDS, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return Index()
    return _read(expected) or Index()


if __name__ == "__main__":  # the child process of load(): loading the toolkit writes the index
    from gentoolkit.registry import get_toolkit

    get_toolkit()
