"""A pytest plugin (entry point ``pytest11``) with fixtures for plugin authors."""

from __future__ import annotations

import pytest

from gentoolkit.testing import toolkit_with


@pytest.fixture
def gentool_plugins():
    """Call with plugin modules or objects to register them for the rest of the test.

        def test_fit(gentool_plugins, tmp_path):
            gentool_plugins(my_plugin)
            gentoolkit.api.fit("my-model", dataset="shapes", epochs=1, runs_dir=tmp_path)
    """
    stack = []

    def register(*plugins, entry_points: bool = True):
        context = toolkit_with(*plugins, entry_points=entry_points)
        toolkit = context.__enter__()
        stack.append(context)
        return toolkit

    yield register
    for context in reversed(stack):
        context.__exit__(None, None, None)
