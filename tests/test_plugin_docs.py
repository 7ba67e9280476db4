"""docs/plugins.md: every hook and public class is documented, and its code really works.

The tutorial's files (code blocks starting with ``# file: NAME``) and the
example under each hook's heading are written to a folder and run.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest
from test_external_plugin import gentool, table_row

import gentoolkit
import gentoolkit.api as gt
from gentoolkit import hookspecs
from gentoolkit.testing import invoke_gentool, toolkit_with

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
TEXT = DOC.read_text()
HOOKS = {name: f"{name}{inspect.signature(fn)}" for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
         if name.startswith("register_")}
FENCE = re.compile(r"^```(?:\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def tutorial_files() -> dict[str, str]:
    """The code blocks that start with ``# file: NAME``, by NAME."""
    files = {}
    for code in FENCE.findall(TEXT):
        first, _, _ = code.partition("\n")
        if first.startswith("# file: "):
            files[first.removeprefix("# file: ").strip()] = code
    return files


def hook_example(hook: str) -> str:
    """The first code block in the section headed by the hook's signature."""
    section = re.search(rf"^#### `{re.escape(HOOKS[hook])}`\n(.*?)(?=^#{{2,4}} )", TEXT, re.MULTILINE | re.DOTALL)
    assert section, f"docs/plugins.md has no heading #### `{HOOKS[hook]}`"
    blocks = re.findall(r"^```python\n(.*?)^```", section.group(1), re.MULTILINE | re.DOTALL)
    assert blocks, f"the section on {hook} has no Python example"
    return blocks[0]


def tutorial_module() -> str:
    """The name of the tutorial's plugin module: its one Python file outside tests/."""
    (module,) = [Path(name).stem for name in tutorial_files() if name.endswith(".py") and "/" not in name]
    return module


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory) -> Iterator[Path]:
    """An importable folder with the tutorial's files and one module per hook example, ``example_<hook>``."""
    folder = tmp_path_factory.mktemp("tutorial")
    for name, code in tutorial_files().items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(code)
    for hook in HOOKS:
        (folder / f"example_{hook}.py").write_text(hook_example(hook))
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))
    for name in (tutorial_module(), *(f"example_{hook}" for hook in HOOKS)):
        sys.modules.pop(name, None)


# ------------------------------------------------------------- coverage


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_every_hook_has_a_heading_with_its_signature(hook):
    assert f"#### `{HOOKS[hook]}`" in TEXT


@pytest.mark.parametrize("name", sorted(n for n in gentoolkit.__all__ if isinstance(getattr(gentoolkit, n), type)))
def test_every_public_class_is_documented(name):
    assert f"`{name}`" in TEXT


# ------------------------------------------------------------- tutorial


def test_tutorial_plugin_is_under_50_lines():
    code = [line for line in tutorial_files()[f"{tutorial_module()}.py"].splitlines()[1:] if line.strip()]
    assert len(code) < 50  # past the '# file:' line, blank lines aside


def test_tutorial_plugin_learns_shapes(tutorial, tmp_path):
    module = importlib.import_module(tutorial_module())
    with toolkit_with(module) as toolkit:
        (model,) = toolkit.plugins[module.__name__].registered["model"]
        run = gt.fit(model, "shapes", epochs=1, runs_dir=tmp_path,
                     overrides=["data.train_size=4000", "data.test_size=500"])
    fair_coins = 28 * 28 * math.log(2)  # where a model that learned nothing stays
    assert run.metrics[-1]["test_nll"] < fair_coins / 2


@pytest.mark.slow
def test_tutorial_installs_lists_and_passes_its_own_tests(tutorial, tmp_path):
    # pip leaves an .egg-info where it builds; in the importable folder it would look installed to this process.
    source = shutil.copytree(tutorial, tmp_path / "source")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                    "--quiet", "--target", str(tmp_path / "site"), str(source)], check=True, timeout=300)
    (dist,) = metadata.distributions(path=[str(tmp_path / "site")])
    (entry_point,) = dist.entry_points.select(group="gentoolkit")
    plugin = entry_point.name
    assert (dist.name, entry_point.value) == (f"gentoolkit-{plugin}", f"gentoolkit_{plugin}")  # the naming rules
    listed = gentool("list-models", site=tmp_path / "site")
    assert table_row(listed.stdout, "bernoulli-mixture")[3] == plugin

    environ = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(tutorial), os.environ.get("PYTHONPATH")))),
               "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=tutorial,
                            env=environ, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------- hook examples


def test_each_hook_example_registers_its_kind_and_they_work_together(tutorial, tmp_path):
    examples = [importlib.import_module(f"example_{hook}") for hook in HOOKS]
    with toolkit_with(importlib.import_module(tutorial_module()), *examples) as toolkit:
        names = {}
        for hook, example in zip(HOOKS, examples, strict=True):
            info = toolkit.plugins[example.__name__]
            kind = hook.removeprefix("register_").removesuffix("s")
            assert info.error is None and info.hooks == [hook] and list(info.registered) == [kind]
            (names[kind],) = info.registered[kind]

        run = gt.fit(names["model"], names["dataset"], objective=names["objective"], trainer=names["trainer"],
                     callback_names=[names["callback"]], max_steps=5, batch_size=64, log_every=2, runs_dir=tmp_path)
        assert math.isfinite(run.metrics[-1]["train_loss"]) and "test_loss" in run.metrics[-1]
        steps = [json.loads(line) for line in (run.path / "steps.jsonl").read_text().splitlines()]
        assert [s["step"] for s in steps] == [2, 4] and all(math.isfinite(s["loss"]) for s in steps)
        for options in ({}, {"threshold": 0.5}):
            images = run.sample(8, sampler=names["sampler"], options=options).images
            assert images.shape == (8, 1, 28, 28) and set(images.unique().tolist()) <= {0.0, 1.0}
        (value,) = run.evaluate([names["metric"]], k=64).values()
        assert 0 <= value <= 1
        result = invoke_gentool(names["command"], run.path, "--out", tmp_path / "command.png")
        assert result.exit_code == 0, result.output
        assert (tmp_path / "command.png").read_bytes()[:4] == b"\x89PNG"
