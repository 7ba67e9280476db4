"""Finds plugins through entry points and holds the components they register.

Every plugin, built-in or third-party, is a module named by an entry point in
the ``gentoolkit`` group. Loading is defensive: a plugin that fails to import,
raises in a hook or registers something that is not a component is reported
once as a warning and left out, and everything else keeps working.

Who gets a name two plugins register is settled after every plugin is loaded,
so it never depends on which loaded first (see :meth:`Registry.resolve`).

Environment switches:

- ``GENTOOL_PLUGINS=a,b``: load only these entry points (empty: none).
- ``GENTOOL_DISABLE_PLUGINS=a,b``: load all but these.
- ``GENTOOL_PIN=name=plugin,...``: give a name several plugins register to one of them.
- ``GENTOOL_TRACE=1``: print every hook call to stderr.
- ``GENTOOL_DEBUG=1``: a plugin that fails to load is reported with its traceback.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import click
import pluggy

from gentoolkit import hookspecs, index, standard
from gentoolkit.errors import GentoolError, debugging, suggest, unknown
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
    """A plugin could not be loaded, registered something invalid or clashes with another."""


@dataclass(frozen=True)
class Entry:
    """One registered component (or command) and where it came from."""

    name: str
    cls: Any  # the component class; for the "command" kind, the Click command
    aliases: tuple[str, ...]
    plugin: str  # entry-point name ("gentoolkit" for the core's own components)
    distribution: str

    @property
    def builtin(self) -> bool:
        """Whether it ships with gentoolkit itself; built-ins keep their names in every clash."""
        return self.distribution == CORE


@dataclass(frozen=True)
class Clash:
    """A name that several registrations of one kind claim, and who got it."""

    kind: str
    name: str
    claims: tuple[Entry, ...]  # every entry registering the name, as its own name or as an alias
    winner: Entry | None  # None: contested, nobody has it
    pinned: bool  # the winner was chosen with GENTOOL_PIN

    @property
    def plugins(self) -> list[str]:
        return sorted({e.plugin for e in self.claims})

    def message(self) -> str:
        """What happened and how to choose, in one line (warnings, errors, ``gentool plugins``)."""
        claims = " and ".join(self._describe(e) for e in self.claims)
        w = self.winner
        if w is None:
            outcome = "it is contested, so no plugin gets it"
        elif self.pinned:
            outcome = f"GENTOOL_PIN gives it to plugin '{w.plugin}'"
        elif w.builtin:
            outcome = f"the built-in one (plugin '{w.plugin}') keeps it"
        else:
            outcome = f"plugin '{w.plugin}' keeps it as its {self.kind}'s own name"
        left_out = [f"'{e.plugin}'" for e in self.claims if e.name == self.name and e != w]
        if left_out:  # a component without its own name is left out: runs of it could not be told apart
            outcome += (f", and the {self.kind} of plugin {left_out[0]} is left out" if len(left_out) == 1 else
                        f", and the {self.kind}s of plugins {' and '.join(left_out)} are left out")
        if w is not None and w.builtin:
            choose = "Built-in names cannot be pinned to a plugin; GENTOOL_DISABLE_PLUGINS=PLUGIN leaves one out."
        else:
            choose = (f"Choose with GENTOOL_PIN={self.name}=PLUGIN (one of {', '.join(self.plugins)}) "
                      "or leave a plugin out with GENTOOL_DISABLE_PLUGINS=PLUGIN.")
        return f"{self.kind} '{self.name}' is registered by {claims}; {outcome}. {choose}"

    def _describe(self, entry: Entry) -> str:
        alias = "" if entry.name == self.name else f", as an alias of '{entry.name}'"
        return f"plugin '{entry.plugin}' ({entry.distribution}{alias})"

    def outcome_for(self, plugin: str) -> str:
        """The clash from one plugin's side, for its row in ``gentool plugins``."""
        if self.winner is None:
            return f"{self.kind} '{self.name}': contested, nobody has it"
        if self.winner.plugin == plugin:
            return f"{self.kind} '{self.name}': kept"
        return f"{self.kind} '{self.name}': lost to plugin '{self.winner.plugin}'"


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
    traceback: str | None = None  # of the error, for GENTOOL_DEBUG=1 and gentool plugins --json
    clashes: list[Clash] = field(default_factory=list)
    builtin: bool = False


def _choose(name: str, claims: list[Entry], pins: Mapping[str, str]) -> Entry | None:
    """The one claim that gets ``name``, or None when it stays contested.

    Built-ins first, then the plugin GENTOOL_PIN names, then a component's own name over
    aliases: each rule narrows the claims when it applies to any, and the name has an
    owner only when one claim is left.
    """
    rules: tuple[Callable[[Entry], bool], ...] = (
        lambda e: e.builtin, lambda e: e.plugin == pins.get(name), lambda e: e.name == name)
    for rule in rules:
        narrowed = [e for e in claims if rule(e)]
        if narrowed:
            claims = narrowed
    return claims[0] if len(claims) == 1 else None


class Registry:
    """Named components of one kind, with aliases and near-miss suggestions."""

    def __init__(self, kind: str, bases: tuple[type, ...]):
        self.kind = kind
        self.bases = bases
        self._claims: list[Entry] = []  # every registration, in the order plugins made them
        self._names: dict[str, Entry] = {}  # each usable name or alias -> its entry, after resolve()
        self.clashes: dict[str, Clash] = {}
        self.note = ""  # added to unknown-name errors: which installed plugins the environment left out

    def __contains__(self, name: str) -> bool:
        return name in self._names

    def __iter__(self) -> Iterator[Entry]:
        return iter(sorted((e for n, e in self._names.items() if n == e.name), key=lambda e: e.name))

    def names(self) -> list[str]:
        return sorted(self._names)

    def entry(self, name: str) -> Entry:
        """The entry for a name or alias; a contested name says how to choose, an unknown one
        suggests the closest."""
        if name in self._names:
            return self._names[name]
        clash = self.clashes.get(name)
        if clash is not None:
            raise GentoolError(clash.message())
        error = unknown(self.kind, name, self.names())
        raise GentoolError(f"{error}{self.note}") if self.note else error

    def get(self, name: str) -> Any:
        return self.entry(name).cls

    def check(self, cls: Any) -> None:
        """Raise TypeError unless ``cls`` is a component class this registry can hold."""
        if not (isinstance(cls, type) and issubclass(cls, self.bases)):
            expected = " or ".join(b.__name__ for b in self.bases)
            raise TypeError(f"register_{self.kind}s got {cls!r}, expected a subclass of {expected}")
        if not isinstance(getattr(cls, "name", None), str) or not cls.name:
            raise TypeError(f"{cls.__qualname__} has no 'name' class attribute")

    def stage(self, entry: Entry) -> None:
        """Add a registration (once: a plugin registering a class twice is no clash); who gets
        its names is decided by :meth:`resolve`."""
        if entry not in self._claims:
            self._claims.append(entry)

    def claimed_by(self, plugin: str, name: str) -> bool:
        """Whether ``plugin`` registers ``name``, as a component's own name or an alias."""
        return any(e.plugin == plugin and (name == e.name or name in e.aliases) for e in self._claims)

    def resolve(self, pins: Mapping[str, str]) -> None:
        """Decide who gets each name from all registrations at once, whatever their order.

        A name one registration claims is its own. A name several claim goes to the
        built-in one, else to the plugin pinned with GENTOOL_PIN, else to the component
        whose own name it is (over aliases), else to nobody. A component that loses its
        own name is left out, aliases and all: runs store that name, so another
        component answering to it would load the wrong weights.
        """
        claims: dict[str, list[Entry]] = {}
        for entry in self._claims:
            for name in dict.fromkeys((entry.name, *entry.aliases)):
                claims.setdefault(name, []).append(entry)
        chosen = {name: _choose(name, entries, pins) for name, entries in claims.items()}
        kept = {e for e in self._claims if chosen[e.name] == e}
        winners = {name: e for name, e in chosen.items() if e in kept}
        usable = {e: dataclasses.replace(e, aliases=tuple(a for a in e.aliases if winners.get(a) == e)) for e in kept}
        self._names = {name: usable[e] for name, e in winners.items()}
        self.clashes = {}
        for name, entries in claims.items():
            if len(entries) > 1:
                winner = winners.get(name)
                pinned = winner is not None and not winner.builtin and pins.get(name) == winner.plugin
                ordered = tuple(sorted(entries, key=lambda e: (e.plugin, e.name)))  # messages in one order too
                self.clashes[name] = Clash(self.kind, name, ordered, winner, pinned)


class CommandRegistry(Registry):
    """The ``gentool`` subcommands plugins add: Click commands by name."""

    def __init__(self) -> None:
        super().__init__("command", ())

    def check(self, cls: Any) -> None:
        if not isinstance(cls, click.Command):
            raise TypeError(f"register_commands added {cls!r}, expected a Click command or group")


# The base classes of each kind (the names, in order, are gentoolkit.index.KINDS: the CLI reads them without torch).
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


def parse_pins(text: str) -> dict[str, str]:
    """``GENTOOL_PIN``'s ``name=plugin,name=plugin`` as a dict."""
    pins = {}
    for item in filter(None, (i.strip() for i in text.split(","))):
        name, sep, plugin = item.partition("=")
        if not sep or not name.strip() or not plugin.strip():
            raise GentoolError(f"GENTOOL_PIN: '{item}' is not NAME=PLUGIN, for example GENTOOL_PIN=flow=realnvp.")
        pins[name.strip()] = plugin.strip()
    return pins


class Toolkit:
    """The loaded plugins and one :class:`Registry` per kind of component, plus plugin commands."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.registries: dict[str, Registry] = {kind: Registry(kind, bases) for kind, bases in KINDS.items()}
        self.registries["command"] = CommandRegistry()
        self.plugins: dict[str, PluginInfo] = {}
        self.trace = bool(os.environ.get("GENTOOL_TRACE"))
        self.pins = parse_pins(os.environ.get("GENTOOL_PIN", ""))
        self._reported: set[Clash] = set()

    models = _Kind("model")
    objectives = _Kind("objective")
    samplers = _Kind("sampler")
    trainers = _Kind("trainer")
    datasets = _Kind("dataset")
    metrics = _Kind("metric")
    callbacks = _Kind("callback")
    commands = _Kind("command")

    def add_plugin(self, module: Any, info: PluginInfo) -> None:
        """Register a plugin module (or object), then settle who gets each name."""
        self._register(module, info)
        self.resolve()

    def _register(self, module: Any, info: PluginInfo) -> None:
        """Call the plugin's hooks and stage what they register; a plugin that fails stages nothing."""
        self.plugins[info.name] = info
        try:
            self.pm.register(module, name=info.name)
            info.hooks = sorted(c.name for c in self.pm.get_hookcallers(module) or [])
            staged = [(kind, entry) for kind in self.registries for entry in self._call(kind, module, info)]
        except Exception as exc:  # a hookimpl that matches no hookspec, a hook that raises, a non-component
            self._fail(info, exc)
            return
        for kind, entry in staged:
            self.registries[kind].stage(entry)

    def _call(self, kind: str, module: Any, info: PluginInfo) -> list[Entry]:
        """What ``module``'s ``register_<kind>s`` hook registers (nothing when it has none)."""
        registry = self.registries[kind]
        staged: list[Entry] = []
        for impl in getattr(self.pm.hook, f"register_{kind}s").get_hookimpls():
            if impl.plugin is not module:
                continue
            if self.trace:
                print(f"gentoolkit trace: {info.name}.register_{kind}s()", file=sys.stderr)
            if kind == "command":
                group = click.Group()  # the plugin's own: it cannot touch gentool's commands
                impl.function(cli=group)
                for name, command in group.commands.items():
                    registry.check(command)
                    staged.append(Entry(name, command, (), info.name, info.distribution))
            else:
                impl.function(register=_stager(registry, info, staged))
        return staged

    def _fail(self, info: PluginInfo, exc: Exception) -> None:
        info.error = f"{type(exc).__name__}: {exc}"
        info.traceback = "".join(traceback.format_exception(exc))
        detail = f"\n{info.traceback}" if debugging() else " (gentool --debug or GENTOOL_DEBUG=1 shows the traceback)"
        warnings.warn(f"plugin '{info.name}' from {info.distribution} failed and was skipped: {info.error}{detail}",
                      PluginWarning, stacklevel=3)

    def resolve(self) -> None:
        """Settle every name clash, record what each plugin ended up with, and warn once
        about each clash not settled with GENTOOL_PIN."""
        for info in self.plugins.values():
            info.registered, info.clashes = {}, []
        for kind, registry in self.registries.items():
            registry.resolve(self.pins)
            for entry in registry:
                self.plugins[entry.plugin].registered.setdefault(kind, []).append(entry.name)
            for clash in registry.clashes.values():
                for plugin in clash.plugins:
                    self.plugins[plugin].clashes.append(clash)
                if not clash.pinned and clash not in self._reported:
                    self._reported.add(clash)
                    warnings.warn(clash.message(), PluginWarning, stacklevel=3)

    def name_index(self) -> index.Index:
        """What ``gentool --help`` and shell completion show: every usable name with its description
        (an alias says whose it is), and the commands plugins add."""
        components: dict[str, dict[str, str]] = {}
        for kind in KINDS:
            registry = self.registries[kind]
            entries = {name: registry.entry(name) for name in registry.names()}
            components[kind] = {name: e.cls.description() if name == e.name else f"alias of {e.name}"
                                for name, e in entries.items()}
        commands = {e.name: e.cls.get_short_help_str(limit=200) for e in self.commands if not e.builtin}
        return index.Index(components, commands)

    def load_entry_points(self, only: Collection[str] | None = None) -> None:
        """Import and register the enabled plugins in the ``gentoolkit`` group: those named in
        ``only``, or when it is None, those GENTOOL_PLUGINS and GENTOOL_DISABLE_PLUGINS allow."""
        if only is None:
            listed = os.environ.get("GENTOOL_PLUGINS")
            only = None if listed is None else {n.strip() for n in listed.split(",") if n.strip()}
            disabled = {n.strip() for n in os.environ.get("GENTOOL_DISABLE_PLUGINS", "").split(",")}
        else:
            disabled = set()
        points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        self._note_filter(sorted({ep.name for ep in points}), only, disabled)
        for ep in sorted(points, key=lambda ep: (_dist_name(ep), ep.name)):  # a stable order for traces
            if ep.name in disabled or (only is not None and ep.name not in only):
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
            self._register(module, info)
        self.resolve()
        self._check_pins()

    def _note_filter(self, installed: list[str], only: Collection[str] | None, disabled: set[str]) -> None:
        """Make unknown-name errors mention the plugins GENTOOL_PLUGINS / GENTOOL_DISABLE_PLUGINS left
        out, and warn about a GENTOOL_PLUGINS name that no installed plugin has (a typo)."""
        left_out = [n for n in installed if n in disabled or (only is not None and n not in only)]
        if not left_out:
            return
        note = (f" (GENTOOL_PLUGINS={','.join(sorted(only))} loads only those plugins" if only is not None
                else f" (GENTOOL_DISABLE_PLUGINS leaves out {', '.join(sorted(disabled & set(installed)))}")
        note += f"; installed: {', '.join(installed)})"
        for registry in self.registries.values():
            registry.note = note
        for name in sorted(set(only or ()) - set(installed)):
            hint = suggest(name, installed) or f" Installed: {', '.join(installed)}."
            warnings.warn(f"GENTOOL_PLUGINS names '{name}', which is no installed plugin.{hint}", PluginWarning,
                          stacklevel=3)

    def _check_pins(self) -> None:
        """Warn about a GENTOOL_PIN naming a plugin that registers nothing by that name (a typo)."""
        for name, plugin in self.pins.items():
            if not any(registry.claimed_by(plugin, name) for registry in self.registries.values()):
                warnings.warn(f"GENTOOL_PIN={name}={plugin}: plugin '{plugin}' registers nothing called "
                              f"'{name}'; see gentool plugins.", PluginWarning, stacklevel=3)


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


def build_toolkit(only: Collection[str] | None = None) -> Toolkit:
    """A fresh toolkit: the core's standard components plus the enabled plugins (see
    :meth:`Toolkit.load_entry_points` for ``only``)."""
    toolkit = Toolkit()
    version = importlib.metadata.version(CORE)
    toolkit.add_plugin(standard, PluginInfo(CORE, CORE, version, standard.__name__, builtin=True))
    toolkit.load_entry_points(only)
    return toolkit


_current: Toolkit | None = None


def get_toolkit() -> Toolkit:
    """The process-wide toolkit, loaded on first use."""
    global _current
    if _current is None:
        _current = build_toolkit()
        index.save(_current.name_index())  # for the next --help and shell completion
    return _current


def loaded_toolkit() -> Toolkit | None:
    """The process-wide toolkit if it is loaded already, without loading it."""
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
