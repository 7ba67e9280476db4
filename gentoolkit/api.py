"""What the CLI does, one call away in Python: fit, resume, load a run, sample.

    import gentoolkit.api as gt
    run = gt.fit("vae", dataset="mnist", epochs=5)
    images = run.sample(64).images        # N x C x H x W in [0, 1]
    run = gt.load_run("runs/bernoulli-vae/20261126-120000")
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from gentoolkit import __version__, checkpoint
from gentoolkit.callbacks import Checkpoints, MetricsLog, ProgressBar, SampleGrids
from gentoolkit.config import apply_overrides, from_dict, split_assignment, to_dict
from gentoolkit.distributed import Group, process_group
from gentoolkit.errors import GentoolError
from gentoolkit.interfaces import DataOptions, ImageData, ImageSpec, Model, Sampler, Samples
from gentoolkit.registry import Toolkit, get_toolkit, require_fit
from gentoolkit.training import (
    Callback,
    EpochProgress,
    Interrupted,
    LoopState,
    TrainingLoop,
    TrainingOptions,
)

RUNS_DIR = Path("runs")
TARGETS = ("trainer", "objective", "data")  # --set prefixes; a bare key sets the model


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """Where data sets live: ``data_dir``, else ``$GENTOOL_DATA_DIR``, else the user cache."""
    if data_dir is not None:
        return Path(data_dir).expanduser().resolve()
    if os.environ.get("GENTOOL_DATA_DIR"):
        return Path(os.environ["GENTOOL_DATA_DIR"]).expanduser().resolve()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "gentoolkit" / "data"


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
    config: dict[str, Any]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    toolkit: Toolkit = field(default_factory=get_toolkit, repr=False)
    weights: str = checkpoint.WEIGHTS  # or checkpoint.BEST_WEIGHTS

    @cached_property
    def model(self) -> Model:
        """The trained model, rebuilt from config.json and the safetensors weights."""
        model = build_model(self.toolkit, self.config)
        checkpoint.load_weights(model, self.path / self.weights)
        return model.to(self.device).eval()

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """The rows of metrics.jsonl, one per epoch."""
        return checkpoint.read_metrics(self.path / checkpoint.METRICS)

    def evaluate(self, metrics: Sequence[str], *, k: int | None = None, split: str = "test",
                 batch_size: int = 500, seed: int = 0, overrides: Sequence[str] = (),
                 limit: int | None = None, sampler: str | None = None,
                 sampler_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Compute the named metrics on a split of the run's data set.

        ``overrides`` are ``"metric.key=value"`` strings setting a metric's options;
        ``limit`` evaluates only the first that many images of the split. Metrics that
        compare generated images draw them with ``sampler`` (the model's default if None)
        and its ``sampler_options``, as :meth:`sample` does.
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
        data = load_data(self.toolkit, self.config["dataset"])
        images = {"train": data.train, "test": data.test}.get(split)
        if split not in ("train", "test"):
            raise GentoolError(f"--split {split}: use train or test.")
        if images is None:
            raise GentoolError(f"data set '{self.config['dataset']['name']}' has no {split} split.")
        if not isinstance(images, torch.Tensor):
            raise GentoolError(f"the {split} split is streamed from disk (too large for memory); "
                               "gentool evaluate needs it decoded in memory.")
        if limit is not None:
            if limit <= 0:
                raise GentoolError(f"--limit must be a positive integer, got {limit}.")
            images = images[:limit]
        images = images.to(self.device)
        results: dict[str, Any] = {}
        for cls, config in zip(classes, configs, strict=True):
            torch.manual_seed(seed)
            generator = torch.Generator(device=self.device).manual_seed(seed)
            results.update(cls(config).compute(self.model, images, k=k, batch_size=batch_size,
                                               generator=generator, data=data, sampler=drawer))
        return results

    def sampler(self, name: str | None = None, options: Mapping[str, Any] | None = None) -> Sampler:
        """The named sampler (the model's default if None) with ``options``, checked against the model."""
        sampler_cls = self.toolkit.samplers.get(name or self.model.default_sampler)
        assignments = [(k, str(v)) for k, v in (options or {}).items()]
        config = apply_overrides(sampler_cls.Config(), assignments, owner=f"sampler '{sampler_cls.name}'")
        require_fit("sampler", sampler_cls, self.model)
        return sampler_cls(config)

    def sample(self, n: int = 64, sampler: str | None = None, seed: int = 0,
               options: Mapping[str, Any] | None = None, label: int | None = None) -> Samples:
        """Draw ``n`` images with the named sampler (the model's default if None); a
        class-conditional model draws class ``label``, or one row per class when it is None."""
        if n <= 0:
            raise GentoolError(f"-n must be a positive number of images, got {n}.")
        drawer = self.sampler(sampler, options)
        labels = class_labels(self.model, n, label)
        torch.manual_seed(seed)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        return drawer.sample(self.model, n, generator, labels) if labels is not None \
            else drawer.sample(self.model, n, generator)


def class_labels(model: Model, n: int, label: int | None) -> torch.Tensor | None:
    """The labels a sampler passes to ``model``: ``label`` n times, or for a conditional model
    without one, the classes in turn row by row of a grid (None for unconditional models)."""
    classes = model.num_classes
    if not classes:
        if label is not None:
            raise GentoolError(f"--label {label}: model '{model.name}' is not class-conditional; "
                               "train it with --set conditional=true on a data set with labels.")
        return None
    if label is None:
        per_row = max(1, -(-n // classes))  # a grid with one row per class
        return (torch.arange(n, device=model.device) // per_row).clamp_(max=classes - 1)
    if not 0 <= label < classes:
        raise GentoolError(f"--label {label}: model '{model.name}' knows classes 0 to {classes - 1}.")
    return torch.full((n,), label, dtype=torch.long, device=model.device)


def build_model(toolkit: Toolkit, config: Mapping[str, Any]) -> Model:
    """Rebuild the (untrained) model a run's config.json describes."""
    try:
        name = config["model"]["name"]
        spec = ImageSpec(**config["image_spec"])
        values = config["model"]["config"]
    except (KeyError, TypeError):
        raise GentoolError("config.json does not describe a gentoolkit model; "
                           "the run was written by another program or is damaged.") from None
    cls = toolkit.models.get(name)
    return cls(from_dict(cls.Config, values), spec)


def grid_sampler(toolkit: Toolkit, model: Model) -> Sampler:
    """The sampler of the per-epoch grids: the model's choice for them, else its default sampler."""
    sampler_cls = toolkit.samplers.get(model.grid_sampler or model.default_sampler)
    require_fit("sampler", sampler_cls, model)
    assignments = [(k, str(v)) for k, v in model.grid_options.items()]
    return sampler_cls(apply_overrides(sampler_cls.Config(), assignments, owner=f"sampler '{sampler_cls.name}'"))


def load_data(toolkit: Toolkit, dataset: Mapping[str, Any]) -> ImageData:
    """Load the data set a run's config.json describes (its ``"dataset"`` entry)."""
    data_cls = toolkit.datasets.get(dataset["name"])
    return data_cls(from_dict(data_cls.Config, dataset["config"])).load(DataOptions(
        root=Path(dataset["root"]), data_dir=Path(dataset["data_dir"]) if dataset["data_dir"] else None,
        download=dataset["download"], image_size=dataset["image_size"]))


def load_run(path: str | os.PathLike, device: str = "cpu", best: bool = False) -> Run:
    """Open a run directory, checking it is one; ``best`` picks the weights kept by ``keep_best``."""
    path = checkpoint.check_run_dir(Path(path))
    config = checkpoint.read_json(path / checkpoint.CONFIG)
    if not isinstance(config, dict) or "model" not in config:
        raise GentoolError(f"{path / checkpoint.CONFIG} is not a gentoolkit run config.")
    weights = checkpoint.BEST_WEIGHTS if best else checkpoint.WEIGHTS
    if not (path / weights).is_file():
        raise GentoolError(f"{path} has no {weights}; train with --keep-best to keep the best epoch.")
    return Run(path, config, resolve_device(device), weights=weights)


def latest_run(model: str, runs_dir: str | os.PathLike = RUNS_DIR, device: str = "cpu",
               best: bool = False) -> Run:
    """The newest run of ``model`` (a name or alias) under ``runs_dir``."""
    name = get_toolkit().models.entry(model).name
    return load_run(checkpoint.latest_run_dir(Path(runs_dir), name), device, best)


@dataclass
class _Plan:
    """Every component and option of a fit, resolved and checked before any work starts."""

    config: dict[str, Any]
    options: TrainingOptions
    device: torch.device


def _plan(toolkit: Toolkit, model: str, dataset: str, *, data_dir, download, image_size, epochs,
          batch_size, lr, max_steps, seed, device, objective, trainer, overrides, goals) -> _Plan:
    model_entry = toolkit.models.entry(model)
    model_cls = model_entry.cls
    data_cls = toolkit.datasets.get(dataset)
    objective_cls = toolkit.objectives.get(objective or model_cls.default_objective)
    trainer_cls = toolkit.trainers.get(trainer or model_cls.default_trainer)
    if not issubclass(objective_cls, trainer_cls.objective_type):
        raise GentoolError(f"trainer '{trainer_cls.name}' cannot optimise objective "
                           f"'{objective_cls.name}': it needs a {trainer_cls.objective_type.__name__}.")
    sets = split_overrides(overrides)
    configs = {
        "model": apply_overrides(model_cls.Config(), sets["model"], f"model '{model_cls.name}'"),
        "objective": apply_overrides(objective_cls.Config(), sets["objective"], f"objective '{objective_cls.name}'"),
        "trainer": apply_overrides(trainer_cls.Config(), sets["trainer"], f"trainer '{trainer_cls.name}'"),
        "data": apply_overrides(data_cls.Config(), sets["data"], f"dataset '{data_cls.name}'"),
    }
    if image_size is not None and image_size <= 0:
        raise GentoolError(f"--image-size must be a positive integer, got {image_size}.")
    recipe = model_cls.recipe
    options = TrainingOptions(epochs=recipe.epochs if epochs is None else epochs,
                              batch_size=recipe.batch_size if batch_size is None else batch_size,
                              lr=recipe.lr if lr is None else lr, max_steps=max_steps, seed=seed,
                              **goals)
    resolved = resolve_device(device)
    root = data_root(data_dir)
    config = {
        "gentoolkit_version": __version__,
        "model": {"name": model_cls.name, "plugin": model_entry.plugin,
                  "distribution": model_entry.distribution,
                  "version": toolkit.plugins[model_entry.plugin].version,
                  "config": to_dict(configs["model"])},
        "objective": {"name": objective_cls.name, "config": to_dict(configs["objective"])},
        "trainer": {"name": trainer_cls.name, "config": to_dict(configs["trainer"])},
        "dataset": {"name": data_cls.name, "config": to_dict(configs["data"]), "root": str(root),
                    "data_dir": str(Path(data_dir).resolve()) if data_dir else None,
                    "download": download, "image_size": image_size},
        "training": {**dataclasses.asdict(options), "device": str(resolved)},
    }
    return _Plan(config, options, resolved)


def _start(toolkit: Toolkit, config: dict[str, Any], options: TrainingOptions, device: torch.device,
           run_dir: Path, *, progress: bool, callbacks: Sequence[Callback], state: LoopState | None,
           resume_state: dict[str, Any] | None = None) -> Run:
    """Join the process group if torchrun started us, then train; shared by fit and resume."""
    with process_group(device) as (group, device):
        run_dir = Path(group.broadcast(str(run_dir)))  # rank 0 named it (timestamps differ)
        return _train(toolkit, config, options, device, run_dir, progress=progress, callbacks=callbacks,
                      state=state, resume_state=resume_state, group=group)


def _train(toolkit: Toolkit, config: dict[str, Any], options: TrainingOptions, device: torch.device,
           run_dir: Path, *, progress: bool, callbacks: Sequence[Callback], state: LoopState | None,
           resume_state: dict[str, Any] | None, group: Group) -> Run:
    """Load the data, build the components and run the loop."""
    torch.manual_seed(options.seed)
    data = load_data(toolkit, config["dataset"])
    config["image_spec"] = {"channels": data.spec.channels, "height": data.spec.height,
                            "width": data.spec.width, "binary": data.spec.binary}
    config["dataset"].update(train_size=len(data.train),
                             test_size=len(data.test) if data.test is not None else 0)
    model = build_model(toolkit, config).to(device)
    group.sync_module(model)
    torch.manual_seed(options.seed + group.rank)  # the same weights, different noise per process
    objective_cls = toolkit.objectives.get(config["objective"]["name"])
    objective = objective_cls(from_dict(objective_cls.Config, config["objective"]["config"]))
    require_fit("objective", objective_cls, model)
    trainer_cls = toolkit.trainers.get(config["trainer"]["name"])
    trainer = trainer_cls(model, objective, from_dict(trainer_cls.Config, config["trainer"]["config"]),
                          options.lr)
    if resume_state is not None:  # weights, optimisers and random streams as they were
        checkpoint.load_checked(model, resume_state["model"], run_dir / checkpoint.TRAINER_STATE)
        trainer.load_state_dict(resume_state["trainer"])
    hooks: list[Callback] = []
    if group.is_main:  # only rank 0 writes
        run_dir.mkdir(parents=True, exist_ok=True)
        checkpoint.write_json(run_dir / checkpoint.CONFIG, config)
        named = [toolkit.callbacks.get(name)(run_dir) for name in config.get("callbacks", [])]
        hooks = [MetricsLog(run_dir), SampleGrids(run_dir), Checkpoints(run_dir), *named, *callbacks]
        if progress:
            hooks.insert(0, ProgressBar())
    loop = TrainingLoop(model, trainer, data, options, hooks, state, group, grid_sampler=grid_sampler(toolkit, model))
    if resume_state is not None:
        loop.set_rng_state(resume_state["rng"])
    try:
        loop.run()
    except Interrupted as exc:
        exc.run_dir = run_dir if loop.state.step > 0 else None
        raise
    run = Run(run_dir, config, device, toolkit)
    run.__dict__["model"] = model.eval()  # already loaded: skip the cached_property's reload
    return run


def fit(model: str, dataset: str = "mnist", *, data_dir: str | os.PathLike | None = None,
        download: bool = True, image_size: int | None = None, epochs: int | None = None,
        batch_size: int | None = None, lr: float | None = None, max_steps: int | None = None,
        seed: int = 0, device: str = "auto", precision: str = "fp32", lr_schedule: str = "constant",
        patience: int | None = None, keep_best: bool = False, on_nan: str = "stop", compile: bool = False,
        objective: str | None = None, trainer: str | None = None, callback_names: Sequence[str] = (),
        run_dir: str | os.PathLike | None = None, runs_dir: str | os.PathLike = RUNS_DIR,
        overrides: Sequence[str] = (), progress: bool = False,
        callbacks: Sequence[Callback] = ()) -> Run:
    """Train ``model`` on ``dataset``; unset options come from the model's recipe.

    ``overrides`` are ``"key=value"`` strings as for ``--set``: a bare key sets the
    model config, ``trainer.key``, ``objective.key`` and ``data.key`` the others.
    ``callback_names`` switch on registered callbacks (``--callback``); ``callbacks``
    adds callback objects for this call only. ``compile`` compiles the model's networks with
    torch.compile (docs/training.md).
    """
    toolkit = get_toolkit()
    plan = _plan(toolkit, model, dataset, data_dir=data_dir, download=download, image_size=image_size,
                 epochs=epochs, batch_size=batch_size, lr=lr, max_steps=max_steps, seed=seed,
                 device=device, objective=objective, trainer=trainer, overrides=overrides,
                 goals={"precision": precision, "lr_schedule": lr_schedule, "patience": patience,
                        "keep_best": keep_best, "on_nan": on_nan, "compile": compile})
    plan.config["callbacks"] = [toolkit.callbacks.entry(name).name for name in callback_names]
    path = Path(run_dir) if run_dir else checkpoint.new_run_dir(Path(runs_dir), plan.config["model"]["name"])
    if (path / checkpoint.CONFIG).exists():
        raise GentoolError(f"{path} already holds a run; continue it with --resume {path}, "
                           "or choose another --run-dir.")
    return _start(toolkit, plan.config, plan.options, plan.device, path, progress=progress,
                  callbacks=callbacks, state=None)


def _trim_metrics(path: Path, epochs: int) -> list[dict[str, Any]]:
    """Keep the metrics rows of the epochs the checkpoint holds; drop any written after it
    (a run killed between logging an epoch and saving it) and a half-written last line."""
    metrics = path / checkpoint.METRICS
    rows = [row for row in checkpoint.read_metrics(metrics) if row.get("epoch", 0) <= epochs]
    checkpoint.atomic_write(metrics, lambda tmp: tmp.write_text("".join(json.dumps(r) + "\n" for r in rows)))
    return rows


def resume(run_dir: str | os.PathLike, *, epochs: int | None = None, max_steps: int | None = None,
           device: str | None = None, progress: bool = False, callbacks: Sequence[Callback] = ()) -> Run:
    """Continue a run where its last checkpoint stopped; ``epochs`` is the new total."""
    path = checkpoint.check_run_dir(Path(run_dir))
    config = checkpoint.read_json(path / checkpoint.CONFIG)
    state = checkpoint.load_state(path / checkpoint.TRAINER_STATE)
    training = config["training"]
    if epochs is not None:
        training["epochs"] = epochs
    if max_steps is not None:
        training["max_steps"] = max_steps
    if device is not None:
        training["device"] = str(resolve_device(device))
    options = TrainingOptions(**{f.name: training[f.name] for f in dataclasses.fields(TrainingOptions)
                                 if f.name in training})
    history = _trim_metrics(path, state["epoch"])
    partial = EpochProgress(**state["partial"]) if state.get("partial") else None
    loop_state = LoopState(epoch=state["epoch"], step=state["step"], history=history, partial=partial)
    if loop_state.epoch >= options.epochs or (options.max_steps and loop_state.step >= options.max_steps):
        raise GentoolError(f"{path} has already trained {loop_state.epoch} epochs ({loop_state.step} steps); "
                           "pass a larger total with --epochs (or --max-steps).")
    return _start(get_toolkit(), config, options, resolve_device(training["device"]), path,
                  progress=progress, callbacks=callbacks, state=loop_state, resume_state=state)
