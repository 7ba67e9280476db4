"""A pytest plugin (entry point ``pytest11``) with fixtures for plugin authors."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from gentoolkit.registry import Toolkit
from gentoolkit.testing import toolkit_with


@pytest.fixture
def gentool_plugins() -> Iterator[Callable[..., Toolkit]]:
    """Call with plugin modules or objects to register them for the rest of the test;
    ``only`` names the installed plugins to load beside them (default: all enabled ones).

        def test_fit(gentool_plugins, tmp_path):
            gentool_plugins(my_plugin, only=["datasets"])  # my plugin and the built-in data sets, nothing else
            gentoolkit.api.fit("my-model", dataset="shapes", epochs=1, runs_dir=tmp_path)
    """
    with ExitStack() as stack:

        def register(*plugins: Any, only: Collection[str] | None = None) -> Toolkit:
            return stack.enter_context(toolkit_with(*plugins, only=only))

        yield register
