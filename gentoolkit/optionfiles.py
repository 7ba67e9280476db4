"""``gentool fit --config FILE`` and ``--from RUN``: a command's options read from a file or a run.

A config file is TOML or JSON whose keys are the command's long option names
(``batch-size`` or ``batch_size``, ``model`` for the argument); ``set`` is a table of
component options, nested (``[set.trainer] grad_clip = 1.0``) or dotted
(``"trainer.grad_clip" = 1.0``), as ``--set`` would give them. A run's own
``config.json`` (the JSON of a :class:`~gentoolkit.runconfig.RunConfig`) is a config
file too, and ``--from RUN`` reads that of a run directory: both are parsed into the
typed RunConfig, whose every setting becomes an option again, so a new run trains
exactly as the old one did. The options read are Click defaults, so whatever the
command line gives wins, and ``--set`` assignments are added after the file's.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, as a package before Python 3.11
    import tomli as tomllib

from gentoolkit.config import format_value
from gentoolkit.errors import GentoolError, unknown

if TYPE_CHECKING:
    from gentoolkit.runconfig import RunConfig

NOT_IN_FILES = ("config_file", "from_run", "resume_dir")  # options that name a file or run, not a setting


def read(path: Path, command: click.Command, ctx: click.Context) -> dict[str, Any]:
    """The option values a TOML or JSON config file (or a run's config.json) sets, by parameter name,
    each checked and converted by its option's type; every problem is one line naming the file."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise GentoolError(f"--config {path}: cannot read it ({exc.strerror or exc}).") from None
    try:
        data = json.loads(text) if Path(path).suffix.lower() == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        kind = "JSON" if Path(path).suffix.lower() == ".json" else "TOML"
        raise GentoolError(f"--config {path}: not valid {kind} ({exc}).") from None
    if not isinstance(data, Mapping):
        raise GentoolError(f"--config {path}: expected a table of options, got a {type(data).__name__}.")
    if isinstance(data.get("model"), Mapping):  # a run's config.json
        from gentoolkit.registry import get_toolkit
        from gentoolkit.runconfig import RunConfig

        return run_options(RunConfig.from_json(data, get_toolkit(), path))
    return _checked(data, path, command, ctx)


def read_run(run: Path) -> dict[str, Any]:
    """The option values that train a new run exactly as the run in folder ``run`` was trained."""
    from gentoolkit.registry import get_toolkit
    from gentoolkit.runconfig import RunConfig
    from gentoolkit.rundir import RunDir

    run_dir = RunDir(run)
    if not run_dir.holds_run():
        raise GentoolError(f"--from {run}: not a gentoolkit run (it has no {RunDir.CONFIG}).")
    return run_options(RunConfig.from_json(run_dir.read_config(), get_toolkit(), run_dir.path / RunDir.CONFIG))


def run_options(config: RunConfig) -> dict[str, Any]:
    """``gentool fit``'s option values for a run config: its model, data, components, their
    options (as ``--set`` assignments) and training options. Where it trained is left out:
    the device is a property of the machine, not of the run."""
    training, data = config.training, config.dataset
    sets = [f"{prefix}{key}={format_value(value)}"
            for prefix, options in (("", config.model.config), ("objective.", config.objective.config),
                                    ("trainer.", config.trainer.config), ("data.", data.config))
            for key, value in vars(options).items()]
    return {"model": config.model.name, "dataset": data.name, "data_dir": data.data_dir,
            "no_download": not data.download, "image_size": data.image_size, "epochs": training.epochs,
            "max_steps": training.max_steps, "batch_size": training.batch_size, "lr": training.lr,
            "seed": training.seed, "precision": training.precision, "lr_schedule": training.lr_schedule,
            "patience": training.patience, "keep_best": training.keep_best, "on_nan": training.on_nan,
            "compile_": training.compile, "channels_last": training.channels_last,
            "log_every": training.log_every, "callback_names": list(config.callbacks),
            "objective": config.objective.name, "trainer": config.trainer.name, "overrides": sets}


def _checked(data: Mapping[str, Any], path: Path, command: click.Command, ctx: click.Context) -> dict[str, Any]:
    """Each key of a config file as the parameter it names, its value converted by that parameter."""
    params = {name: p for p in command.params if p.name not in NOT_IN_FILES
              for name in (_key(p), _key(p).replace("-", "_"))}
    values: dict[str, Any] = {}
    for key, value in data.items():
        param = params.get(key)
        if param is None:
            raise GentoolError(f"--config {path}: {unknown('option', key, sorted(map(_key, params.values())))}")
        if param.name == "overrides":
            value = _assignments(value, path)
        elif param.multiple and isinstance(value, str):
            value = [value]
        try:
            values[param.name] = param.type_cast_value(ctx, value)
        except (click.BadParameter, TypeError, ValueError) as exc:
            raise GentoolError(f"--config {path}: {key} = {value!r}: {exc}") from None
    return values


def _key(param: click.Parameter) -> str:
    """A parameter's key in config files: its long option name without dashes (``batch-size``, ``set``)."""
    longs = [opt for opt in getattr(param, "opts", []) if opt.startswith("--")]
    return longs[0][2:] if longs else param.name


def _assignments(value: Any, path: Path) -> list[str]:
    """``set``: a table (nested or with dotted keys) or a list of ``KEY=VALUE`` strings, as ``--set`` strings."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    if not isinstance(value, Mapping):
        raise GentoolError(f"--config {path}: 'set' must be a table of options, e.g. [set] latent_dim = 32.")
    assignments = []
    for key, item in value.items():
        if isinstance(item, Mapping):
            assignments += [f"{key}.{inner}" for inner in _assignments(item, path)]
        else:
            assignments.append(f"{key}={format_value(item)}")
    return assignments
