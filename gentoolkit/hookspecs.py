"""The hooks a plugin implements to add components to gentoolkit.

Each hook receives a ``register`` callback and calls it once per component::

    from gentoolkit import hookimpl

    @hookimpl
    def register_models(register):
        register(MyModel, aliases=("mine",))

A component is a class with a ``name`` class attribute (see
:mod:`gentoolkit.interfaces`); ``aliases`` are extra names that resolve to it.
:func:`register_commands` is the exception: it adds ``gentool`` subcommands.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("gentoolkit")
hookimpl = pluggy.HookimplMarker("gentoolkit")


@hookspec
def register_models(register):
    """Register :class:`~gentoolkit.Model` subclasses: ``register(cls, aliases=())``."""


@hookspec
def register_objectives(register):
    """Register :class:`~gentoolkit.Objective` subclasses: ``register(cls, aliases=())``."""


@hookspec
def register_samplers(register):
    """Register :class:`~gentoolkit.Sampler` subclasses: ``register(cls, aliases=())``."""


@hookspec
def register_trainers(register):
    """Register :class:`~gentoolkit.Trainer` subclasses: ``register(cls, aliases=())``."""


@hookspec
def register_datasets(register):
    """Register :class:`~gentoolkit.Dataset` subclasses: ``register(cls, aliases=())``."""


@hookspec
def register_metrics(register):
    """Register :class:`~gentoolkit.Metric` subclasses for ``gentool evaluate``: ``register(cls, aliases=())``."""


@hookspec
def register_callbacks(register):
    """Register training :class:`~gentoolkit.Callback` subclasses that users switch on with
    ``gentool fit --callback NAME``: ``register(cls, aliases=())``."""


@hookspec
def register_commands(cli):
    """Add ``gentool`` subcommands: ``cli`` is a Click group, so ``@cli.command()`` and
    ``cli.add_command(command)`` work as on any group."""
