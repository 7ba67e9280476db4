"""The VAE plugin: its maths against torch.distributions, shapes, pixel preparation and training."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

import gentoolkit_vae
from gentoolkit import BitsPerDim, GentoolError, ImageSpec, VariationalModel, to_unit
from gentoolkit.config import apply_overrides, from_dict, to_dict
from gentoolkit.testing import toolkit_with
from gentoolkit_vae import (
    ELBO,
    BernoulliVAE,
    GaussianVAE,
    ImportanceWeightedBound,
    MonteCarloELBO,
    bits_per_dim,
    gaussian_kl,
    importance_weighted_bound,
)

TINY = ImageSpec(1, 4, 4, binary=True)


def tiny_vae(cls=BernoulliVAE, spec=TINY, **options):
    torch.manual_seed(0)
    return cls(cls.Config(**{"hidden": (16,), "latent_dim": 2, **options}), spec)


def random_pixels(n: int, spec: ImageSpec, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, *spec.shape), generator=g, dtype=torch.uint8)


# -------------------------------------------------------------------- maths


def test_gaussian_kl_matches_torch():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    expected = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(gaussian_kl(mu, logvar), expected)


def test_bernoulli_log_likelihood_matches_torch():
    model = tiny_vae()
    g = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.full((6, *TINY.shape), 0.3), generator=g)
    logits = 3 * torch.randn(6, *TINY.shape, generator=g)
    expected = Bernoulli(logits=logits).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(model.log_likelihood(x, logits), expected)


@pytest.mark.parametrize("variance", ["fixed", "learned"])
def test_gaussian_log_likelihood_matches_torch(variance):
    spec = ImageSpec(3, 4, 4)
    model = tiny_vae(GaussianVAE, spec, variance=variance, sigma=0.2)
    g = torch.Generator().manual_seed(0)
    if variance == "learned":  # a different sigma per pixel, as training would give
        with torch.no_grad():
            model.log_sigma.copy_(0.5 * torch.randn(spec.shape, generator=g) - 2)
    x, mean = torch.rand(6, *spec.shape, generator=g), torch.rand(6, *spec.shape, generator=g)
    expected = Normal(mean, model.log_sigma.exp()).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(model.log_likelihood(x, mean), expected)


def test_gaussian_log_likelihood_has_the_normalising_constant():
    """-log p(x|z) = ||x - f(z)||^2 / (2 s^2) + D/2 log(2 pi s^2), the article's equation with its sign fixed."""
    spec, s = ImageSpec(1, 3, 3), 0.1
    model = tiny_vae(GaussianVAE, spec, variance="fixed", sigma=s)
    x, mean = torch.rand(2, *spec.shape), torch.rand(2, *spec.shape)
    nll = (x - mean).pow(2).flatten(1).sum(1) / (2 * s ** 2) + spec.pixels / 2 * math.log(2 * math.pi * s ** 2)
    torch.testing.assert_close(-model.log_likelihood(x, mean), nll)


def test_reparameterize_has_the_posterior_mean_and_std():
    model = tiny_vae()
    std = torch.tensor([0.5, 3.0])  # the article's 0.5 * exp(logvar) would give 0.125 and 4.5
    mu = torch.tensor([1.5, -2.0]).expand(100_000, 2).requires_grad_()
    logvar = (2 * std.log()).expand(100_000, 2).requires_grad_()
    z = model.reparameterize(mu, logvar, torch.Generator().manual_seed(0))
    torch.testing.assert_close(z.mean(0), mu[0].detach(), atol=0.03, rtol=0)
    torch.testing.assert_close(z.std(0), std, atol=0, rtol=0.01)
    z.sum().backward()  # differentiable in both parameters: that is the trick
    assert mu.grad is not None and logvar.grad is not None


def test_bits_per_dim_of_the_uniform_density_is_eight():
    """The uniform density on [0, 1]^D (log p = 0) puts 1/256^D on every 8-bit image."""
    assert bits_per_dim(0.0, 784) == pytest.approx(8.0)
    assert bits_per_dim(784 * math.log(2), 784) == pytest.approx(7.0)


def test_bits_per_dim_of_a_fair_coin_per_binary_pixel_is_one():
    assert bits_per_dim(-784 * math.log(2), 784, levels=1) == pytest.approx(1.0)


@pytest.mark.parametrize(("cls", "options", "levels"), [
    (BernoulliVAE, {"binarize": "dynamic"}, 1),
    (BernoulliVAE, {"binarize": "none"}, None),  # grey levels read as probabilities: no distribution of pixels
    (GaussianVAE, {}, 256),
    (GaussianVAE, {"dequantize": False, "variance": "fixed"}, None),  # a density at discrete points
])
def test_models_state_bits_per_dim_only_for_a_likelihood_of_the_stored_pixels(cls, options, levels):
    model = tiny_vae(cls, **options)
    assert isinstance(model, BitsPerDim)
    expected = None if levels is None else bits_per_dim(-1000.0, TINY.pixels, levels)
    assert model.bits_per_dim(-1000.0) == expected


# ------------------------------------------------------------------- bounds


def test_both_estimators_agree_in_expectation():
    model = tiny_vae(hidden=(8,))
    x = model.prepare(random_pixels(4, TINY))
    torch.manual_seed(1)
    with torch.no_grad():
        closed = ELBO(ELBO.Config(samples=20_000)).loss(model, x).metrics
        sampled = MonteCarloELBO(MonteCarloELBO.Config(samples=20_000)).loss(model, x).metrics
    for key in ("elbo", "kl", "recon"):
        torch.testing.assert_close(sampled[key], closed[key], atol=0.05, rtol=0)


def test_iwae_objective_is_the_monte_carlo_elbo_for_one_sample_and_tightens_with_more():
    model = tiny_vae(hidden=(8,))
    x = model.prepare(random_pixels(4, TINY))
    with torch.no_grad():
        torch.manual_seed(3)
        one = ImportanceWeightedBound(ImportanceWeightedBound.Config(samples=1)).loss(model, x)
        torch.manual_seed(3)
        mc = MonteCarloELBO().loss(model, x)
        torch.testing.assert_close(one.value, mc.value)
        torch.testing.assert_close(one.metrics["iwae"], mc.metrics["elbo"])
        x = x.repeat(500, 1, 1, 1)  # 2000 images: each bound averaged over 500 draws
        torch.manual_seed(0)
        elbo = ELBO().loss(model, x).metrics["elbo"]
        bounds = [ImportanceWeightedBound(ImportanceWeightedBound.Config(samples=k)).loss(model, x).metrics["iwae"]
                  for k in (2, 1000)]
    assert elbo + 0.03 < bounds[0] < bounds[1] - 0.03, (elbo, bounds)


def test_elbo_is_below_the_exact_log_likelihood():
    """With a 1-d code, log p(x) = log of the integral of p(x|z) p(z) dz is exact by quadrature."""
    model = tiny_vae(latent_dim=1, hidden=(8,))
    x = model.prepare(random_pixels(3, TINY))
    grid = torch.linspace(-12, 12, 24_001)
    with torch.no_grad():
        decoded = model.decode(grid[:, None])  # G x 1 x 4 x 4
        log_joint = torch.stack([model.log_likelihood(image.expand_as(decoded), decoded) for image in x])  # N x G
        log_joint += Normal(0.0, 1.0).log_prob(grid)
        log_px = log_joint.logsumexp(1) + math.log(grid[1] - grid[0])
        torch.manual_seed(0)
        log_px_given_z, kl = ELBO(ELBO.Config(samples=20_000)).terms(model, x)
        iwae = importance_weighted_bound(model, x, 20_000, torch.Generator().manual_seed(0))
    elbo = log_px_given_z - kl
    assert torch.all(elbo < iwae) and torch.all(elbo < log_px)
    torch.testing.assert_close(iwae, log_px, atol=0.02, rtol=0)


# ------------------------------------------------------------------- models

SPECS = [ImageSpec(1, 28, 28, binary=True), ImageSpec(3, 32, 32), ImageSpec(3, 64, 64), ImageSpec(3, 96, 96)]


@pytest.mark.parametrize("cls", [BernoulliVAE, GaussianVAE])
@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: "x".join(map(str, s.shape)))
def test_shapes(cls, arch, spec):
    model = cls(cls.Config(arch=arch, latent_dim=8), spec)
    x = model.prepare(random_pixels(2, spec))
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (2, 8)
    z = model.reparameterize(mu, logvar)
    assert model.decode(z).shape == (2, *spec.shape)
    assert model.log_likelihood(x, model.decode(z)).shape == (2,)
    images = model.generate(model.sample_latent(3))
    assert images.shape == (3, *spec.shape)
    assert images.min() >= 0 and images.max() <= 1


def test_conv_keeps_odd_sizes_exact():
    spec = ImageSpec(2, 13, 10)
    model = BernoulliVAE(BernoulliVAE.Config(arch="conv", channels=(4, 8, 8)), spec)
    assert model.decode(model.sample_latent(2)).shape == (2, 2, 13, 10)


def test_conv_refuses_images_too_small_for_its_layers():
    with pytest.raises(GentoolError, match="at least 8 pixels"):
        BernoulliVAE(BernoulliVAE.Config(arch="conv", channels=(4, 4, 4)), ImageSpec(1, 7, 7))


def test_models_are_variational_and_fit_both_objectives():
    for model in (tiny_vae(), tiny_vae(GaussianVAE)):
        assert isinstance(model, VariationalModel)
        assert ELBO.fits(model) and MonteCarloELBO.fits(model)


@pytest.mark.parametrize("binarize,binary,expect_binary", [
    ("auto", True, True), ("auto", False, False), ("dynamic", False, True), ("none", True, False),
])
def test_bernoulli_binarisation(binarize, binary, expect_binary):
    spec = ImageSpec(1, 4, 4, binary=binary)
    model = tiny_vae(spec=spec, binarize=binarize)
    batch = torch.full((2000, *spec.shape), 64, dtype=torch.uint8)
    x = model.prepare(batch, torch.Generator().manual_seed(0))
    if expect_binary:
        assert set(x.unique().tolist()) == {0.0, 1.0}
        assert x.mean().item() == pytest.approx(64 / 255, abs=0.01)  # grey levels become probabilities
        torch.testing.assert_close(x, model.prepare(batch, torch.Generator().manual_seed(0)))
    else:
        torch.testing.assert_close(x, to_unit(batch))


def test_gaussian_dequantisation_stays_in_each_pixels_bin():
    spec = ImageSpec(1, 4, 4)
    batch = random_pixels(50, spec)
    model = tiny_vae(GaussianVAE, spec)
    x = model.prepare(batch, torch.Generator().manual_seed(0))
    assert torch.all(x >= batch / 256) and torch.all(x < (batch.float() + 1) / 256)
    torch.testing.assert_close(x, model.prepare(batch, torch.Generator().manual_seed(0)))
    plain = tiny_vae(GaussianVAE, spec, variance="fixed", dequantize=False)
    torch.testing.assert_close(plain.prepare(batch), to_unit(batch))


def test_gaussian_sigma_is_trained_only_when_learned():
    learned, fixed = tiny_vae(GaussianVAE), tiny_vae(GaussianVAE, variance="fixed")
    assert any(p is learned.log_sigma for p in learned.parameters())
    assert all(p is not fixed.log_sigma for p in fixed.parameters())
    assert "log_sigma" in fixed.state_dict()  # saved with the weights either way


@pytest.mark.parametrize("cls,arch,objective", [
    (BernoulliVAE, "mlp", ELBO), (BernoulliVAE, "conv", ELBO), (BernoulliVAE, "mlp", MonteCarloELBO),
    (BernoulliVAE, "mlp", ImportanceWeightedBound), (GaussianVAE, "mlp", ELBO),
])
def test_adam_steps_reduce_the_loss(cls, arch, objective):
    spec = ImageSpec(1, 8, 8, binary=True)
    torch.manual_seed(0)
    model = cls(cls.Config(arch=arch, hidden=(32,), channels=(8, 16), latent_dim=4), spec)
    on = torch.rand(spec.shape) < 0.5  # each pixel mostly on or mostly off: there is something to learn
    batch = (torch.rand(64, *spec.shape) < torch.where(on, 0.9, 0.1)).to(torch.uint8) * 255
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = objective().loss(model, model.prepare(batch)).value
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5])


def test_loss_reports_detached_metrics_that_add_up():
    model = tiny_vae()
    loss = ELBO().loss(model, model.prepare(random_pixels(8, TINY)))
    metrics = loss.metrics
    assert set(metrics) == {"elbo", "kl", "recon"}
    assert not any(m.requires_grad for m in metrics.values()) and loss.value.requires_grad
    torch.testing.assert_close(metrics["elbo"], -metrics["recon"] - metrics["kl"])
    torch.testing.assert_close(loss.value.detach(), -metrics["elbo"])


# ------------------------------------------------------------------ configs


@pytest.mark.parametrize("cls,options", [
    (BernoulliVAE, {"latent_dim": 0}),
    (BernoulliVAE, {"arch": "resnet"}),
    (BernoulliVAE, {"hidden": (400, 0)}),
    (BernoulliVAE, {"channels": ()}),
    (BernoulliVAE, {"channels": (32, -1)}),
    (BernoulliVAE, {"binarize": "always"}),
    (GaussianVAE, {"variance": "per-pixel"}),
    (GaussianVAE, {"sigma": 0.0}),
    (GaussianVAE, {"variance": "learned", "dequantize": False}),
    (ELBO, {"samples": 0}),
    (MonteCarloELBO, {"samples": -1}),
    (ImportanceWeightedBound, {"samples": 0}),
])
def test_invalid_configs_raise(cls, options):
    with pytest.raises(ValueError):
        cls.Config(**options)


def test_config_from_the_command_line_round_trips_through_json():
    config = apply_overrides(GaussianVAE.Config(), [("arch", "conv"), ("channels", "16,32,64"), ("variance", "fixed"),
                                                    ("sigma", "0.05"), ("dequantize", "false")], "gaussian-vae")
    assert (config.arch, config.channels, config.sigma, config.dequantize) == ("conv", (16, 32, 64), 0.05, False)
    assert from_dict(GaussianVAE.Config, json.loads(json.dumps(to_dict(config)))) == config


def test_plugin_registers_models_and_objectives():
    with toolkit_with(gentoolkit_vae, only=()) as toolkit:
        assert toolkit.models.get("vae") is BernoulliVAE
        assert toolkit.models.get("gaussian-vae") is GaussianVAE
        assert toolkit.objectives.get("elbo") is ELBO
        assert toolkit.objectives.get("elbo-mc") is MonteCarloELBO
        assert toolkit.objectives.get("iwae") is ImportanceWeightedBound
