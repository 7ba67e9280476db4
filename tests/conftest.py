"""Shared fixtures: the toy plugin and the real MNIST location."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import toy_plugin

from gentoolkit.testing import toolkit_with


@pytest.fixture
def toy():
    """The installed plugins plus the toy plugin (model 'pixels', data set 'stripes')."""
    with toolkit_with(toy_plugin) as toolkit:
        yield toolkit


@pytest.fixture
def mnist_root() -> Path:
    """The data root holding MNIST/raw, from $GENTOOL_DATA_DIR; skips when it is not set."""
    root = os.environ.get("GENTOOL_DATA_DIR")
    if not root or not (Path(root) / "MNIST" / "raw").is_dir():
        pytest.skip("set GENTOOL_DATA_DIR to a folder holding MNIST/raw to run MNIST tests")
    return Path(root)


@pytest.fixture
def toy_installed(tmp_path) -> dict[str, str]:
    """An environment in which the toy plugin is installed through a real entry point.

    Subprocesses started with it find ``toy_plugin`` by its dist-info, exactly as
    they would find a pip-installed plugin; their name index (gentoolkit.index) is
    kept in the test's own cache folder.
    """
    dist = tmp_path / "site" / "gentoolkit_toy-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: gentoolkit-toy\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[gentoolkit]\ntoy = toy_plugin\n")
    paths = [str(tmp_path / "site"), str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p),
            "XDG_CACHE_HOME": str(tmp_path / "cache")}
