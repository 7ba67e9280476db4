"""Finds plugins through entry points and holds the components they register.

Every plugin, built-in or third-party, is a module named by an entry point in
the ``gentoolkit`` group. Loading is defensive: a plugin that fails to import,
raises in a hook or registers something that is not a component is reported
once as a warning and left out, and everything else keeps working.

Environment switches:

- ``GENTOOL_PLUGINS=a,b``: load only these entry points (empty: none).
- ``GENTOOL_DISABLE_PLUGINS=a,b``: load all but these.
- ``GENTOOL_TRACE=1``: print every hook call to stderr.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any

import pluggy

from gentoolkit import hookspecs, standard
from gentoolkit.errors import GentoolError, unknown
from gentoolkit.interfaces import (
    AdversarialObjective,
    Dataset,
    Metric,
    Model,
    Objective,
    Sampler,
    Trainer,
)
from gentoolkit.training import Callback

ENTRY_POINT_GROUP = "gentoolkit"
CORE = "gentoolkit"


class PluginWarning(UserWarning):
    """A plugin could not be loaded or registered something invalid."""


@dataclass(frozen=True)
class Entry:
    """One registered component and where it came from."""

    name: str
    cls: type
    aliases: tuple[str, ...]
    plugin: str  # entry-point name ("gentoolkit" for the core's own components)
    distribution: str


@dataclass
class PluginInfo:
    """What ``gentool plugins`` shows for one plugin."""

    name: str
    distribution: str
    version: str
    module: str
    hooks: list[str] = field(default_factory=list)
    registered: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None
    builtin: bool = False


class Registry:
    """Named components of one kind, with aliases and near-miss suggestions."""

    def __init__(self, kind: str, bases: tuple[type, ...]):
        self.kind = kind
        self.bases = bases
        self._entries: dict[str, Entry] = {}
        self._aliases: dict[str, str] = {}

    def __contains__(self, name: str) -> bool:
        return name in self._entries or name in self._aliases

    def __iter__(self):
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def names(self) -> list[str]:
        return sorted([*self._entries, *self._aliases])

    def entry(self, name: str) -> Entry:
        """The entry for a name or alias; an unknown name suggests the closest."""
        canonical = self._aliases.get(name, name)
        if canonical not in self._entries:
            raise unknown(self.kind, name, self.names())
        return self._entries[canonical]

    def get(self, name: str) -> type:
        return self.entry(name).cls

    def check(self, cls: Any) -> None:
        """Raise TypeError unless ``cls`` is a component class this registry can hold."""
        if not (isinstance(cls, type) and issubclass(cls, self.bases)):
            expected = " or ".join(b.__name__ for b in self.bases)
            raise TypeError(f"register_{self.kind}s got {cls!r}, expected a subclass of {expected}")
        if not isinstance(getattr(cls, "name", None), str) or not cls.name:
            raise TypeError(f"{cls.__qualname__} has no 'name' class attribute")

    def add(self, entry: Entry) -> bool:
        """Add an entry; on a name clash the entry already here wins, with a warning, and this returns False."""
        for name in (entry.name, *entry.aliases):
            if name in self:
                first = self.entry(name)
                warnings.warn(
                    f"{self.kind} '{name}' is registered by both {first.distribution} "
                    f"(plugin '{first.plugin}') and {entry.distribution} (plugin '{entry.plugin}'); "
                    f"using the one from {first.distribution}. Disable one with "
                    f"GENTOOL_DISABLE_PLUGINS={entry.plugin}.", PluginWarning, stacklevel=2)
                return False
        self._entries[entry.name] = entry
        for alias in entry.aliases:
            self._aliases[alias] = entry.name
        return True


KINDS: dict[str, tuple[type, ...]] = {
    "model": (Model,),
    "objective": (Objective, AdversarialObjective),
    "sampler": (Sampler,),
    "trainer": (Trainer,),
    "dataset": (Dataset,),
    "metric": (Metric,),
    "callback": (Callback,),
}


class _Kind:
    """``toolkit.models`` and friends: the registry of one kind."""

    def __init__(self, kind: str):
        self.kind = kind

    def __get__(self, toolkit: Toolkit, owner: type) -> Registry:
        return toolkit.registries[self.kind]


class Toolkit:
    """The loaded plugins and one :class:`Registry` per kind of component."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.registries = {kind: Registry(kind, bases) for kind, bases in KINDS.items()}
        self.plugins: dict[str, PluginInfo] = {}
        self.trace = bool(os.environ.get("GENTOOL_TRACE"))

    models = _Kind("model")
    objectives = _Kind("objective")
    samplers = _Kind("sampler")
    trainers = _Kind("trainer")
    datasets = _Kind("dataset")
    metrics = _Kind("metric")
    callbacks = _Kind("callback")

    def add_plugin(self, module: Any, info: PluginInfo) -> None:
        """Register a plugin module (or object) and collect what it registers."""
        self.plugins[info.name] = info
        try:
            self.pm.register(module, name=info.name)
        except Exception as exc:  # a hookimpl that matches no hookspec, a second registration
            self._fail(info, exc)
            return
        info.hooks = sorted(c.name for c in self.pm.get_hookcallers(module) or [])
        for kind in self.registries:
            self._collect(kind, module, info)

    def _collect(self, kind: str, module: Any, info: PluginInfo) -> None:
        registry = self.registries[kind]
        caller = getattr(self.pm.hook, f"register_{kind}s")
        for impl in caller.get_hookimpls():
            if impl.plugin is not module:
                continue
            staged: list[Entry] = []
            if self.trace:
                print(f"gentoolkit trace: {info.name}.register_{kind}s()", file=sys.stderr)
            try:
                impl.function(register=_stager(registry, info, staged))
            except Exception as exc:
                self._fail(info, exc)
                return
            for entry in staged:
                if registry.add(entry):  # the loser of a name clash registers nothing
                    info.registered.setdefault(kind, []).append(entry.name)

    def _fail(self, info: PluginInfo, exc: Exception) -> None:
        info.error = f"{type(exc).__name__}: {exc}"
        warnings.warn(f"plugin '{info.name}' from {info.distribution} failed and was skipped: "
                      f"{info.error}", PluginWarning, stacklevel=3)

    def load_entry_points(self) -> None:
        """Import and register every enabled plugin in the ``gentoolkit`` group."""
        only = os.environ.get("GENTOOL_PLUGINS")
        allowed = None if only is None else {n.strip() for n in only.split(",") if n.strip()}
        disabled = {n.strip() for n in os.environ.get("GENTOOL_DISABLE_PLUGINS", "").split(",")}
        points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        # Built-ins (this distribution) first, so they win name clashes; then the rest by name.
        for ep in sorted(points, key=lambda ep: (_dist_name(ep) != CORE, _dist_name(ep), ep.name)):
            if ep.name in disabled or (allowed is not None and ep.name not in allowed):
                continue
            if ep.name in self.plugins:
                continue  # the same entry point seen twice (an editable and a normal install)
            info = PluginInfo(ep.name, _dist_name(ep), _dist_version(ep), ep.value,
                              builtin=_dist_name(ep) == CORE)
            try:
                module = ep.load()
            except Exception as exc:
                self.plugins[info.name] = info
                self._fail(info, exc)
                continue
            self.add_plugin(module, info)


def _stager(registry: Registry, info: PluginInfo, staged: list[Entry]):
    """The ``register`` callback a hook gets: checks each class and stages it for ``registry``."""

    def register(cls: Any, aliases: tuple[str, ...] | list[str] = ()) -> None:
        registry.check(cls)
        staged.append(Entry(cls.name, cls, tuple(aliases), info.name, info.distribution))

    return register


def _dist_name(ep: importlib.metadata.EntryPoint) -> str:
    return ep.dist.name if ep.dist is not None else "unknown"


def _dist_version(ep: importlib.metadata.EntryPoint) -> str:
    return ep.dist.version if ep.dist is not None else "unknown"


def build_toolkit(entry_points: bool = True) -> Toolkit:
    """A fresh toolkit: the core's standard components plus every enabled plugin."""
    toolkit = Toolkit()
    version = importlib.metadata.version(CORE)
    toolkit.add_plugin(standard, PluginInfo(CORE, CORE, version, standard.__name__, builtin=True))
    if entry_points:
        toolkit.load_entry_points()
    return toolkit


_current: Toolkit | None = None


def get_toolkit() -> Toolkit:
    """The process-wide toolkit, loaded on first use."""
    global _current
    if _current is None:
        _current = build_toolkit()
    return _current


def set_toolkit(toolkit: Toolkit | None) -> Toolkit | None:
    """Replace the process-wide toolkit (None: reload on next use); returns the previous one."""
    global _current
    previous, _current = _current, toolkit
    return previous


def require_fit(kind: str, cls: type, model: Model) -> None:
    """Raise a clear error when component ``cls`` cannot work with ``model``."""
    if not cls.fits(model):
        needs = ", ".join(c.__name__ for c in cls.requires)
        raise GentoolError(f"{kind} '{cls.name}' does not work with model '{type(model).name}': "
                           f"it needs a model with {needs}.")
