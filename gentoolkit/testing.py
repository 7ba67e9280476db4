"""Helpers for testing plugins: run gentoolkit with extra plugins registered.

    from gentoolkit.testing import toolkit_with

    def test_my_model(tmp_path):
        with toolkit_with(my_plugin_module, only=["datasets"]):
            run = gentoolkit.api.fit("my-model", dataset="shapes", epochs=1, runs_dir=tmp_path)

The pytest fixture ``gentool_plugins`` (from :mod:`gentoolkit.pytest_plugin`, loaded
by pytest automatically) does the same for the length of one test, and
:func:`invoke_gentool` runs a ``gentool`` command, such as one a plugin adds, in it.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import Any

import click.testing

from gentoolkit import registry
from gentoolkit.cli import cli


@contextmanager
def toolkit_with(*plugins: Any, only: Collection[str] | None = None) -> Iterator[registry.Toolkit]:
    """A toolkit with ``plugins`` (modules or objects with hookimpls) added, in effect inside the block.

    ``only`` names the installed plugins (entry points) to load beside them, whatever
    GENTOOL_PLUGINS and GENTOOL_DISABLE_PLUGINS say, so a broken or clashing plugin
    installed next to yours cannot break your tests; ``only=[]`` loads none. By default
    every enabled installed plugin is loaded, as for a user.
    """
    toolkit = registry.build_toolkit(only)
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


def invoke_gentool(*args: str | os.PathLike) -> click.testing.Result:
    """Run ``gentool ARGS`` in this process, with the toolkit in effect (``toolkit_with``, the
    fixture), for testing commands a plugin adds; the result has ``exit_code`` and ``output``."""
    return click.testing.CliRunner().invoke(cli, [str(a) for a in args])
