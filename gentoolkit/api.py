"""What the CLI does, one call away in Python: fit, resume, load a run, sample.

    import gentoolkit.api as gt
    run = gt.fit("vae", dataset="mnist", epochs=5)
    images = run.sample(64).images        # N x C x H x W in [0, 1]
    run = gt.load_run("runs/bernoulli-vae/20261126-120000")
    run.config                            # the typed RunConfig, run.config.to_json() is config.json
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from gentoolkit import __version__, checkpoint, phases
from gentoolkit.cache import cache_dir
from gentoolkit.callbacks import Checkpoints, MetricsLog, ProgressBar, SampleGrids
from gentoolkit.config import apply_overrides, split_assignment
from gentoolkit.distributed import Group, process_group
from gentoolkit.errors import GentoolError
from gentoolkit.interfaces import DataOptions, ImageData, Model, Sampler, Samples
from gentoolkit.registry import Toolkit, get_toolkit, require_fit
from gentoolkit.resources import check_memory
from gentoolkit.runconfig import ComponentConfig, DataSource, RunConfig
from gentoolkit.rundir import RunDir
from gentoolkit.training import (
    Callback,
    EpochProgress,
    Interrupted,
    LoopState,
    TrainingLoop,
    TrainingOptions,
    trains_channels_last,
)

RUNS_DIR = Path("runs")
TARGETS = ("trainer", "objective", "data")  # --set prefixes; a bare key sets the model


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """Where data sets live: ``data_dir``, else ``$GENTOOL_DATA_DIR``, else the user cache."""
    if data_dir is not None:
        return Path(data_dir).expanduser().resolve()
    if os.environ.get("GENTOOL_DATA_DIR"):
        return Path(os.environ["GENTOOL_DATA_DIR"]).expanduser().resolve()
    return cache_dir("data")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; a device that is not there is a clear error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GentoolError(f"--device {name}: no CUDA GPU is available here; use --device cpu or auto.")
    if name == "mps" and not torch.backends.mps.is_available():
        raise GentoolError("--device mps: Apple's MPS backend is not available here; use --device cpu or auto.")
    try:
        return torch.device(name)
    except RuntimeError:
        raise GentoolError(f"--device {name}: not a device; use auto, cpu, cuda or mps.") from None


def split_overrides(assignments: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
    """Sort ``--set`` assignments by target: ``trainer.x``, ``objective.x``, ``data.x`` or the model."""
    split: dict[str, list[tuple[str, str]]] = {"model": [], **{t: [] for t in TARGETS}}
    for assignment in assignments:
        key, value = split_assignment(assignment)
        target, dot, rest = key.partition(".")
        if dot and target in TARGETS:
            split[target].append((rest, value))
        else:
            split["model"].append((key, value))
    return split


@dataclass
class Run:
    """A run directory: its config, metrics and (loaded on first use) its model."""

    path: Path
    config: RunConfig
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    toolkit: Toolkit = field(default_factory=get_toolkit, repr=False)
    weights: str = RunDir.WEIGHTS  # or RunDir.BEST_WEIGHTS

    @property
    def dir(self) -> RunDir:
        return RunDir(self.path)

    @cached_property
    def model(self) -> Model:
        """The trained model, rebuilt from config.json and the safetensors weights."""
        model = build_model(self.toolkit, self.config)
        self.dir.load_weights(model, self.weights)
        if trains_channels_last(model, self.config.training.channels_last):
            model.to(memory_format=torch.channels_last)
        return model.to(self.device).eval()

    @cached_property
    def data(self) -> ImageData:
        """The run's data set, loaded on first use (evaluation, samplers that start from real images)."""
        return load_data(self.toolkit, self.data_source())

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """The rows of metrics.jsonl, one per epoch."""
        return self.dir.metrics()

    def evaluate(self, metrics: Sequence[str], *, k: int | None = None, split: str = "test",
                 batch_size: int = 500, seed: int = 0, overrides: Sequence[str] = (),
                 limit: int | None = None, sampler: str | None = None,
                 sampler_options: Mapping[str, Any] | None = None, progress: bool = False) -> dict[str, Any]:
        """Compute the named metrics on a split of the run's data set.

        ``overrides`` are ``"metric.key=value"`` strings setting a metric's options;
        ``limit`` evaluates only the first that many images of the split. Metrics that
        compare generated images draw them with ``sampler`` (the model's default if None)
        and its ``sampler_options``, as :meth:`sample` does. ``progress`` shows each phase
        (loading the data, each metric and the phases it reports) on stderr.
        """
        classes = [self.toolkit.metrics.get(name) for name in metrics]  # unknown names fail first
        sets: dict[str, list[tuple[str, str]]] = {cls.name: [] for cls in classes}
        for assignment in overrides:
            key, value = split_assignment(assignment)
            target, _, option = key.partition(".")
            if target not in sets or not option:
                raise GentoolError(f"--set {assignment}: expected METRIC.KEY=VALUE for one of the metrics "
                                   f"asked for ({', '.join(sets)}).")
            sets[target].append((option, value))
        configs = [apply_overrides(cls.Config(), sets[cls.name], f"metric '{cls.name}'") for cls in classes]
        for cls in classes:
            require_fit("metric", cls, self.model)
        drawer = self.sampler(sampler, sampler_options)
        if k is not None and k <= 0:
            raise GentoolError(f"--k must be a positive integer, got {k}.")
        if batch_size <= 0:
            raise GentoolError(f"--batch-size must be a positive integer, got {batch_size}.")
        results: dict[str, Any] = {}
        with phases.reporting(Console(stderr=True)) if progress else contextlib.nullcontext():
            data, images = self._split(split, limit)
            for cls, config in zip(classes, configs, strict=True):
                torch.manual_seed(seed)
                generator = torch.Generator(device=self.device).manual_seed(seed)
                with phases.phase(cls.name):
                    results.update(cls(config).compute(self.model, images, k=k, batch_size=batch_size,
                                                       generator=generator, data=data, sampler=drawer))
        return results

    def _split(self, split: str, limit: int | None) -> tuple[ImageData, torch.Tensor]:
        """The run's data set and the first ``limit`` images of one split of it, on the run's device."""
        with phases.phase(f"loading data set '{self.config.dataset.name}'"):
            data = self.data
        images = {"train": data.train, "test": data.test}.get(split)
        if split not in ("train", "test"):
            raise GentoolError(f"--split {split}: use train or test.")
        if images is None:
            raise GentoolError(f"data set '{self.config.dataset.name}' has no {split} split.")
        if not isinstance(images, torch.Tensor):
            raise GentoolError(f"the {split} split is streamed from disk (too large for memory); "
                               "gentool evaluate needs it decoded in memory.")
        if limit is not None:
            if limit <= 0:
                raise GentoolError(f"--limit must be a positive integer, got {limit}.")
            images = images[:limit]
        return data, images.to(self.device)

    def data_source(self) -> DataSource:
        """The run's data set, read as its config.json says; a run directory is data, not instructions,
        so data is downloaded only into this user's own data root, and a folder named by the config
        (someone else's, perhaps) is read, never written, and shown."""
        source = self.config.dataset
        own_root = data_root()
        folder = source.data_dir or source.root
        if folder != own_root:
            warnings.warn(f"reading data set '{source.name}' from {folder}, as {self.path / RunDir.CONFIG} says; "
                          "nothing is written there.", stacklevel=2)
        return dataclasses.replace(source, download=source.download and source.root == own_root)

    def sampler(self, name: str | None = None, options: Mapping[str, Any] | None = None) -> Sampler:
        """The named sampler (the model's default if None) with ``options``, checked against the model;
        a sampler that starts from real images gets the run's data set."""
        drawer = build_sampler(self.toolkit, self.model, name or self.model.default_sampler, options or {})
        if drawer.needs_data:
            drawer.data = self.data
        return drawer

    def sample(self, n: int = 64, sampler: str | None = None, seed: int = 0,
               options: Mapping[str, Any] | None = None, label: int | None = None) -> Samples:
        """Draw ``n`` images with the named sampler (the model's default if None); a
        class-conditional model draws class ``label``, or one row per class when it is None."""
        (samples,) = self.sample_batches(n, sampler=sampler, seed=seed, options=options, label=label)
        return samples

    def sample_batches(self, n: int, batch_size: int | None = None, sampler: str | None = None, seed: int = 0,
                       options: Mapping[str, Any] | None = None, label: int | None = None) -> Iterator[Samples]:
        """Draw ``n`` images as :meth:`sample` does, ``batch_size`` at a time (None: all at once) with one
        random stream, so writing them never holds more than a batch; a batch holds whole groups of
        the sampler (an image and its reconstruction, an interpolation path)."""
        if n <= 0:
            raise GentoolError(f"-n must be a positive number of images, got {n}.")
        drawer = self.sampler(sampler, options)
        size = n if batch_size is None else max(drawer.group, batch_size - batch_size % drawer.group)
        check_memory(f"-n {n}" if size == n else f"batches of {size} images", size * self.config.image_spec.pixels * 4,
                     "ask for fewer images per call")
        torch.manual_seed(seed)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        for start in range(0, n, size):
            count = min(size, n - start)
            labels = class_labels(self.model, n, label, start, count)
            yield drawer.sample(self.model, count, generator, labels) if labels is not None \
                else drawer.sample(self.model, count, generator)


def class_labels(model: Model, n: int, label: int | None, start: int = 0, count: int | None = None
                 ) -> torch.Tensor | None:
    """The labels a sampler passes to ``model`` for images ``start`` to ``start + count`` (all n by
    default) of n: ``label``, or for a conditional model without one, the classes in turn row by
    row of a grid (None for unconditional models)."""
    classes = model.num_classes
    if not classes:
        if label is not None:
            raise GentoolError(f"--label {label}: model '{model.name}' is not class-conditional; "
                               "train it with --set conditional=true on a data set with labels.")
        return None
    count = n - start if count is None else count
    if label is None:
        per_row = max(1, -(-n // classes))  # a grid with one row per class
        return (torch.arange(start, start + count, device=model.device) // per_row).clamp_(max=classes - 1)
    if not 0 <= label < classes:
        raise GentoolError(f"--label {label}: model '{model.name}' knows classes 0 to {classes - 1}.")
    return torch.full((count,), label, dtype=torch.long, device=model.device)


def build_model(toolkit: Toolkit, config: RunConfig) -> Model:
    """Build the (untrained) model a run config describes, checking that its state can be saved."""
    entry = toolkit.models.entry(config.model.name)
    check_memory(f"model '{entry.name}' with these options", _state_bytes(entry.cls, config),
                 "choose smaller sizes with --set")
    try:
        model = entry.cls(config.model.config, config.image_spec)
    except ValueError as exc:  # the model refuses the data's shape or an option combination
        raise GentoolError(f"model '{entry.name}': {exc}") from None
    shared = checkpoint.shared_tensors(model)
    if shared:
        groups = "; ".join(" and ".join(f"'{name}'" for name in group) for group in shared)
        raise GentoolError(f"model '{entry.name}' from plugin '{entry.plugin}' ({entry.distribution}) cannot be "
                           f"saved: its state has tensors that share memory ({groups}), which safetensors cannot "
                           "store; the plugin must register a copy (tensor.clone()) or one of them only.")
    return model


def _state_bytes(cls: type, config: RunConfig) -> int:
    """The bytes of a model's weights and buffers, from a build on the meta device (which
    allocates nothing); 0 when the model cannot be built there."""
    try:
        with torch.device("meta"):
            probe = cls(config.model.config, config.image_spec)
    except Exception:  # noqa: BLE001 - meta tensors lack some operations; the real build then decides
        return 0
    return sum(t.numel() * t.element_size() for t in probe.state_dict().values())


def build_sampler(toolkit: Toolkit, model: Model, name: str, options: Mapping[str, Any]) -> Sampler:
    """The named sampler with ``options`` (parsed like command-line text), checked against ``model``."""
    sampler_cls = toolkit.samplers.get(name)
    assignments = [(k, str(v)) for k, v in options.items()]
    config = apply_overrides(sampler_cls.Config(), assignments, owner=f"sampler '{sampler_cls.name}'")
    require_fit("sampler", sampler_cls, model)
    return sampler_cls(config)


def grid_sampler(toolkit: Toolkit, model: Model) -> Sampler:
    """The sampler of the per-epoch grids: the model's choice for them, else its default sampler."""
    return build_sampler(toolkit, model, model.grid_sampler or model.default_sampler, model.grid_options)


def load_data(toolkit: Toolkit, source: DataSource) -> ImageData:
    """Load the data set a run config names."""
    data_cls = toolkit.datasets.get(source.name)
    return data_cls(source.config).load(DataOptions(root=source.root, data_dir=source.data_dir,
                                                    download=source.download, image_size=source.image_size))


def load_run(path: str | os.PathLike, device: str = "auto", best: bool = False) -> Run:
    """Open a run directory, checking it is one; ``best`` picks the weights kept by ``keep_best``."""
    weights = RunDir.BEST_WEIGHTS if best else RunDir.WEIGHTS
    run_dir = RunDir(path).check(weights)
    toolkit = get_toolkit()
    config = RunConfig.from_json(run_dir.read_config(), toolkit, run_dir.path / RunDir.CONFIG)
    return Run(run_dir.path, config, resolve_device(device), toolkit, weights=weights)


def latest_run(model: str, runs_dir: str | os.PathLike = RUNS_DIR, device: str = "auto",
               best: bool = False) -> Run:
    """The newest run of ``model`` (a name or alias) under ``runs_dir``."""
    name = get_toolkit().models.entry(model).name
    return load_run(RunDir.latest(runs_dir, name).path, device, best)


@dataclass
class _Plan:
    """Every component and option of a fit, resolved and checked before any work starts;
    the run config is complete once the data (and so the image spec) is known."""

    model: ComponentConfig
    objective: ComponentConfig
    trainer: ComponentConfig
    dataset: DataSource
    options: TrainingOptions
    device: torch.device
    callbacks: list[str]

    def run_config(self, data: ImageData) -> RunConfig:
        dataset = dataclasses.replace(self.dataset, train_size=len(data.train),
                                      test_size=len(data.test) if data.test is not None else 0)
        return RunConfig(model=self.model, objective=self.objective, trainer=self.trainer, dataset=dataset,
                         training=self.options, device=str(self.device), image_spec=data.spec,
                         callbacks=self.callbacks, gentoolkit_version=__version__)


def _plan(toolkit: Toolkit, model: str, dataset: str, *, data_dir, download, image_size, epochs,
          batch_size, lr, max_steps, seed, device, objective, trainer, overrides, goals, callbacks) -> _Plan:
    model_entry = toolkit.models.entry(model)
    model_cls = model_entry.cls
    data_cls = toolkit.datasets.get(dataset)
    objective_cls = toolkit.objectives.get(objective or model_cls.default_objective)
    trainer_cls = toolkit.trainers.get(trainer or model_cls.default_trainer)
    if not issubclass(objective_cls, trainer_cls.objective_type):
        raise GentoolError(f"trainer '{trainer_cls.name}' cannot optimise objective "
                           f"'{objective_cls.name}': it needs a {trainer_cls.objective_type.__name__}.")
    sets = split_overrides(overrides)
    if image_size is not None and image_size <= 0:
        raise GentoolError(f"--image-size must be a positive integer, got {image_size}.")
    recipe = model_cls.recipe
    options = TrainingOptions(epochs=recipe.epochs if epochs is None else epochs,
                              batch_size=recipe.batch_size if batch_size is None else batch_size,
                              lr=recipe.lr if lr is None else lr, max_steps=max_steps, seed=seed,
                              **goals)
    if (options.patience or options.keep_best) and trainer_cls.monitor is None:
        raise GentoolError(f"--patience and --keep-best need a metric that says which epoch is best, and trainer "
                           f"'{trainer_cls.name}' declares none (its losses do not measure quality); train a "
                           "fixed number of epochs and compare runs with gentool evaluate.")
    return _Plan(
        model=ComponentConfig(model_cls.name, apply_overrides(model_cls.Config(), sets["model"],
                                                              f"model '{model_cls.name}'"),
                              model_entry.plugin, model_entry.distribution,
                              toolkit.plugins[model_entry.plugin].version),
        objective=ComponentConfig(objective_cls.name, apply_overrides(
            objective_cls.Config(), sets["objective"], f"objective '{objective_cls.name}'")),
        trainer=ComponentConfig(trainer_cls.name, apply_overrides(
            trainer_cls.Config(), sets["trainer"], f"trainer '{trainer_cls.name}'")),
        dataset=DataSource(data_cls.name, apply_overrides(data_cls.Config(), sets["data"],
                                                          f"dataset '{data_cls.name}'"),
                           root=data_root(data_dir), data_dir=Path(data_dir).resolve() if data_dir else None,
                           download=download, image_size=image_size),
        options=options, device=resolve_device(device),
        callbacks=[toolkit.callbacks.entry(name).name for name in callbacks])


def _start(toolkit: Toolkit, run_dir: RunDir, device: torch.device, *, plan: _Plan | None = None,
           config: RunConfig | None = None, progress: bool, callbacks: Sequence[Callback],
           state: LoopState | None = None, resume_state: dict[str, Any] | None = None) -> Run:
    """Join the process group if torchrun started us, then train; shared by fit and resume."""
    with process_group(device) as (group, device):
        run_dir = RunDir(group.broadcast(str(run_dir.path)))  # rank 0 named it (timestamps differ)
        return _train(toolkit, run_dir, device, plan=plan, config=config, progress=progress, callbacks=callbacks,
                      state=state, resume_state=resume_state, group=group)


def _train(toolkit: Toolkit, run_dir: RunDir, device: torch.device, *, plan: _Plan | None,
           config: RunConfig | None, progress: bool, callbacks: Sequence[Callback], state: LoopState | None,
           resume_state: dict[str, Any] | None, group: Group) -> Run:
    """Load the data, complete the run config, build the components and run the loop."""
    options = plan.options if plan is not None else config.training
    torch.manual_seed(options.seed)
    data = load_data(toolkit, plan.dataset if plan is not None else config.dataset)
    if config is None:
        config = plan.run_config(data)
    model = build_model(toolkit, config).to(device)
    group.sync_module(model)
    torch.manual_seed(options.seed + group.rank)  # the same weights, different noise per process
    objective_cls = toolkit.objectives.get(config.objective.name)
    objective = objective_cls(config.objective.config)
    require_fit("objective", objective_cls, model)
    trainer = toolkit.trainers.get(config.trainer.name)(model, objective, config.trainer.config, options.lr)
    if resume_state is not None:  # weights, optimisers and random streams as they were
        run_dir.load_state_weights(model, resume_state)
        trainer.load_state_dict(resume_state["trainer"])
        trainer.skipped_steps = resume_state.get("skipped_steps", 0)  # metrics.jsonl counts over the whole run
    hooks: list[Callback] = []
    if group.is_main:  # only rank 0 writes
        run_dir.write_config(config.to_json())
        named = [toolkit.callbacks.get(name)(run_dir) for name in config.callbacks]
        hooks = [MetricsLog(run_dir), SampleGrids(run_dir), Checkpoints(run_dir), *named, *callbacks]
        if progress:
            hooks.insert(0, ProgressBar())
    loop = TrainingLoop(model, trainer, data, options, hooks, state, group, grid_sampler=grid_sampler(toolkit, model))
    if resume_state is not None:
        loop.set_rng_state(resume_state["rng"])
    try:
        loop.run()
    except Interrupted as exc:
        exc.run_dir = run_dir.path if loop.state.step > 0 else None
        raise
    run = Run(run_dir.path, config, device, toolkit)
    run.__dict__["model"] = model.eval()  # already loaded: skip the cached_property's reload
    return run


def fit(model: str, dataset: str = "mnist", *, data_dir: str | os.PathLike | None = None,
        download: bool = True, image_size: int | None = None, epochs: int | None = None,
        batch_size: int | None = None, lr: float | None = None, max_steps: int | None = None,
        seed: int = 0, device: str = "auto", precision: str = "fp32", lr_schedule: str = "constant",
        patience: int | None = None, keep_best: bool = False, on_nan: str = "stop", compile: bool = False,
        channels_last: bool | None = None, log_every: int = 50, objective: str | None = None,
        trainer: str | None = None, callback_names: Sequence[str] = (),
        run_dir: str | os.PathLike | None = None, runs_dir: str | os.PathLike = RUNS_DIR,
        overrides: Sequence[str] = (), progress: bool = False,
        callbacks: Sequence[Callback] = ()) -> Run:
    """Train ``model`` on ``dataset``; unset options come from the model's recipe.

    ``overrides`` are ``"key=value"`` strings as for ``--set``: a bare key sets the
    model config, ``trainer.key``, ``objective.key`` and ``data.key`` the others.
    ``callback_names`` switch on registered callbacks (``--callback``); ``callbacks``
    adds callback objects for this call only. ``compile`` compiles the model's networks with
    torch.compile, and ``channels_last`` picks the memory format of its 4-D weights (None: the
    model's preference; docs/training.md). ``log_every`` is how many steps apart loggers (tensorboard,
    csv, wandb) get the step metrics.
    """
    toolkit = get_toolkit()
    plan = _plan(toolkit, model, dataset, data_dir=data_dir, download=download, image_size=image_size,
                 epochs=epochs, batch_size=batch_size, lr=lr, max_steps=max_steps, seed=seed,
                 device=device, objective=objective, trainer=trainer, overrides=overrides,
                 goals={"precision": precision, "lr_schedule": lr_schedule, "patience": patience,
                        "keep_best": keep_best, "on_nan": on_nan, "compile": compile, "channels_last": channels_last,
                        "log_every": log_every},
                 callbacks=callback_names)
    target = RunDir(run_dir) if run_dir else RunDir.new(runs_dir, plan.model.name)
    if target.path.exists() and not target.path.is_dir():
        raise GentoolError(f"--run-dir {target}: that is a file, not a folder; choose another --run-dir.")
    with _writer_lock(target):  # before the data loads: a second process is refused at once
        if target.holds_run():
            if target.has_checkpoint():
                raise GentoolError(f"{target} already holds a run; continue it with --resume {target}, "
                                   "or choose another --run-dir.")
            target.clear_unfinished()  # it stopped before its first checkpoint: start it again
        return _start(toolkit, target, plan.device, plan=plan, progress=progress, callbacks=callbacks)


def _writer_lock(run_dir: RunDir):
    """The run's lock, held by the one process that writes it (rank 0 under torchrun)."""
    return run_dir.lock() if int(os.environ.get("RANK", "0")) == 0 else contextlib.nullcontext()


def resume(run_dir: str | os.PathLike, *, epochs: int | None = None, max_steps: int | None = None,
           device: str | None = None, precision: str | None = None, callback_names: Sequence[str] = (),
           progress: bool = False, callbacks: Sequence[Callback] = ()) -> Run:
    """Continue a run where its last checkpoint stopped, bit for bit.

    What may change on a resume: ``epochs`` (the new total), ``max_steps`` (the new total),
    ``device``, ``precision`` and extra ``callback_names``; everything else is the run's own.
    """
    target = RunDir(run_dir)
    if target.path.is_dir() and target.holds_run() and not target.has_checkpoint():
        raise GentoolError(f"{target} has no checkpoint to resume: the run stopped before its first one. "
                           f"Start it again with gentool fit ... --run-dir {target}.")
    target.check()
    toolkit = get_toolkit()
    with _writer_lock(target):
        config = RunConfig.from_json(target.read_config(), toolkit, target.path / RunDir.CONFIG)
        state = target.load_state()
        changes: dict[str, Any] = {"epochs": epochs, "max_steps": max_steps, "precision": precision}
        config.training = dataclasses.replace(config.training, **{k: v for k, v in changes.items() if v is not None})
        if device is not None:
            config.device = str(resolve_device(device))
        config.callbacks = [*config.callbacks, *(toolkit.callbacks.entry(name).name for name in callback_names
                                                 if toolkit.callbacks.entry(name).name not in config.callbacks)]
        options = config.training
        history = target.trim_metrics(state["epoch"])
        try:
            partial = EpochProgress(**state["partial"]) if state.get("partial") else None
        except TypeError:
            raise GentoolError(f"{target.path / RunDir.STATE} is a damaged training state (its epoch progress "
                               "has the wrong fields); resume from a backup, or train again.") from None
        loop_state = LoopState(epoch=state["epoch"], step=state["step"], history=history, partial=partial)
        if loop_state.epoch >= options.epochs or (options.max_steps and loop_state.step >= options.max_steps):
            raise GentoolError(f"{target} has already trained {loop_state.epoch} epochs ({loop_state.step} steps); "
                               "pass a larger total with --epochs (or --max-steps).")
        return _start(toolkit, target, resolve_device(config.device), config=config, progress=progress,
                      callbacks=callbacks, state=loop_state, resume_state=state)
