"""What ``gentool info NAME`` tells about a component: where it comes from, what it has or
needs, and every option, read from its ``Config`` dataclass.

An option's meaning is the comment its field carries in the source, after it on the
same line or on the lines just above it, as docs/plugins.md asks plugin authors to
write; a config whose source cannot be read still lists its fields, without meanings.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import json
import textwrap
import tokenize
import types
import typing
from dataclasses import dataclass
from typing import Any

from gentoolkit.errors import unknown
from gentoolkit.interfaces import capabilities
from gentoolkit.registry import KINDS, Entry, Toolkit

# How a user sets a component's options, by kind.
SET_WITH = {
    "model": "gentool fit {name} --set KEY=VALUE",
    "objective": "gentool fit MODEL --objective {name} --set objective.KEY=VALUE",
    "trainer": "gentool fit MODEL --trainer {name} --set trainer.KEY=VALUE",
    "dataset": "gentool fit MODEL --dataset {name} --set data.KEY=VALUE",
    "sampler": "gentool sample MODEL --sampler {name} --KEY VALUE (dashes for underscores)",
    "metric": "gentool evaluate MODEL --metric {name} --set {name}.KEY=VALUE",
    "callback": "gentool fit MODEL --callback {name}",
}


@dataclass
class Option:
    """One field of a component's config."""

    name: str
    type: str  # as a user reads it: "int", "mlp | conv", "tuple[int, ...]", "float | None"
    default: Any  # JSON-ready; None also for a field without a default
    meaning: str  # the field's source comment, "" where there is none


@dataclass
class ComponentInfo:
    """Everything ``gentool info`` shows about one registered component."""

    kind: str
    name: str
    aliases: list[str]
    plugin: str
    distribution: str
    version: str
    description: str  # the class docstring
    capabilities: list[str]  # for models: the capabilities it has
    requires: list[str]  # for other kinds: what a model must have
    defaults: dict[str, Any]  # for models: default objective, trainer and sampler, and the recipe
    options: list[Option]
    set_with: str

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def describe(toolkit: Toolkit, name: str, kind: str | None = None) -> list[ComponentInfo]:
    """Every component called ``name`` (a name or alias), of ``kind`` or of any kind.

    A name several kinds use (``elbo`` is an objective and a metric) gives one result
    per kind. An unknown name suggests the closest, a contested one says how to choose.
    """
    if kind is not None and kind not in KINDS:
        raise unknown("kind", kind, KINDS)
    kinds = [kind] if kind else list(KINDS)
    registries = [toolkit.registries[k] for k in kinds]
    found = [component_info(toolkit, r.kind, r.entry(name)) for r in registries if name in r]
    if found:
        return found
    for registry in registries:
        if name in registry.clashes:
            registry.entry(name)  # raises: contested, and how to choose
    raise unknown(kind or "component", name, [n for r in registries for n in r.names()])


def component_info(toolkit: Toolkit, kind: str, entry: Entry) -> ComponentInfo:
    cls = entry.cls
    defaults: dict[str, Any] = {}
    if kind == "model":
        defaults = {"objective": getattr(cls, "default_objective", None),  # Model declares it, a model sets it
                    "trainer": cls.default_trainer,
                    "sampler": cls.default_sampler, **dataclasses.asdict(cls.recipe)}
    return ComponentInfo(
        kind=kind, name=entry.name, aliases=list(entry.aliases), plugin=entry.plugin,
        distribution=entry.distribution, version=toolkit.plugins[entry.plugin].version,
        description=inspect.cleandoc(cls.__doc__ or ""),
        capabilities=capabilities(cls) if kind == "model" else [],
        requires=[c.__name__ for c in getattr(cls, "requires", ())],
        defaults=defaults, options=options(cls.Config), set_with=SET_WITH[kind].format(name=entry.name))


def options(config: type) -> list[Option]:
    """The fields of a config dataclass with their types, defaults and source comments."""
    try:
        hints = typing.get_type_hints(config)
    except (NameError, TypeError):  # annotations naming what the config's module no longer has
        hints = {}
    comments = field_comments(config)
    return [Option(f.name, type_name(hints.get(f.name, f.type)), json_value(default(f)), comments.get(f.name, ""))
            for f in dataclasses.fields(config)]


def default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def json_value(value: Any) -> Any:
    """``value`` as it would be saved in a run's config.json (tuples become lists)."""
    try:
        return json.loads(json.dumps(value))
    except TypeError:
        return str(value)


def type_name(hint: Any) -> str:
    """A type as the user types its values: Literal choices, ``X | None``, ``tuple[int, ...]``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return " | ".join(map(str, args))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is tuple:
        return f"tuple[{type_name(args[0])}, ...]" if args else "tuple"
    if hint is type(None):
        return "None"
    return hint.__name__ if isinstance(hint, type) else str(hint)


def field_comments(config: type) -> dict[str, str]:
    """Each field's comment, from the source of the config and of the dataclasses it extends."""
    comments: dict[str, str] = {}
    for cls in reversed(config.__mro__):
        if "__dataclass_fields__" in vars(cls):
            comments.update(_class_comments(cls))
    return comments


def _class_comments(cls: type) -> dict[str, str]:
    """The comments of the fields ``cls`` itself declares: the one after a field on its line,
    else the comment lines right above it, joined into one line."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
        tree = ast.parse(source)
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (OSError, TypeError, SyntaxError, tokenize.TokenError):  # no source: built in a REPL, a zip, exec
        return {}
    lines = source.splitlines()
    comment = {t.start[0]: t.string.lstrip("#").strip() for t in tokens if t.type == tokenize.COMMENT}
    own_line = {n for n in comment if lines[n - 1].lstrip().startswith("#")}
    found = {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    for node in body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        if node.end_lineno in comment and node.end_lineno not in own_line:
            found[node.target.id] = comment[node.end_lineno]
            continue
        above = []
        line = node.lineno - 1
        while line in own_line:
            above.insert(0, comment[line])
            line -= 1
        if above:
            found[node.target.id] = " ".join(above)
    return found

