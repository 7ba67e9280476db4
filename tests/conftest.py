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
