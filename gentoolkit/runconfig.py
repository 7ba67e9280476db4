"""The typed run config: everything needed to rebuild, resume or replay a run.

``config.json`` is its JSON form. It is parsed once, here, against the configs of
the components it names, so a component never parses JSON itself, and a run
written by an older version keeps loading: a field a newer plugin added takes
its default, and a field the plugin no longer has is one line naming the field,
the component and the version that wrote it.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gentoolkit.config import from_dict, to_dict
from gentoolkit.errors import GentoolError
from gentoolkit.interfaces import ImageSpec
from gentoolkit.training import TrainingOptions

if typing.TYPE_CHECKING:
    from gentoolkit.registry import Toolkit


@dataclass
class ComponentConfig:
    """A registered component by its primary name, its typed config and where it came from."""

    name: str
    config: Any  # an instance of the component's Config dataclass
    plugin: str | None = None  # entry point that registered it (recorded for models)
    distribution: str | None = None
    version: str | None = None  # of that distribution

    def to_json(self) -> dict[str, Any]:
        data = {"name": self.name, "config": to_dict(self.config)}
        data.update({k: getattr(self, k) for k in ("plugin", "distribution", "version") if getattr(self, k)})
        return data


@dataclass
class DataSource:
    """Which data set a run trains on and how it is read."""

    name: str
    config: Any  # the data set's Config dataclass
    root: Path  # the data root: --data-dir, else $GENTOOL_DATA_DIR, else the user cache
    data_dir: Path | None = None  # the --data-dir given, if any
    download: bool = True
    image_size: int | None = None
    train_size: int = 0  # images, filled in once the data is loaded
    test_size: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "config": to_dict(self.config), "root": str(self.root),
                "data_dir": str(self.data_dir) if self.data_dir else None, "download": self.download,
                "image_size": self.image_size, "train_size": self.train_size, "test_size": self.test_size}


@dataclass
class RunConfig:
    """A run: its components, its data, how it trains and the image spec its model was built for."""

    model: ComponentConfig
    objective: ComponentConfig
    trainer: ComponentConfig
    dataset: DataSource
    training: TrainingOptions
    device: str  # where it trained, e.g. "cpu" or "cuda"
    image_spec: ImageSpec
    callbacks: list[str] = field(default_factory=list)  # registered callbacks switched on with --callback
    gentoolkit_version: str = "unknown"

    def to_json(self) -> dict[str, Any]:
        return {
            "gentoolkit_version": self.gentoolkit_version,
            "model": self.model.to_json(),
            "objective": self.objective.to_json(),
            "trainer": self.trainer.to_json(),
            "dataset": self.dataset.to_json(),
            "training": {**dataclasses.asdict(self.training), "device": self.device},
            "image_spec": dataclasses.asdict(self.image_spec),
            "callbacks": list(self.callbacks),
        }

    @classmethod
    def from_json(cls, data: Any, toolkit: Toolkit, source: str | Path = "config.json") -> RunConfig:
        """Parse a run config read from JSON; every problem is one line naming ``source``."""
        if not isinstance(data, Mapping):
            raise GentoolError(f"{source} is not a gentoolkit run config: it holds a {type(data).__name__}, "
                               "not a JSON object.")
        version = str(data.get("gentoolkit_version", "unknown"))
        parse = _Parser(source, version)
        model = parse.component(data, "model", toolkit.models)
        objective = parse.component(data, "objective", toolkit.objectives)
        trainer = parse.component(data, "trainer", toolkit.trainers)
        dataset = parse.section(data, "dataset")
        data_cls = toolkit.datasets.get(parse.text(dataset, "dataset", "name"))
        image_size = dataset.get("image_size")
        if image_size is not None and (type(image_size) is not int or image_size <= 0):
            raise GentoolError(f"{source}: 'dataset.image_size' must be a positive integer or null, got "
                               f"{image_size!r}.")
        training = dict(parse.section(data, "training"))
        device = str(training.pop("device", "cpu"))
        spec = parse.section(data, "image_spec")
        return cls(
            model=model, objective=objective, trainer=trainer,
            dataset=DataSource(
                name=data_cls.name, config=parse.values(data_cls.Config, dataset.get("config", {}),
                                                        f"data set '{data_cls.name}'"),
                root=Path(parse.text(dataset, "dataset", "root")),
                data_dir=Path(dataset["data_dir"]) if dataset.get("data_dir") else None,
                download=bool(dataset.get("download", True)), image_size=image_size,
                train_size=int(dataset.get("train_size", 0)), test_size=int(dataset.get("test_size", 0))),
            training=parse.values(TrainingOptions, training, "the training options"),
            device=device,
            image_spec=parse.values(ImageSpec, spec, "the image spec"),
            callbacks=[str(c) for c in data.get("callbacks", [])],
            gentoolkit_version=version,
        )


@dataclass
class _Parser:
    """Reads sections of a config.json, turning every problem into one line naming the file."""

    source: str | Path
    version: str

    def section(self, data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
        value = data.get(key)
        if not isinstance(value, Mapping):
            missing = "has no" if value is None else "has a damaged"
            raise GentoolError(f"{self.source} {missing} '{key}' section; the file was edited or damaged. "
                               "Restore it from a backup, or train the run again.")
        return value

    def text(self, section: Mapping[str, Any], where: str, key: str) -> str:
        value = section.get(key)
        if not isinstance(value, str):
            raise GentoolError(f"{self.source}: '{where}.{key}' must be a string, got {value!r}.")
        return value

    def component(self, data: Mapping[str, Any], key: str, registry: Any) -> ComponentConfig:
        section = self.section(data, key)
        entry = registry.entry(self.text(section, key, "name"))
        owner = f"{registry.kind} '{entry.name}'"
        version = section.get("version")
        config = self.values(entry.cls.Config, section.get("config", {}), owner,
                             f"{entry.distribution} {version}" if version else None)
        return ComponentConfig(entry.name, config, section.get("plugin"), section.get("distribution"), version)

    def values(self, cls: type, values: Any, owner: str, writer: str | None = None) -> Any:
        """Build dataclass ``cls`` from JSON values: added fields take their defaults, removed
        ones and wrong types are one-line errors."""
        if not isinstance(values, Mapping):
            raise GentoolError(f"{self.source}: the config of {owner} must be a JSON object, got {values!r}.")
        names = {f.name for f in dataclasses.fields(cls)}
        extra = sorted(set(values) - names)
        if extra:
            wrote = f"gentoolkit {self.version}" + (f" with {writer}" if writer else "")
            raise GentoolError(f"{self.source}: {owner} has no option {', '.join(repr(e) for e in extra)} any more "
                               f"(the run was written by {wrote}); install the version that wrote it, or remove "
                               "the option from config.json if its default is what you want.")
        try:
            return from_dict(cls, values)
        except (TypeError, ValueError, GentoolError) as exc:
            raise GentoolError(f"{self.source}: the config of {owner} is not valid ({exc}).") from None
