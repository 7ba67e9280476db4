"""The one exception type for mistakes a user can make.

Anything raised as :class:`GentoolError` is the user's to fix: the CLI prints
its message on one line and exits non-zero. Every other exception is a bug.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable


class GentoolError(Exception):
    """A problem with the user's input, data or environment, with a fix in its message."""


def debugging() -> bool:
    """Whether ``GENTOOL_DEBUG`` (or ``gentool --debug``) asks for full tracebacks."""
    return os.environ.get("GENTOOL_DEBUG", "") not in ("", "0")


def suggest(name: str, choices: Iterable[str]) -> str:
    """Return " Did you mean 'x'?" for the closest choices, or "" when none is close."""
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.5)
    if not close:
        return ""
    quoted = " or ".join(f"'{c}'" for c in close)
    return f" Did you mean {quoted}?"


def unknown(kind: str, name: str, choices: Iterable[str]) -> GentoolError:
    """Build the error for an unknown name, suggesting the closest known ones."""
    choices = sorted(set(choices))
    hint = suggest(name, choices) or f" Known: {', '.join(choices) or 'none'}."
    return GentoolError(f"unknown {kind} '{name}'.{hint}")
