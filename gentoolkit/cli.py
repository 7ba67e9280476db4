"""The ``gentool`` command line: thin Click commands over :mod:`gentoolkit.api`.

This is the only place that turns errors into exit codes: a GentoolError
becomes one line on stderr and exit code 1; any other exception is a bug and
gets a one-line report too, with the traceback behind ``--debug`` or
``GENTOOL_DEBUG=1``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
import typing
import warnings
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gentoolkit import __version__, index
from gentoolkit.config import format_value
from gentoolkit.errors import GentoolError, debugging, unknown

# Everything that needs torch (gentoolkit.api, the registry, images, plots) is imported inside
# the commands that use it: gentool --help, --version and shell completion stay light.
if typing.TYPE_CHECKING:
    from gentoolkit import api
    from gentoolkit.info import ComponentInfo
    from gentoolkit.registry import Registry, Toolkit


def _toolkit() -> Toolkit:
    """The process-wide toolkit: every plugin loaded (this imports torch)."""
    from gentoolkit.registry import get_toolkit

    return get_toolkit()


def _index() -> index.Index:
    """The installed names for help and completion: from the toolkit where this process has
    already loaded one (tests, a plugin's command), else from the index file, loading nothing."""
    registry = sys.modules.get("gentoolkit.registry")
    toolkit = registry.loaded_toolkit() if registry is not None else None
    return toolkit.name_index() if toolkit is not None else index.load()


def _complete(*kinds: str, many: bool = False):
    """A ``shell_complete`` callback offering the installed names of ``kinds`` (all when none is
    given); with ``many``, the last of comma-separated names (``--metric fid,k<Tab>``)."""

    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list:
        from click.shell_completion import CompletionItem

        head, comma, last = incomplete.rpartition(",") if many else ("", "", incomplete)
        names = _index()
        offered: dict[str, str] = {}
        for kind in kinds or index.KINDS:
            for name, description in names.names(kind).items():
                offered.setdefault(name, description)
        return [CompletionItem(head + comma + name, help=description) for name, description in sorted(offered.items())
                if name.startswith(last)]

    return complete


def stdout_console() -> Console:
    """A console on stdout, made per use so it follows the current terminal (and test runner)."""
    return Console()


def stderr_console() -> Console:
    """A console on stderr, for messages that must not mix with output scripts read."""
    return Console(stderr=True, soft_wrap=True)  # messages stay one line, whatever the width


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    stderr_console().print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False)


def _configure(debug: bool) -> None:
    """What ``gentool`` sets up before any plugin loads: tracebacks on request, one-line warnings."""
    if debug:
        os.environ["GENTOOL_DEBUG"] = "1"
    warnings.showwarning = _show_warning


class GentoolGroup(click.Group):
    """Turns user errors into one line and exit code 1, bugs into a short report; finds the
    commands plugins add (``register_commands``) beside its own.

    Listing commands (``--help``, completion) reads the plugins' commands from the name index
    (:mod:`gentoolkit.index`); only running one of them loads the plugins.
    """

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is not None or ctx.resilient_parsing:  # gentool's own, or completion: no plugin loads
            return command
        commands = self._plugin_commands(ctx)
        if name in commands or name in commands.clashes:
            return commands.get(name)  # a contested name raises, saying how to choose
        return None

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_index().commands})

    def _command_help(self, plugin_commands: dict[str, str], limit: int) -> dict[str, str]:
        """Each command's short help: gentool's own from the commands, the plugins' from the index."""
        helps = {name: click.utils.make_default_short_help(text, limit) for name, text in plugin_commands.items()}
        helps.update({name: command.get_short_help_str(limit) for name, command in self.commands.items()
                      if not command.hidden})
        return dict(sorted(helps.items()))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        plugin_commands = _index().commands
        widest = max(map(len, [*self.commands, *plugin_commands]))
        with formatter.section("Commands"):
            formatter.write_dl(list(self._command_help(plugin_commands, formatter.width - 6 - widest).items()))

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list:
        from click.shell_completion import CompletionItem

        helps = self._command_help(_index().commands, limit=45)
        commands = [CompletionItem(name, help=text) for name, text in helps.items() if name.startswith(incomplete)]
        return commands + click.Command.shell_complete(self, ctx, incomplete)  # and the group's options

    def _plugin_commands(self, ctx: click.Context) -> Registry:
        """The command registry; this runs before the group's callback, so it configures first."""
        _configure(ctx.params.get("debug", False))
        return _toolkit().commands

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except GentoolError as exc:
            if debugging():
                traceback.print_exc()
            raise click.ClickException(str(exc)) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            if debugging():
                traceback.print_exc()
            raise click.ClickException(
                f"internal error: {type(exc).__name__}: {exc} (this is a bug; rerun with "
                "--debug or GENTOOL_DEBUG=1 for the traceback)") from None


@click.group(cls=GentoolGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gentool")
@click.option("--debug", is_flag=True, help="Show full tracebacks (same as GENTOOL_DEBUG=1).")
def cli(debug: bool) -> None:
    """Train and sample generative image models; extend them with plugins."""
    _configure(debug)


# ------------------------------------------------------------------ listing


def _print_registry(kind: str, family: bool = False) -> None:
    """A table of one kind of component: name, aliases, (family,) plugin, description."""
    columns = ["name", "aliases", *(["family"] if family else []), "plugin", "description"]
    table = Table(*columns, caption=f"gentool info NAME shows a {kind}'s options and what it needs")
    for e in _toolkit().registries[kind]:
        table.add_row(e.name, ", ".join(e.aliases), *([e.cls.family] if family else []), e.plugin,
                      e.cls.description())
    stdout_console().print(table)


@cli.command("list-models")
def list_models() -> None:
    """List the models that installed plugins provide."""
    _print_registry("model", family=True)


@cli.command("list-datasets")
def list_datasets() -> None:
    """List the data sets that installed plugins provide."""
    _print_registry("dataset")


@cli.command("list-metrics")
def list_metrics() -> None:
    """List the metrics that gentool evaluate can compute."""
    _print_registry("metric")


@cli.command("plugins")
@click.option("--all", "show_all", is_flag=True, help="Also show the core's own components.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def plugins(show_all: bool, as_json: bool) -> None:
    """List installed plugins, their versions, what each registers, failures and name clashes."""
    infos = [p for p in _toolkit().plugins.values() if show_all or p.module != "gentoolkit.standard"]
    if as_json:
        rows = [{"name": p.name, "distribution": p.distribution, "version": p.version,
                 "module": p.module, "builtin": p.builtin, "hooks": p.hooks,
                 "registers": p.registered, "error": p.error, "traceback": p.traceback,
                 "clashes": [{"kind": c.kind, "name": c.name, "plugins": c.plugins,
                              "winner": c.winner.plugin if c.winner else None, "message": c.message()}
                             for c in p.clashes]} for p in infos]
        click.echo(json.dumps(rows, indent=2))
        return
    notes = ["gentool info NAME shows a component's options"]
    if any(p.error for p in infos):
        notes.append("gentool --debug plugins shows why a plugin failed")
    if any(p.clashes for p in infos):
        notes.append("GENTOOL_PIN=NAME=PLUGIN settles a name clash")
    table = Table("plugin", "distribution", "version", "registers", "status", caption="; ".join(notes))
    for p in infos:
        registers = "; ".join(f"{kind}s: {', '.join(names)}" for kind, names in p.registered.items())
        status = [f"[red]failed: {escape(p.error)}[/]"] if p.error else []
        status += [f"[yellow]clash: {escape(c.outcome_for(p.name))}[/]" for c in p.clashes]
        table.add_row(p.name, p.distribution, p.version, registers, "\n".join(status) or "ok")
    stdout_console().print(table)


@cli.command("info")
@click.argument("name", shell_complete=_complete())
@click.option("--kind", type=click.Choice(index.KINDS), help="Which kind NAME is, where several kinds use it.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list (one object per match) for scripts.")
def info(name: str, kind: str | None, as_json: bool) -> None:
    """Show a component's options, its plugin and what it has or needs.

    NAME is a model, objective, sampler, trainer, data set, metric or callback (or an
    alias of one); every option is listed with its type, default and meaning.
    """
    from gentoolkit.info import describe

    found = describe(_toolkit(), name, kind)
    if as_json:
        click.echo(json.dumps([c.to_json() for c in found], indent=2))
        return
    if len(found) > 1:
        kinds = " and ".join(f"a{'n' if c.kind[0] in 'aeiou' else ''} {c.kind}" for c in found)
        stderr_console().print(f"'{name}' is {kinds}; --kind picks one.", highlight=False)
    for component in found:
        _print_component(component)


def _print_component(c: ComponentInfo) -> None:
    console = stdout_console()
    aliases = f", also {', '.join(c.aliases)}" if c.aliases else ""
    console.print(f"[bold]{c.kind} {escape(c.name)}[/]{escape(aliases)}: plugin '{escape(c.plugin)}' "
                  f"from {escape(c.distribution)} {escape(c.version)}", highlight=False)
    if c.description:
        console.print(escape(c.description), highlight=False)
    if c.kind == "model":
        console.print(f"capabilities: {', '.join(c.capabilities) or 'none'}", highlight=False)
        console.print("defaults: " + ", ".join(f"{k} {v}" for k, v in c.defaults.items()), highlight=False)
    elif c.requires:
        console.print(f"needs a model with: {', '.join(c.requires)}", highlight=False)
    if c.options:
        table = Table("option", "type", "default", "meaning", caption=f"set with: {c.set_with}")
        for o in c.options:
            table.add_row(o.name, escape(o.type), escape(format_value(o.default)), escape(o.meaning))
        console.print(table)
    else:
        console.print(f"no options; use: {c.set_with}", highlight=False)
    console.print()


# --------------------------------------------------------------------- fit


@cli.command("fit")
@click.argument("model", required=False, shell_complete=_complete("model"))
@click.option("--dataset", default="mnist", show_default=True, shell_complete=_complete("dataset"),
              help="Data set name (see list-datasets).")
@click.option("--data-dir", type=click.Path(path_type=Path),
              help="Data folder; default $GENTOOL_DATA_DIR, else ~/.cache/gentoolkit/data.")
@click.option("--no-download", is_flag=True, help="Fail instead of downloading missing data.")
@click.option("--image-size", type=int, help="Resize images to this square size.")
@click.option("--epochs", type=int, help="Total epochs (also when resuming); default: the model's recipe.")
@click.option("--max-steps", type=int, help="Stop after this many updates in total.")
@click.option("--batch-size", type=int, help="Images per update; default: the model's recipe.")
@click.option("--lr", type=float, help="Learning rate; default: the model's recipe.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or mps.")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True,
              help="Autocast precision; fp16 (CUDA only) adds loss scaling.")
@click.option("--lr-schedule", type=click.Choice(["constant", "cosine"]), default="constant", show_default=True,
              help="cosine decays the learning rate to 0 over the run.")
@click.option("--patience", type=int, help="Stop early after this many epochs without a better test loss.")
@click.option("--keep-best", is_flag=True, help="Also keep the best epoch's weights (best.safetensors).")
@click.option("--on-nan", type=click.Choice(["stop", "skip"]), default="stop", show_default=True,
              help="At a NaN/Inf loss: stop (keeping the last checkpoint) or skip that update and count it.")
@click.option("--compile", "compile_", is_flag=True,
              help="Compile the model's networks with torch.compile (slow first steps, faster after).")
@click.option("--channels-last/--no-channels-last", default=None,
              help="Keep convolution weights in channels-last (NHWC) memory; default: as the model prefers.")
@click.option("--callback", "callback_names", multiple=True, metavar="NAME", shell_complete=_complete("callback"),
              help="Switch on a registered callback, e.g. tensorboard, csv or wandb (see gentool plugins).")
@click.option("--log-every", type=int, default=50, show_default=True, metavar="N",
              help="Steps between the step metrics loggers (tensorboard, csv, wandb) get.")
@click.option("--objective", shell_complete=_complete("objective"), help="Objective name; default: the model's.")
@click.option("--trainer", shell_complete=_complete("trainer"), help="Trainer name; default: the model's.")
@click.option("--run-dir", type=click.Path(path_type=Path), help="Run directory; default runs/<model>/<time>/.")
@click.option("--resume", "resume_dir", type=click.Path(path_type=Path),
              help="Continue the run in this directory (MODEL is then optional).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Set a model option; trainer.KEY, objective.KEY, data.KEY set the others.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or per-epoch lines.")
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False), is_eager=True,
              callback=lambda ctx, param, value: _replay(ctx, value, "config"),
              help="Read options from a TOML or JSON file, or a run's config.json; flags given here override it.")
@click.option("--from", "from_run", type=click.Path(path_type=Path, file_okay=False), is_eager=True,
              callback=lambda ctx, param, value: _replay(ctx, value, "run"),
              help="Train a new run with the config of this run; flags given here override it.")
@click.pass_context
def fit(ctx, model, dataset, data_dir, no_download, image_size, epochs, max_steps, batch_size, lr, seed,
        device, precision, lr_schedule, patience, keep_best, on_nan, compile_, channels_last, callback_names, log_every,
        objective, trainer, run_dir, resume_dir, overrides, quiet, config_file, from_run) -> None:
    """Train MODEL on a data set and save the run.

    With --resume RUN, only --epochs, --max-steps, --device, --precision, --callback and
    --quiet may be given: everything else is the run's own.
    """
    from gentoolkit import api

    if resume_dir is not None:
        if model is not None:
            _check_resumed_model(resume_dir, model)
        given = [p.opts[0] for p in ctx.command.params if p.name not in RESUMABLE and _given(ctx, p.name)]
        if given:
            raise GentoolError(f"--resume continues a run with its own settings, so {', '.join(given)} cannot be "
                               "given with it; only --epochs, --max-steps, --device, --precision, --callback and "
                               "--quiet can. Start a new run (gentool fit MODEL ...) to change the others.")
        run = api.resume(resume_dir, epochs=epochs, max_steps=max_steps, progress=not quiet,
                         device=None if device == "auto" else device,
                         precision=precision if _given(ctx, "precision") else None,
                         callback_names=callback_names)
    else:
        if model is None:
            raise click.UsageError("give a MODEL to train (see 'gentool list-models'), or --resume RUN.")
        if _given(ctx, "overrides"):  # --set adds to the file's assignments; later ones win
            overrides = [*(ctx.default_map or {}).get("overrides", ()), *overrides]
        run = api.fit(model, dataset, data_dir=data_dir, download=not no_download, image_size=image_size,
                      epochs=epochs, batch_size=batch_size, lr=lr, max_steps=max_steps, seed=seed,
                      device=device, precision=precision, lr_schedule=lr_schedule, patience=patience,
                      keep_best=keep_best, on_nan=on_nan, compile=compile_, channels_last=channels_last,
                      log_every=log_every,
                      callback_names=callback_names, objective=objective, trainer=trainer, run_dir=run_dir,
                      overrides=overrides, progress=not quiet)
    if not quiet:
        stderr_console().print(f"saved run to {run.path}; sample it with: gentool sample --run {run.path} -n 64",
                     highlight=False)


# what a resume may change (MODEL, if given, must be the run's)
RESUMABLE = {"epochs", "max_steps", "device", "precision", "callback_names", "quiet", "resume_dir", "model"}


def _replay(ctx: click.Context, source: Path | None, kind: str) -> Path | None:
    """``--config FILE`` / ``--from RUN``: the options they set become the defaults of the others,
    so what the command line gives wins; the ``--set`` assignments of both add up."""
    if source is None or ctx.resilient_parsing:  # shell completion reads no file
        return source
    from gentoolkit import optionfiles

    values = optionfiles.read(source, ctx.command, ctx) if kind == "config" else optionfiles.read_run(source)
    defaults = dict(ctx.default_map or {})
    sets = [*defaults.get("overrides", ()), *values.pop("overrides", ())]
    ctx.default_map = {**defaults, **values, "overrides": sets}
    return source


def _given(ctx: click.Context, name: str) -> bool:
    """Whether the user typed this option (rather than Click filling in its default)."""
    return ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE


def _check_resumed_model(resume_dir: Path, model: str) -> None:
    """MODEL given with --resume must name the run's model."""
    from gentoolkit.rundir import RunDir

    trained = RunDir(resume_dir).check().read_config()["model"].get("name")
    if _toolkit().models.entry(model).name != trained:
        raise GentoolError(f"{resume_dir} is a run of '{trained}', not '{model}'; resume it without MODEL, "
                           f"or train '{model}' in a new run.")


# ------------------------------------------------------------------ sample


def _sampler_options(args: list[str]) -> dict[str, str]:
    """Parse ``--name value``, ``--name=value`` and bare ``--flag`` into a dict."""
    options: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise click.UsageError(f"unexpected argument '{arg}'.")
        name, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                value = args[i + 1]
                i += 1
            else:
                value = "true"
        options[name.replace("-", "_")] = value
        i += 1
    return options


def _sampler_args(ctx: click.Context, model: str | None) -> tuple[str | None, list[str]]:
    """MODEL and the sampler options left over after Click parsed a command's own options."""
    args = list(ctx.args)
    if model is not None and model.startswith("-"):  # no MODEL given: Click took a sampler option for it
        args.insert(0, model)
        model = None
    return model, args


def _checked_sampler_options(run: api.Run, sampler: str | None, args: list[str]) -> tuple[str, dict[str, str]]:
    """The sampler's name and its options from ``--name value`` arguments, each option
    checked against the sampler's config (an unknown one suggests the closest)."""
    extra = _sampler_options(args)
    sampler_cls = _toolkit().samplers.get(sampler or run.model.default_sampler)
    fields = sampler_cls.Config.__dataclass_fields__
    for name in extra:  # named as typed on the command line; Run.sampler parses the values
        if name not in fields:
            raise unknown(f"option for sampler '{sampler_cls.name}'", f"--{name.replace('_', '-')}",
                          [f"--{f.replace('_', '-')}" for f in fields])
    return sampler_cls.name, extra


@cli.command("sample", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("model", required=False, shell_complete=_complete("model"))
@click.option("--run", "run_dir", type=click.Path(path_type=Path),
              help="Run directory; default: the latest run of MODEL under runs/.")
@click.option("-n", "n", type=int, default=64, show_default=True, help="Number of images.")
@click.option("--sampler", shell_complete=_complete("sampler"),
              help="Sampler name; default: the model's. Its options follow as --name value.")
@click.option("--label", type=int, help="Class to draw (class-conditional models); default: one row per class.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same images.")
@click.option("--out", type=click.Path(), default="samples.png", show_default=True,
              help="A .png, .jpg or .webp grid; .safetensors for the tensor 'images' (N x C x H x W in [0, 1]); "
                   "or DIR/ for one PNG per image, written in batches.")
@click.option("--nrow", type=click.IntRange(min=1), help="Images per row of a grid; default: about square.")
@click.option("--scale", type=click.IntRange(min=1), default=1, show_default=True,
              help="Enlarge each pixel to SCALE x SCALE (nearest neighbour), e.g. 4 for MNIST grids.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or mps.")
@click.option("--best", is_flag=True, help="Use the best epoch's weights (runs trained with --keep-best).")
@click.option("--force", is_flag=True, help="Overwrite --out if it exists (never a file of a run directory).")
@click.pass_context
def sample(ctx, model, run_dir, n, sampler, label, seed, out, nrow, scale, device, best, force) -> None:
    """Draw images from a trained MODEL and save them.

    Sampler options go after the others, e.g. --sampler ranking --candidates 512.
    """
    from gentoolkit.images import check_output_folder, check_output_path, save_each, save_samples

    if n <= 0:
        raise GentoolError(f"-n must be a positive number of images, got {n}.")
    folder = out.endswith(("/", os.sep))  # DIR/: one file per image
    if folder:
        check_output_folder(Path(out), force)
    else:
        check_output_path(Path(out), force)
    model, args = _sampler_args(ctx, model)
    run = _run_for(model, run_dir, device, best)
    name, options = _checked_sampler_options(run, sampler, args)
    from gentoolkit.phases import reporting

    with reporting(stderr_console()):  # long sampling (many candidates, many steps) shows its progress
        if folder:
            batches = run.sample_batches(n, STREAMED_BATCH, sampler=name, seed=seed, options=options, label=label)
            written = save_each(batches, Path(out), n, scale)
        else:
            samples = run.sample(n, sampler=name, seed=seed, options=options, label=label)
            written = save_samples(samples, Path(out), force, nrow, scale, run.sampler(name, options).group)
    stderr_console().print(f"wrote {n} images from {run.path} to {', '.join(map(str, written))}", highlight=False)


STREAMED_BATCH = 256  # images drawn at once for --out DIR/, whatever -n is


# ---------------------------------------------------------------- evaluate


def _run_for(model: str | None, run_dir: Path | None, device: str, best: bool) -> api.Run:
    """The run named by --run, else the latest run of MODEL."""
    from gentoolkit import api

    if run_dir is None:
        if model is None:
            raise click.UsageError("give a MODEL (its latest run is used) or --run DIR.")
        return api.latest_run(model, device=device, best=best)
    run = api.load_run(run_dir, device=device, best=best)
    if model is not None and _toolkit().models.entry(model).name != run.config.model.name:
        raise GentoolError(f"{run_dir} is a run of '{run.config.model.name}', not '{model}'.")
    return run


@cli.command("evaluate", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("model", required=False, shell_complete=_complete("model"))
@click.option("--run", "run_dir", type=click.Path(path_type=Path), help="Run directory; default: the latest of MODEL.")
@click.option("--metric", "metrics", required=True, shell_complete=_complete("metric", many=True),
              help="Metric names, comma-separated (see list-metrics).")
@click.option("--k", type=int, help="Samples per metric: importance samples (nll), generated images (fid).")
@click.option("--split", default="test", show_default=True, type=click.Choice(["test", "train"]))
@click.option("--batch-size", type=int, default=500, show_default=True, help="Images per batch.")
@click.option("--limit", type=int, help="Evaluate only the first N images of the split (quicker estimates).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds every random draw.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or mps.")
@click.option("--best", is_flag=True, help="Use the best epoch's weights (runs trained with --keep-best).")
@click.option("--set", "overrides", multiple=True, metavar="METRIC.KEY=VALUE",
              help="Set a metric option, e.g. --set fid.features=classifier.")
@click.option("--sampler", shell_complete=_complete("sampler"),
              help="Sampler for the generated images (fid, kid, ...); its options follow as --name value.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object and nothing else on stdout.")
@click.option("--quiet", "-q", is_flag=True, help="No progress (each phase on stderr otherwise).")
@click.pass_context
def evaluate(ctx, model, run_dir, metrics, k, split, batch_size, limit, seed, device, best, overrides, sampler,
             as_json, quiet) -> None:
    """Measure a trained MODEL: ELBO, NLL, reconstruction error, FID, ...

    Metrics that generate images draw them with --sampler and its options, e.g.
    --metric fid --sampler ranking --candidates 512. Each phase (loading the data,
    training or loading the feature classifier, generating the images, each metric)
    shows its progress on stderr.
    """
    names = [m.strip() for m in metrics.split(",") if m.strip()]
    if not names:
        raise GentoolError("--metric names no metric; give one or more, e.g. --metric elbo,nll (see list-metrics).")
    model, args = _sampler_args(ctx, model)
    run = _run_for(model, run_dir, device, best)
    sampler_name, options = _checked_sampler_options(run, sampler, args)
    started = time.perf_counter()
    results = run.evaluate(names, k=k, split=split, batch_size=batch_size, seed=seed, overrides=overrides,
                           limit=limit, sampler=sampler_name, sampler_options=options, progress=not quiet)
    seconds = round(time.perf_counter() - started, 2)
    settings = {"run": str(run.path), "model": run.config.model.name, "metrics": names,
                "k": k, "split": split, "limit": limit, "seed": seed, "weights": run.weights,
                "set": list(overrides), "sampler": sampler_name, "sampler_options": options, "seconds": seconds}
    if as_json:
        click.echo(json.dumps({**results, "settings": settings}))
        return
    table = Table("metric", "value", title=f"{settings['model']} ({run.path}, {split} split)",
                  caption=f"evaluated in {seconds:.1f} s")
    for key, value in results.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    stdout_console().print(table)


@cli.command("show")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--config", "as_config", is_flag=True, help="Print the run's whole config.json instead, for scripts.")
@click.option("--plot", type=click.Path(path_type=Path),
              help="Write the metric curves to this PNG: one panel per metric, train and test on one axis.")
@click.option("--force", is_flag=True, help="Overwrite --plot if it exists (never a file of a run directory).")
def show(run_dir, as_config, plot, force) -> None:
    """Summarise a run (model, data, epochs, best value) and tabulate its per-epoch metrics."""
    from gentoolkit import api
    from gentoolkit.images import check_output_path
    from gentoolkit.plots import plot_metrics

    if plot is not None:
        if plot.suffix.lower() != ".png":
            raise GentoolError(f"--plot {plot}: the curves are drawn as a PNG; give a .png file name.")
        check_output_path(plot, force, option="--plot")
    run = api.load_run(run_dir)
    if as_config:
        click.echo(json.dumps(run.config.to_json(), indent=2))
        return
    console = stdout_console()
    rows = run.metrics
    for line in _summary(run, rows):
        console.print(line, highlight=False, markup=False)
    if not rows:
        return
    for table in _metric_tables(console, rows, title=str(run.path)):
        console.print(table)
    if plot is not None:
        curves = _by_split([r for r in rows if not r.get("partial")])  # a partial epoch's means are not comparable
        names = list(dict.fromkeys(name for split in curves.values() for r in split for name in r if name != "epoch"))
        plot_metrics(curves, names, plot, title=str(run.path))
        stderr_console().print(f"wrote {plot}", highlight=False)


def _by_split(rows: list[dict]) -> dict[str, list[dict]]:
    """Epoch rows as one series per split, ``train_loss`` becoming ``loss`` in the train series, so
    that plotting draws train and test of each metric on one axis."""
    return {split: [{"epoch": r["epoch"], **{k.removeprefix(f"{split}_"): v for k, v in r.items()
                                              if k.startswith(f"{split}_")}} for r in rows]
            for split in ("train", "test")}


def _summary(run: api.Run, rows: list[dict]) -> list[str]:
    """What a run is, how far it got and its best epoch by the trainer's monitor, in a few lines."""
    config = run.config
    data = config.dataset
    lines = [f"{config.model.name} on {data.name}: {data.train_size:,} training and {data.test_size:,} test images"]
    if not rows:
        return [*lines, "no epoch finished yet"]
    last = rows[-1]
    done = last["epoch"] - 1 if last.get("partial") else last["epoch"]
    seconds = sum(r.get("seconds") or 0 for r in rows)
    stopped = f"; stopped in epoch {last['epoch']}, --resume finishes it" if last.get("partial") else ""
    lines.append(f"{done} of {config.training.epochs} epochs, {last['step']:,} steps, {seconds / 60:.1f} min on "
                 f"{config.device}{stopped}")
    monitor = _toolkit().trainers.get(config.trainer.name).monitor
    finished = [r for r in rows if not r.get("partial")]
    for key in (f"test_{monitor}", f"train_{monitor}") if monitor else ():
        scored = [r for r in finished if isinstance(r.get(key), (int, float))]
        if scored:
            best = min(scored, key=lambda r: r[key])
            kept = "; best.safetensors holds it" if config.training.keep_best else ""
            lines.append(f"best {key} {best[key]:.4g} at epoch {best['epoch']}{kept}")
            break
    held_out = {k: v for k, v in last.items() if k.startswith("test_") and isinstance(v, float)}
    if held_out:
        lines.append("last epoch: " + ", ".join(f"{k} {v:.4g}" for k, v in held_out.items()))
    return lines


def _metric_tables(console: Console, rows: list[dict], title: str) -> list[Table]:
    """The per-epoch metrics as tables that fit the console: whole column names, and as many
    tables as the columns need, each starting with the epoch."""
    keys = list(dict.fromkeys(k for r in rows for k in r if k not in ("epoch", "step", "partial",
                                                                       "images_per_second")))
    cells = {k: [f"{r[k]:.4g}" if isinstance(r.get(k), float) else str(r.get(k, "")) for r in rows] for k in keys}
    epochs = [f"{r['epoch']}*" if r.get("partial") else str(r["epoch"]) for r in rows]
    unbounded = console.options.update(max_width=sys.maxsize)  # the width a table wants, not what it gets
    groups: list[list[str]] = [[]]
    for key in keys:
        trial = _table([*groups[-1], key], epochs, cells, title)
        if groups[-1] and console.measure(trial, options=unbounded).maximum > console.width:
            groups.append([])
        groups[-1].append(key)
    caption = "* stopped in this epoch" if any(r.get("partial") for r in rows) else None
    return [_table(group, epochs, cells, title if i == 0 else None, caption if i == len(groups) - 1 else None)
            for i, group in enumerate(groups)]


def _table(keys: list[str], epochs: list[str], cells: dict[str, list[str]], title: str | None,
           caption: str | None = None) -> Table:
    table = Table("epoch", *keys, title=title, caption=caption)
    for column in table.columns:
        column.no_wrap = True
    for i, epoch in enumerate(epochs):
        table.add_row(epoch, *(cells[k][i] for k in keys))
    return table


def main() -> None:
    """Console-script entry point: exit 130 on Ctrl-C without a traceback."""
    try:
        cli.main(standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except (click.Abort, KeyboardInterrupt) as exc:
        cause = exc.__cause__ if isinstance(exc, click.Abort) else exc
        signum = getattr(cause, "signum", signal.SIGINT)
        run_dir = getattr(cause, "run_dir", None)
        resume = f"; checkpoint saved, continue with: gentool fit --resume {run_dir}" if run_dir else ""
        stderr_console().print(f"interrupted{resume}", highlight=False)
        sys.exit(128 + signum)
