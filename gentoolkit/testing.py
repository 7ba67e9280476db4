"""Helpers for testing plugins: run gentoolkit with extra plugins registered.

    from gentoolkit.testing import toolkit_with

    def test_my_model(tmp_path):
        with toolkit_with(my_plugin_module):
            run = gentoolkit.api.fit("my-model", dataset="shapes", epochs=1, runs_dir=tmp_path)

The pytest fixture ``gentool_plugins`` (from :mod:`gentoolkit.pytest_plugin`, loaded
by pytest automatically) does the same for the length of one test.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from gentoolkit import registry


@contextmanager
def toolkit_with(*plugins: Any, entry_points: bool = True) -> Iterator[registry.Toolkit]:
    """A toolkit with ``plugins`` (modules or objects with hookimpls) added, in effect inside the block.

    ``entry_points=False`` leaves out the installed plugins, for tests that must see
    only their own components.
    """
    toolkit = registry.build_toolkit(entry_points)
    for i, plugin in enumerate(plugins):
        if toolkit.pm.is_registered(plugin):  # already installed and loaded through its entry point
            continue
        name = getattr(plugin, "__name__", f"test-plugin-{i}")
        toolkit.add_plugin(plugin, registry.PluginInfo(name, "(test)", "0", name))
    previous = registry.set_toolkit(toolkit)
    try:
        yield toolkit
    finally:
        registry.set_toolkit(previous)
