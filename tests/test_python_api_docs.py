"""docs/python-api.md: each parameter table lists exactly the function's parameters, in order, with its defaults.

A parameter added to ``gentoolkit.api`` without a row (or a row left behind by a
removed one) fails here, so the page cannot fall behind the code again.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path, PurePath

import pytest

import gentoolkit.api as gt

DOC = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"
TEXT = DOC.read_text()
SECTION = re.compile(r"^### `([\w.]+)`\n(.*?)(?=^#{1,3} |\Z)", re.MULTILINE | re.DOTALL)
ROW = re.compile(r"^\| `(\w+)` \| (.+?) \| .+ \|$", re.MULTILINE)


def documented() -> dict[str, list[tuple[str, str]]]:
    """Each ``### `name``` section's (parameter, default) rows."""
    return {name: ROW.findall(body) for name, body in SECTION.findall(TEXT)}


def function(qualname: str):
    obj = gt
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def parameters(qualname: str) -> list[inspect.Parameter]:
    return [p for p in inspect.signature(function(qualname)).parameters.values() if p.name != "self"]


def default_in_doc(cell: str) -> object:
    """A table's default: ``required``, or a Python literal in backticks."""
    return inspect.Parameter.empty if cell == "required" else ast.literal_eval(cell.strip("`"))


def default_in_code(parameter: inspect.Parameter) -> object:
    """The parameter's default as the page writes it: a path as its text."""
    return str(parameter.default) if isinstance(parameter.default, PurePath) else parameter.default


def test_the_page_documents_the_api():
    assert {"fit", "resume", "load_run", "latest_run", "Run.sample", "Run.evaluate"} <= set(documented())


@pytest.mark.parametrize("qualname", sorted(documented()))
def test_each_table_matches_the_signature(qualname):
    rows = documented()[qualname]
    assert [name for name, _ in rows] == [p.name for p in parameters(qualname)]
    for (name, cell), parameter in zip(rows, parameters(qualname), strict=True):
        assert default_in_doc(cell) == default_in_code(parameter), f"{qualname}: '{name}' is documented as {cell}"


@pytest.mark.parametrize("qualname", sorted(documented()))
def test_each_function_in_the_overview_links_its_table(qualname):
    anchor = qualname.lower().replace(".", "")
    assert f"[`{qualname}`](#{anchor})" in TEXT
