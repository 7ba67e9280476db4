"""The core assumes nothing a family does not have: a model with no latent code, class labels
travelling with the batch, trainers declaring what early stopping watches, models the
checkpoint format cannot store, and the typed run config."""

from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from torch import Tensor, nn

import gentoolkit.api as gt
from gentoolkit import (
    GentoolError,
    ImageSpec,
    LatentModel,
    Loss,
    Model,
    Objective,
    Recipe,
    Sampler,
    Samples,
    capabilities,
    conditional,
    eval_mode,
    has_capability,
    hookimpl,
    to_unit,
)
from gentoolkit.cli import cli
from gentoolkit.runconfig import RunConfig
from gentoolkit.rundir import RunDir
from gentoolkit.testing import toolkit_with


class ClassMeans(Model):
    """No latent code at all: one learned mean image per class (or one for all), drawn with noise."""

    name = "class-means"
    family = "test"
    default_objective = "means-mse"
    default_sampler = "means"
    recipe = Recipe(lr=0.05, batch_size=64, epochs=1)

    @dataclass
    class Config:
        conditional: bool = False  # one mean per class of the data set

    def __init__(self, config: Config, spec: ImageSpec):
        super().__init__(config, spec)
        if config.conditional:
            if not spec.classes:
                raise ValueError("conditional=true needs a data set with class labels")
            self.num_classes = spec.classes
        self.means = nn.Parameter(torch.zeros(max(self.num_classes, 1), *spec.shape))
        self.labels_seen = 0  # labels that reached the objective in training

    def prepare(self, batch: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return to_unit(batch)

    def mean_of(self, labels: Tensor | None, n: int) -> Tensor:
        return self.means[labels] if labels is not None else self.means[0].expand(n, *self.spec.shape)


class MeansMSE(Objective):
    """Squared distance to the (class) mean image."""

    name = "means-mse"

    def loss(self, model: ClassMeans, x: Tensor, labels: Tensor | None = None) -> Loss:
        if conditional(model):
            assert labels is not None and len(labels) == len(x)
            model.labels_seen += len(labels)
        return Loss((x - model.mean_of(labels, len(x))).square().flatten(1).sum(1).mean())


class MeansSampler(Sampler):
    """The mean image plus a little noise: a sampler for a model with no prior to draw from."""

    name = "means"

    def sample(self, model: ClassMeans, n: int, generator: torch.Generator, labels: Tensor | None = None) -> Samples:
        with eval_mode(model):
            noise = 0.01 * torch.randn(n, *model.spec.shape, generator=generator, device=model.device)
            return Samples(images=(model.mean_of(labels, n) + noise).clamp(0, 1))


@hookimpl
def register_models(register):
    register(ClassMeans)


@hookimpl
def register_objectives(register):
    register(MeansMSE)


@hookimpl
def register_samplers(register):
    register(MeansSampler)


plugin = types.SimpleNamespace(register_models=register_models, register_objectives=register_objectives,
                               register_samplers=register_samplers, __name__="class_means")


@pytest.fixture
def means(toy):
    with toolkit_with(plugin, __import__("toy_plugin")) as toolkit:
        yield toolkit


def fit(tmp_path, *overrides, **options):
    return gt.fit("class-means", "shapes", run_dir=tmp_path / "run", max_steps=20, device="cpu",
                  overrides=[*overrides, "data.train_size=1280", "data.test_size=256"], **options)


def test_a_model_with_no_latent_code_trains_samples_and_draws_its_grids(means, tmp_path):
    run = fit(tmp_path)
    assert capabilities(run.model) == [] and not isinstance(run.model, LatentModel)
    assert (tmp_path / "run" / "samples" / "epoch-001.png").is_file()  # drawn by its own sampler
    assert run.sample(4).images.shape == (4, 1, 28, 28)
    with pytest.raises(GentoolError, match="sampler 'prior' does not work with model 'class-means': "
                                           "it needs a model with LatentModel"):
        run.sample(4, sampler="prior")


def test_labels_travel_with_the_batch_to_a_conditional_model(means, tmp_path):
    run = fit(tmp_path, "conditional=true")
    assert run.config.image_spec.classes == 4 and run.model.num_classes == 4
    assert run.model.labels_seen == 20 * 64 + 256  # every training and held-out image came with its label
    per_class = [run.sample(8, label=c, seed=1).images.mean(0) for c in range(4)]
    assert all((per_class[i] - per_class[j]).abs().mean() > 0.01 for i in range(4) for j in range(i))
    assert gt.class_labels(run.model, 8, None).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]  # no label: a row per class
    with pytest.raises(GentoolError, match="knows classes 0 to 3"):
        run.sample(2, label=4)


def test_label_for_an_unconditional_model_and_labels_missing_are_one_line(means, tmp_path):
    run = fit(tmp_path)
    with pytest.raises(GentoolError, match="--label 1: model 'class-means' is not class-conditional"):
        run.sample(2, label=1)
    with pytest.raises(GentoolError, match="needs a data set with class labels"):
        gt.fit("class-means", "stripes", run_dir=tmp_path / "r2", max_steps=2, overrides=["conditional=true"])


def test_sample_label_from_the_command_line(means, tmp_path, monkeypatch):
    fit(tmp_path, "conditional=true")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["sample", "--run", "run", "-n", "3", "--label", "2", "--out", "x.safetensors"])
    assert result.exit_code == 0, result.output
    images = load_file(tmp_path / "x.safetensors")["images"]
    means = gt.load_run(tmp_path / "run").model.means.detach().clamp(0, 1)
    distances = [(images.mean(0) - mean).abs().mean().item() for mean in means]
    assert min(range(4), key=distances.__getitem__) == 2  # the images are of the class asked for


def test_patience_needs_a_trainer_that_declares_a_monitor(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["fit", "dcgan", "--dataset", "shapes", "--patience", "3"])
    assert result.exit_code == 1 and "trainer 'adversarial' declares none" in result.output
    assert not (tmp_path / "runs").exists()  # refused before any work


def test_keep_best_watches_the_trainers_monitor(toy, tmp_path):
    run = gt.fit("pixels", "stripes", run_dir=tmp_path / "run", epochs=3, keep_best=True)
    best = json.loads((tmp_path / "run" / RunDir.BEST_INFO).read_text())
    values = [row["test_loss"] for row in run.metrics]
    assert best["test_loss"] == min(values) and best["epoch"] == values.index(min(values)) + 1


class SharedBuffers(ClassMeans):
    name = "shared-buffers"

    def __init__(self, config, spec):
        super().__init__(config, spec)
        table = torch.zeros(4)
        self.register_buffer("first", table)
        self.register_buffer("second", table[1:])  # overlaps 'first'


@hookimpl(specname="register_models")
def register_shared(register):
    register(SharedBuffers)


def test_a_model_safetensors_cannot_store_is_refused_when_built(means, tmp_path):
    with toolkit_with(plugin, types.SimpleNamespace(register_models=register_shared, __name__="shared")):
        with pytest.raises(GentoolError, match=r"model 'shared-buffers' from plugin 'shared' \(\(test\)\) cannot be "
                                               r"saved: .*'first' and 'second'"):
            gt.fit("shared-buffers", "shapes", run_dir=tmp_path / "run", max_steps=2)
    assert not (tmp_path / "run" / RunDir.WEIGHTS).exists()


def test_run_config_round_trips_through_json(toy, tmp_path):
    run = gt.fit("pixels", "stripes", run_dir=tmp_path / "run", max_steps=3, overrides=["init=0.5"])
    text = json.loads((tmp_path / "run" / RunDir.CONFIG).read_text())
    config = RunConfig.from_json(text, toy)
    assert config == run.config and config.to_json() == text
    assert config.model.config.init == 0.5 and config.training.max_steps == 3


def test_metrics_appends_keep_every_row(tmp_path):
    run_dir = RunDir(tmp_path)
    (tmp_path / RunDir.METRICS).write_text('{"epoch": 1}')  # a last line without its newline
    run_dir.append_metrics({"epoch": 2})
    assert run_dir.metrics() == [{"epoch": 1}, {"epoch": 2}]
    assert not list(tmp_path.glob(".*tmp*"))  # written through a temporary file, then renamed


def test_plugin_outputs_cannot_replace_the_runs_own_files(tmp_path):
    run_dir = RunDir(tmp_path)
    assert run_dir.output("tensorboard") == tmp_path / "tensorboard"
    for name in (RunDir.WEIGHTS, RunDir.CONFIG, "../elsewhere", ".hidden"):
        with pytest.raises(GentoolError, match="not a free name in a run directory"):
            run_dir.output(name)


class _WithNetworks(typing.Protocol):
    netg: nn.Module

    def generate(self, z: Tensor) -> Tensor: ...


def test_capabilities_see_what_a_module_keeps_in_its_own_dicts():
    """isinstance(model, Protocol) looks attributes up statically since Python 3.12 and misses
    submodules; has_capability does not, on any Python."""

    class Generator(nn.Module):
        def __init__(self):
            super().__init__()
            self.netg = nn.Linear(2, 2)  # kept in Module._modules, not in the instance's __dict__

        def generate(self, z):
            return self.netg(z)

    assert has_capability(Generator(), _WithNetworks) and not has_capability(nn.Linear(2, 2), _WithNetworks)
