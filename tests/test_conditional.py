"""Class-conditional VAEs and DCGAN (``--set conditional=true``): labels reach the networks,
each class is drawn as asked, the likelihood metrics evaluate log p(x | y) with the true labels,
unlabelled data is a one-line error, unconditional models stay exactly what they were, and
label-accuracy measures how often a sample shows the class it was drawn for."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import test_metrics
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from test_dcgan import Noise28
from test_metrics import labelled, seeded, tiny_data
from torch import Tensor, nn

import gentoolkit.api as gt
from gentoolkit import GentoolError, ImageSpec, Model, hookimpl, importance_weighted_log_prob, to_unit
from gentoolkit.cli import cli
from gentoolkit.standard import PriorSampler
from gentoolkit.testing import toolkit_with
from gentoolkit_dcgan import DCGAN, AdversarialTrainer, GANObjective
from gentoolkit_metrics import LabelAccuracy
from gentoolkit_metrics.likelihood import evaluated_labels
from gentoolkit_vae import ELBO, BernoulliVAE, GaussianVAE

FIXTURES = Path(__file__).parent / "fixtures" / "runs-0.1.0"
cache = test_metrics.cache  # the fixture: an empty user cache, and quickly trained classifiers in it
SPEC = ImageSpec(1, 8, 8, classes=3)


def vae(cls=BernoulliVAE, spec: ImageSpec = SPEC, **options) -> BernoulliVAE | GaussianVAE:
    torch.manual_seed(0)
    return cls(cls.Config(**{"hidden": (16,), "latent_dim": 2, "channels": (4, 8), "conditional": True, **options}),
               spec).eval()


def dcgan(conditional: bool = True, classes: int = 3) -> DCGAN:
    torch.manual_seed(0)
    return DCGAN(DCGAN.Config(nz=8, ngf=4, ndf=4, conditional=conditional), ImageSpec(1, 28, 28, classes=classes))


def one_line_error(result, fragment: str) -> None:
    assert result.exit_code != 0 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and fragment in errors[0], result.output


# -------------------------------------------------------------------- VAE


@pytest.mark.parametrize("cls", [BernoulliVAE, GaussianVAE])
@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_labels_reach_the_vae_encoder_and_decoder(cls, arch):
    model = vae(cls, arch=arch)
    x = model.prepare(torch.randint(0, 256, (3, 1, 8, 8), dtype=torch.uint8, generator=seeded()))
    z = torch.randn(3, 2, generator=seeded())
    labels = [torch.tensor([0, 1, 2]), torch.tensor([1, 2, 0])]
    with torch.no_grad():
        codes = [model.encode(x, y)[0] for y in labels]
        images = [model.generate(z, y) for y in labels]
    assert model.num_classes == 3
    assert not torch.allclose(codes[0], codes[1]) and not torch.allclose(images[0], images[1])
    with pytest.raises(ValueError, match="is class-conditional: it needs the labels of the batch"):
        model.encode(x)


def test_the_conditional_bound_is_the_bound_of_p_x_given_y():
    """The ELBO objective with labels is the ELBO of model.given(labels), draw for draw, and the
    labels matter: other labels give another bound."""
    model = vae()
    x = model.prepare(torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8, generator=seeded()))
    labels = torch.tensor([0, 2, 1, 2])
    losses = []
    for view_labels, loss_labels in ((labels, None), (None, labels), (None, (labels + 1) % 3)):
        torch.manual_seed(5)
        objective = ELBO(ELBO.Config(samples=3))
        losses.append(objective.loss(model.given(view_labels), x) if view_labels is not None
                      else objective.loss(model, x, loss_labels))
    torch.testing.assert_close(losses[0].value, losses[1].value, rtol=0, atol=0)
    assert losses[1].value != losses[2].value


def test_given_repeats_the_labels_for_draws_stacked_sample_by_sample():
    model = vae()
    labels = torch.tensor([2, 0, 1])
    z = torch.randn(4, 3, 2, generator=seeded())  # S x N x L, as posterior_chunks stacks them
    with torch.no_grad():
        stacked = model.given(labels).decode(z.flatten(0, 1)).view(4, 3, 1, 8, 8)
        for s in range(4):
            torch.testing.assert_close(stacked[s], model.decode(z[s], labels))
    with pytest.raises(ValueError, match="5 rows are not whole copies of a batch of 3 labelled images"):
        model.given(labels).decode(torch.zeros(5, 2))


# ------------------------------------------------------------------ DCGAN


def test_labels_reach_the_generator_and_the_projection_discriminator():
    """D(x, y) = psi(phi(x)) + embed(y) . sum phi(x): two labels differ by exactly the projection."""
    model = dcgan().eval()
    z = model.sample_latent(3, seeded())
    with torch.no_grad():
        fakes = [model.generate(z, torch.full((3,), c)) for c in range(3)]
        x = model.prepare(torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8, generator=seeded()))
        phi = model.netd.features(x).sum((2, 3))  # N x width
        a, b = torch.tensor([0, 1, 2]), torch.tensor([2, 2, 0])
        gap = model.discriminator_logits(x, a) - model.discriminator_logits(x, b)
        expected = ((model.netd.embed.weight[a] - model.netd.embed.weight[b]) * phi).sum(1)
    assert fakes[0].shape == (3, 1, 28, 28) and not torch.allclose(fakes[0], fakes[1])
    torch.testing.assert_close(gap, expected)
    torch.testing.assert_close(model.discriminator_score(x / 2 + 0.5, a), model.discriminator_logits(x, a))


def test_the_gan_objective_passes_labels_only_to_conditional_models():
    seen = []

    def logits(x, *labels):
        seen.append(labels)
        return x

    stand_in = types.SimpleNamespace(discriminator_logits=logits)
    real, fake, labels = torch.zeros(2), torch.ones(2), torch.tensor([1, 0])
    GANObjective().discriminator_loss(stand_in, real, fake, labels)
    GANObjective().generator_loss(stand_in, fake, labels)
    GANObjective().generator_loss(stand_in, fake)
    assert [len(args) for args in seen] == [1, 1, 1, 0] and seen[0][0] is labels


def test_a_training_step_moves_only_the_embeddings_of_the_batchs_classes():
    model = dcgan(classes=5).train()
    trainer = AdversarialTrainer(model, GANObjective(), AdversarialTrainer.Config(), lr=2e-4)
    before = model.netd.embed.weight.detach().clone()
    real = model.prepare(torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8, generator=seeded()))
    metrics = trainer.train_step(real, torch.tensor([0, 3, 0, 3, 3, 0]))
    assert set(metrics) == {"d_loss", "d_real", "d_fake", "g_loss"}
    moved = (model.netd.embed.weight.detach() != before).any(1).tolist()
    assert moved == [True, False, False, True, False]


# --------------------------------------------------------- unconditional


@pytest.mark.parametrize("model,cls", [("bernoulli-vae", BernoulliVAE), ("dcgan", DCGAN)])
def test_unconditional_models_keep_the_state_of_old_runs(model, cls):
    """Built with conditional=false (the default), a model has exactly the tensors, names and
    shapes a 0.1.0 run saved; tests/test_old_runs.py checks the numbers."""
    run = gt.load_run(FIXTURES / model)
    saved = load_file(FIXTURES / model / "model.safetensors")
    built = cls(run.config.model.config, run.config.image_spec)
    assert not run.config.model.config.conditional and built.num_classes == 0
    assert {k: tuple(v.shape) for k, v in built.state_dict().items()} == {k: tuple(v.shape) for k, v in saved.items()}


@pytest.mark.parametrize("model", ["bernoulli-vae", "gaussian-vae"])
def test_unlabelled_data_is_a_one_line_error_for_a_conditional_vae(model, toy, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["fit", model, "--dataset", "stripes", "--set", "conditional=true", "--quiet"])
    one_line_error(result, f"model '{model}': conditional=true needs a data set with class labels")


def test_unlabelled_data_is_a_one_line_error_for_a_conditional_dcgan(tmp_path):
    plugin = types.SimpleNamespace(register_datasets=hookimpl(lambda register: register(Noise28)))
    with toolkit_with(plugin), pytest.raises(GentoolError, match="model 'dcgan': conditional=true needs a data set "
                                                                 "with class labels"):
        gt.fit("dcgan", "noise28", run_dir=tmp_path / "run", max_steps=1, device="cpu", overrides=["conditional=true"])


# ------------------------------------------------------------ end to end


@pytest.fixture
def tiny(cache):
    """The labelled 8 x 8 patterns of test_metrics as the data set 'tiny-shapes', four classes."""
    with toolkit_with(test_metrics) as toolkit:
        yield toolkit


@pytest.fixture
def cvae(tiny, tmp_path):
    """A conditional Bernoulli VAE trained on tiny-shapes for a few seconds."""
    return gt.fit("bernoulli-vae", "tiny-shapes", run_dir=tmp_path / "cvae", epochs=60, batch_size=64, device="cpu",
                  overrides=["conditional=true", "hidden=64", "latent_dim=4"])


def test_a_conditional_vae_draws_each_class_it_is_asked_for(cvae):
    data = tiny_data()
    class_means = torch.stack([to_unit(data.train[data.train_labels == c]).mean(0) for c in range(4)])
    for c in range(4):
        drawn = cvae.sample(64, label=c, seed=1).images.mean(0)
        distances = (class_means - drawn).square().flatten(1).sum(1)
        assert distances.argmin().item() == c
    results = cvae.evaluate(["label-accuracy"], k=400)
    assert results["label_accuracy"] > 0.9 and results["label_accuracy_k"] == 400
    assert results["label_accuracy_features"].startswith("classifier-")


def test_a_conditional_vae_reconstructs_and_interpolates_real_images_of_a_class(cvae):
    """The samplers that start from real images encode them with their labels (encode_latent(x, labels))."""
    x = cvae.model.prepare(tiny_data().test[:3])
    labels = torch.tensor([0, 1, 2])
    with torch.no_grad():
        assert torch.equal(cvae.model.encode_latent(x, labels), cvae.model.encode(x, labels)[0])
    for sampler in ("reconstruct", "interpolate"):
        drawn = cvae.sample(8, sampler=sampler, label=2, seed=0).images
        assert drawn.shape[1:] == (1, 8, 8) and torch.isfinite(drawn).all()


def test_likelihood_metrics_of_a_conditional_vae_use_the_true_labels(cvae):
    """nll is -log p(x | y) with each test image's own label: exactly the estimate of
    model.given(labels), and worse with the labels shifted; recon and elbo use them too."""
    data, model = tiny_data(), cvae.model
    x, labels = to_unit(data.test[:64]), data.test_labels[:64]
    results = cvae.evaluate(["nll", "recon", "elbo"], k=10, limit=64)
    with torch.no_grad():
        def nll(y: Tensor) -> float:
            return -importance_weighted_log_prob(model.given(y), x, 10, seeded(0), 1 << 20).mean().item()

        recon = model.generate(model.encode(x, labels)[0], labels)
    assert results["nll"] == pytest.approx(nll(labels), rel=1e-6)
    assert nll((labels + 1) % 4) > results["nll"] + 5
    assert results["recon_mse"] == pytest.approx((recon - x).square().sum().item() / 64, rel=1e-5)
    assert results["elbo"] <= -results["nll"] + 1


def test_the_evaluated_images_take_the_labels_of_the_split_they_start():
    data, model = tiny_data(), types.SimpleNamespace(num_classes=4, name="m", given=lambda labels: None)
    assert torch.equal(evaluated_labels(model, data.test[:10], data, "nll"), data.test_labels[:10])
    assert torch.equal(evaluated_labels(model, data.train[:7], data, "nll"), data.train_labels[:7])
    with pytest.raises(GentoolError, match="nll: the evaluated images do not start a labelled split"):
        evaluated_labels(model, data.test[1:5], data, "nll")
    del model.given
    with pytest.raises(GentoolError, match="nll: model 'm' is class-conditional, but has no given"):
        evaluated_labels(model, data.test[:10], data, "nll")


def test_sample_label_from_the_command_line(cvae, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["sample", "--run", "cvae", "-n", "4", "--label", "2", "--out", "two.safetensors"])
    assert result.exit_code == 0, result.output
    assert torch.equal(load_file("two.safetensors")["images"], cvae.sample(4, label=2).images)
    result = CliRunner().invoke(cli, ["sample", "--run", "cvae", "-n", "8", "--out", "rows.safetensors"])
    assert result.exit_code == 0, result.output
    rows = load_file("rows.safetensors")["images"]
    assert torch.equal(rows[6:], cvae.sample(8, label=3).images[6:])  # no --label: one row of two per class


def test_a_conditional_dcgan_trains_and_samples_with_every_sampler(tmp_path):
    options = dict(run_dir=tmp_path / "gan", epochs=1, batch_size=32, device="cpu",
                   overrides=["conditional=true", "nz=8", "ngf=4", "ndf=4", "data.train_size=128",
                              "data.test_size=32"])
    run = gt.fit("dcgan", "shapes", **options)
    assert run.model.num_classes == 4 and (tmp_path / "gan" / "samples" / "epoch-001.png").is_file()
    per_class = [run.sample(6, label=c, seed=1).images for c in range(4)]
    assert all(not torch.equal(per_class[0], other) for other in per_class[1:])  # same codes, other classes
    ranked = run.sample(4, sampler="ranking", label=1, options={"candidates": 32})
    with torch.no_grad():
        torch.testing.assert_close(ranked.scores, run.model.discriminator_score(ranked.images, torch.full((4,), 1)))
    with pytest.raises(GentoolError, match="ask for one --label"):
        run.sample(8, sampler="ranking", options={"candidates": 32})
    cycled = run.sample(8, sampler="drs", options={"burn_in": 16, "batch_size": 16})
    assert cycled.images.shape == (8, 1, 28, 28)


# ---------------------------------------------------------- label accuracy


class ClassBanks(Model):
    """A conditional model that draws images of the tiny-shapes classes from banks of real ones:
    of the class asked for, or (``ignore_labels``) of a class drawn at random."""

    name = "class-banks"

    def __init__(self, ignore_labels: bool = False):
        super().__init__(None, ImageSpec(1, 8, 8, classes=4))
        images, labels = labelled(2000, seed=7)
        self.banks = [images[labels == c][:400] for c in range(4)]
        self.ignore_labels = ignore_labels
        self.num_classes = 4
        self.unused = nn.Parameter(torch.zeros(1))  # Model.device reads the parameters

    def prepare(self, batch, generator=None):
        return to_unit(batch)

    def sample_latent(self, n, generator=None):
        return torch.randint(0, 4 * 400, (n,), generator=generator)

    def generate(self, z, labels):
        classes = z // 400 if self.ignore_labels else labels
        return to_unit(torch.stack([self.banks[c][i] for c, i in zip(classes.tolist(), (z % 400).tolist(),
                                                                     strict=True)]))


@pytest.mark.parametrize("ignore_labels,expected,tolerance", [(False, 1.0, 0.03), (True, 0.25, 0.04)])
def test_label_accuracy_is_one_for_a_perfect_model_and_chance_for_one_ignoring_labels(
        cache, ignore_labels, expected, tolerance):
    data = tiny_data()
    results = LabelAccuracy().compute(ClassBanks(ignore_labels), data.test, k=1000, batch_size=300,
                                      generator=seeded(), data=data, sampler=PriorSampler())
    assert results["label_accuracy"] == pytest.approx(expected, abs=tolerance)
    assert results["label_accuracy_k"] == 1000


def test_label_accuracy_of_an_unconditional_model_is_a_one_line_error(cache):
    data = tiny_data()
    model = test_metrics.Replay(data.test)
    with pytest.raises(GentoolError, match="^label-accuracy needs a class-conditional model; 'replay' was trained "
                                           "without --set conditional=true.$"):
        LabelAccuracy().compute(model, data.test, k=10, batch_size=10, generator=seeded(), data=data,
                                sampler=PriorSampler())
