"""The diffusion plugin: q and its posterior against closed forms, the samplers on a model that
knows the true noise, the bound and its estimate, EMA, guidance, training, and ddpm through the CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import test_cli
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import Tensor, nn

import gentoolkit.api as gt
import gentoolkit_diffusion
from gentoolkit import (
    BitsPerDim,
    GentoolError,
    ImageSpec,
    LatentModel,
    Likelihood,
    capabilities,
    has_capability,
    to_signed,
)
from gentoolkit.checkpoint import shared_tensors
from gentoolkit.registry import get_toolkit
from gentoolkit.testing import toolkit_with
from gentoolkit_diffusion import (
    DDPM,
    AncestralSampler,
    DDIMSampler,
    EMAAdam,
    GaussianDiffusion,
    NoiseMSE,
    NoisePredictor,
    betas_for,
    discretized_gaussian_log_likelihood,
    guided_noise,
)

TINY = ImageSpec(1, 4, 4)


def tiny_ddpm(spec: ImageSpec = TINY, **options) -> DDPM:
    torch.manual_seed(0)
    return DDPM(DDPM.Config(**{"timesteps": 10, "base_channels": 8, "channel_mult": (1,), "res_blocks": 1,
                               "attention_levels": (0,), "dropout": 0.0, **options}), spec)


def perturb(module: nn.Module, scale: float = 0.3) -> nn.Module:
    """Move every parameter off its start (zero-initialised output convolutions predict no
    noise at all), so a test sees a network that depends on its inputs."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return module


def random_pixels(n: int, spec: ImageSpec, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, *spec.shape), generator=g, dtype=torch.uint8)


def alpha_bars(schedule: str, timesteps: int) -> Tensor:
    """alpha_bar_0..alpha_bar_T in float64, straight from the betas."""
    return torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - betas_for(schedule, timesteps), 0)])


class OneImage(nn.Module):
    """The exact noise predictor of a data set holding one image x0: x_t determines the noise,
    eps = (x_t - sqrt(alpha_bar_t) x0) / sqrt(1 - alpha_bar_t)."""

    name = "one-image"
    num_classes = 0

    def __init__(self, x0: Tensor, timesteps: int, variance: str = "large"):
        super().__init__()
        self.x0 = x0
        self.spec = ImageSpec(*x0.shape)
        self.diffusion = GaussianDiffusion(timesteps, "linear", variance)

    @property
    def device(self) -> torch.device:
        return self.x0.device

    def predict_noise(self, xt: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        d = self.diffusion
        return (xt - d.at("sqrt_alpha_bar", t, xt) * self.x0) / d.at("sqrt_one_minus_alpha_bar", t, xt)


def one_image(timesteps: int = 50, variance: str = "large") -> OneImage:
    return OneImage(to_signed(random_pixels(1, TINY)[0]), timesteps, variance)


# -------------------------------------------------------------- schedules and q


def test_schedules_follow_their_definitions():
    linear = betas_for("linear", 1000)
    assert linear[0].item() == pytest.approx(1e-4) and linear[-1].item() == pytest.approx(0.02)
    assert betas_for("linear", 100)[0].item() == pytest.approx(1e-3)  # scaled by 1000 / T
    s, t = 0.008, torch.arange(1001, dtype=torch.float64)
    f = torch.cos((t / 1000 + s) / (1 + s) * math.pi / 2) ** 2
    torch.testing.assert_close(alpha_bars("cosine", 1000)[:990], (f / f[0])[:990])  # before beta's clip at 0.999
    for schedule in ("linear", "cosine"):
        for timesteps in (10, 1000):
            assert alpha_bars(schedule, timesteps)[-1] < 1e-4  # x_T carries (almost) nothing of x_0


def test_q_sample_has_the_moments_of_the_chain_it_closes():
    """x_t from q(x_t | x_0) in one step has the mean and variance of t single steps
    x_s = sqrt(1 - beta_s) x_{s-1} + sqrt(beta_s) z, which is what q is defined by."""
    diffusion = GaussianDiffusion(200, "cosine")
    g = torch.Generator().manual_seed(0)
    x0 = torch.tensor([-1.0, -0.3, 0.5, 1.0]).expand(100_000, 4)
    chain, beta = x0.clone(), betas_for("cosine", 200)
    for step in range(1, 201):
        chain = (1 - beta[step - 1]).sqrt().float() * chain + beta[step - 1].sqrt().float() * torch.randn(
            chain.shape, generator=g)
        if step in (1, 20, 200):
            t = torch.full((len(x0),), step)
            direct = diffusion.q_sample(x0, t, torch.randn(x0.shape, generator=g))
            alpha_bar = alpha_bars("cosine", 200)[step].float()
            for sample in (chain, direct):
                torch.testing.assert_close(sample.mean(0), alpha_bar.sqrt() * x0[0], atol=0.01, rtol=0)
                torch.testing.assert_close(sample.var(0), (1 - alpha_bar).expand(4), atol=0.01, rtol=0.01)


@pytest.mark.parametrize("step", [2, 10, 500, 1000])
def test_q_posterior_is_bayes_rule(step):
    """q(x_{t-1} | x_t, x_0) is proportional to q(x_t | x_{t-1}) q(x_{t-1} | x_0), a product of
    Gaussians: precisions add, and the mean is the precision-weighted mean."""
    diffusion = GaussianDiffusion(1000)
    g = torch.Generator().manual_seed(0)
    x0, xt = torch.rand(3, 1, 2, 2, generator=g) * 2 - 1, torch.randn(3, 1, 2, 2, generator=g)
    mean, variance = diffusion.q_posterior(x0, xt, torch.full((3,), step))
    alpha_bar, beta = alpha_bars("linear", 1000), betas_for("linear", 1000)
    ab_prev, alpha = alpha_bar[step - 1], 1 - beta[step - 1]
    precision = 1 / (1 - ab_prev) + alpha / (1 - alpha)
    weighted = ab_prev.sqrt() * x0.double() / (1 - ab_prev) + alpha.sqrt() * xt.double() / (1 - alpha)
    expected_mean = weighted / precision
    torch.testing.assert_close(mean.double(), expected_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(variance.double().flatten(), (1 / precision).expand(3), rtol=1e-5, atol=0)


def test_the_posterior_at_t1_is_x0():
    diffusion = GaussianDiffusion(1000)
    x0, xt = torch.rand(2, 1, 2, 2) * 2 - 1, torch.randn(2, 1, 2, 2)
    mean, variance = diffusion.q_posterior(x0, xt, torch.ones(2, dtype=torch.long))
    torch.testing.assert_close(mean, x0)
    assert torch.all(variance == 0)


# ------------------------------------------------------------------- samplers


def test_ddim_keeps_the_true_noise_on_the_forward_path():
    """With the exact noise predictor, a DDIM step (eta = 0) from q_sample(x0, t, eps) lands on
    q_sample(x0, t', eps) for the same eps: the forward path is a fixed point."""
    model = one_image(timesteps=100)
    eps = torch.randn(5, *model.spec.shape, generator=torch.Generator().manual_seed(0))
    x0 = model.x0.expand_as(eps)
    for t, earlier in [(100, 37), (37, 36), (5, 1), (1, 0)]:
        t_, earlier_ = torch.full((5,), t), torch.full((5,), earlier)
        xt = model.diffusion.q_sample(x0, t_, eps)
        step = model.diffusion.ddim_step(xt, t_, earlier_, model.predict_noise(xt, t_), eta=0.0, noise=None)
        expected = x0 if earlier == 0 else model.diffusion.q_sample(x0, earlier_, eps)
        torch.testing.assert_close(step, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("sampler", [DDIMSampler(DDIMSampler.Config(steps=7)), AncestralSampler()],
                         ids=["ddim", "ddpm"])
def test_samplers_return_the_one_image_of_an_exact_model(sampler):
    model = one_image(timesteps=50)
    images = sampler.sample(model, 6, torch.Generator().manual_seed(0)).images
    torch.testing.assert_close(images, ((model.x0 + 1) / 2).expand(6, *model.spec.shape), atol=1e-5, rtol=0)


def test_ddim_with_eta_0_is_deterministic_given_the_noise():
    model = perturb(tiny_ddpm()).eval()
    x_t = torch.randn(4, *TINY.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        def run(eta: float, seed: int) -> Tensor:
            sampler = DDIMSampler(DDIMSampler.Config(steps=5, eta=eta))
            return sampler.denoise(model, x_t, None, torch.Generator().manual_seed(seed))

        torch.testing.assert_close(run(0.0, 1), run(0.0, 2))  # the generator is not drawn from
        assert not torch.allclose(run(1.0, 1), run(1.0, 2))
        sampler = DDIMSampler(DDIMSampler.Config(steps=5))
        first = sampler.sample(model, 4, torch.Generator().manual_seed(3)).images
        torch.testing.assert_close(sampler.sample(model, 4, torch.Generator().manual_seed(3)).images, first)


def test_ddim_default_takes_all_steps_of_a_model_with_fewer_than_fifty():
    model = tiny_ddpm().eval()  # T = 10
    default = DDIMSampler().sample(model, 3, torch.Generator().manual_seed(0)).images
    every_step = DDIMSampler(DDIMSampler.Config(steps=10)).sample(model, 3, torch.Generator().manual_seed(0)).images
    torch.testing.assert_close(default, every_step)


def test_sampler_options_are_checked():
    with pytest.raises(ValueError, match="--steps must be a positive integer"):
        DDIMSampler.Config(steps=0)
    with pytest.raises(ValueError, match="--guidance must be 0 or more"):
        AncestralSampler.Config(guidance=-1)
    with pytest.raises(GentoolError, match="--steps 11: the model has only 10 diffusion steps"):
        DDIMSampler(DDIMSampler.Config(steps=11)).sample(tiny_ddpm(), 2, torch.Generator())
    with pytest.raises(GentoolError, match="--guidance needs a class-conditional model"):
        DDIMSampler(DDIMSampler.Config(guidance=3)).sample(tiny_ddpm(), 2, torch.Generator())


# ------------------------------------------------------------------ the bound


def test_the_decoder_is_a_distribution_over_the_256_pixel_values():
    values = torch.arange(256, dtype=torch.float64) / 127.5 - 1  # every 8-bit value, prepared
    for mean, log_scale in [(0.3, -3.0), (-0.999, -5.0), (1.0, 0.5)]:
        log_p = discretized_gaussian_log_likelihood(values, torch.tensor(mean, dtype=torch.float64),
                                                    torch.tensor(log_scale, dtype=torch.float64))
        assert log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-9)
    normal = torch.distributions.Normal(0.2, 0.05)
    x = torch.tensor([0.2, 0.3]).double()
    expected = torch.log(normal.cdf(x + 1 / 255) - normal.cdf(x - 1 / 255))
    torch.testing.assert_close(discretized_gaussian_log_likelihood(
        x, torch.tensor(0.2).double(), torch.tensor(math.log(0.05)).double()), expected)
    far = discretized_gaussian_log_likelihood(torch.tensor([0.5]).double(), torch.zeros(1).double(),
                                              torch.tensor([math.log(0.01)]).double())
    assert torch.isfinite(far).all() and far.item() < -1000  # 50 standard deviations off, still finite


@pytest.mark.parametrize("variance", ["large", "small"])
def test_the_bound_of_an_exact_model_is_its_closed_form(variance):
    """With the true noise every KL term compares two Gaussians of the same mean: only the
    variances differ (not at all for sigma^2 = beta~), and the decoder's mean is x0 itself."""
    timesteps = 20
    model = one_image(timesteps, variance)
    d, x0 = TINY.pixels, model.x0[None].double()
    beta, alpha_bar = betas_for("linear", timesteps), alpha_bars("linear", timesteps)
    prior = 0.5 * (alpha_bar[-1] * x0.square() + (1 - alpha_bar[-1]) - 1 - torch.log(1 - alpha_bar[-1])).sum()
    posterior = beta[1:] * (1 - alpha_bar[1:-1]) / (1 - alpha_bar[2:])  # beta~_2..beta~_T
    sigma2 = beta[1:] if variance == "large" else posterior
    kl = 0.5 * d * (torch.log(sigma2 / posterior) + posterior / sigma2 - 1).sum()
    half = 1 / 255 / posterior[0].sqrt()  # sigma_1^2 = beta~_2; x0 sits in the middle of its bin
    inside = torch.distributions.Normal(0.0, 1.0).cdf(half.float()).double()
    edge = (x0.abs() == 1).double()
    decoder = (edge * inside.log() + (1 - edge) * (2 * inside - 1).log()).sum()
    expected = -(prior + kl) + decoder
    bound = model.diffusion.log_likelihood_bound(model.predict_noise, model.x0[None], None, torch.Generator())
    assert bound.dtype == torch.float64
    assert bound.item() == pytest.approx(expected.item(), rel=1e-4)


def test_the_bound_estimated_from_k_steps_is_unbiased():
    """The mean of the k-term estimate over many draws is the mean of the full sum (both
    average over the noise of x_t); k = T - 1 is the full sum itself."""
    model = perturb(tiny_ddpm(timesteps=6), scale=0.1).eval()
    x = model.prepare(random_pixels(1, TINY)).expand(2000, *TINY.shape)
    with torch.no_grad():
        def bound(k: int | None, seed: int) -> Tensor:
            return model.diffusion.log_likelihood_bound(model.predict_noise, x, k, torch.Generator().manual_seed(seed))

        full, estimate = bound(None, 0), bound(2, 1)
        torch.testing.assert_close(bound(5, 0), full)
    error = math.sqrt(full.var() / len(full) + estimate.var() / len(estimate))
    assert estimate.var() > full.var()  # the estimate really samples its terms
    assert abs(estimate.mean() - full.mean()) < 4 * error, (estimate.mean(), full.mean(), error)


def test_the_bound_does_not_depend_on_how_many_terms_share_a_network_call():
    model = perturb(tiny_ddpm(), scale=0.1).eval()
    x = model.prepare(random_pixels(3, TINY))
    with torch.no_grad():
        def bound(k: int | None, batch: int | None) -> Tensor:
            predict = model.predict_noise
            return model.diffusion.log_likelihood_bound(predict, x, k, torch.Generator().manual_seed(0), batch)

        for k in (None, 4):
            torch.testing.assert_close(bound(k, 3 * 4), bound(k, None))  # four terms a call, or one
        log_p = model.log_prob(x, k=3, generator=torch.Generator().manual_seed(0), max_floats=8 * 16)  # 1 image
    assert log_p.shape == (3,) and log_p.dtype == torch.float64 and torch.isfinite(log_p).all()
    assert model.bits_per_dim(-16 * math.log(2)) == pytest.approx(1.0)  # -log2 P / D, no offset


# ------------------------------------------------------------------ the model


def test_ddpm_declares_its_capabilities():
    model = tiny_ddpm()
    for capability in (NoisePredictor, Likelihood, BitsPerDim):
        assert has_capability(model, capability)  # not isinstance: from Python 3.12 it misses submodules
    assert not has_capability(model, LatentModel)
    assert "Likelihood" in capabilities(DDPM)
    assert (model.nll_kind, model.default_nll_k) == ("bound", 10)
    assert NoiseMSE.fits(model) and DDIMSampler.fits(model) and AncestralSampler.fits(model)


def test_prepare_maps_pixels_to_signed_values_without_noise():
    batch = torch.tensor([0, 1, 128, 255], dtype=torch.uint8).view(1, 1, 2, 2)
    torch.testing.assert_close(tiny_ddpm().prepare(batch, torch.Generator()),
                               torch.tensor([-1.0, -1 + 2 / 255, 1 / 255, 1.0]).view(1, 1, 2, 2))


@pytest.mark.parametrize("spec,options", [
    (ImageSpec(1, 28, 28), {}),
    (ImageSpec(1, 28, 28), {"channel_mult": (1, 2, 2, 2), "attention_levels": (3,)}),  # padded to 32
    (ImageSpec(3, 32, 32), {"schedule": "cosine"}),
    (ImageSpec(3, 64, 64), {"base_channels": 8}),
    (ImageSpec(3, 96, 96), {"base_channels": 8, "attention_levels": ()}),
], ids=["mnist", "mnist-4-levels", "cifar", "folder-64", "anime-96"])
def test_the_unet_works_at_every_image_size(spec, options):
    model = DDPM(DDPM.Config(**{"base_channels": 16, "res_blocks": 1, **options}), spec)
    assert shared_tensors(model) == []
    x, t = torch.randn(2, *spec.shape), torch.tensor([1, 1000])
    with torch.no_grad():
        assert model.predict_noise(x, t).shape == x.shape


@pytest.mark.parametrize("options,message", [
    ({"timesteps": 1}, "timesteps must be at least 2"),
    ({"schedule": "quadratic"}, "schedule must be one of linear, cosine"),
    ({"attention_levels": (3,)}, r"attention_levels \(3,\) must be levels of channel_mult"),
    ({"ema": 1.0}, r"ema must be in \[0, 1\)"),
    ({"channel_mult": ()}, "channel_mult must be positive integers"),
])
def test_invalid_configs_raise(options, message):
    with pytest.raises(ValueError, match=message):
        DDPM.Config(**options)


def test_a_conditional_model_needs_labels():
    with pytest.raises(ValueError, match="conditional=true needs a data set with class labels"):
        tiny_ddpm(conditional=True)
    assert tiny_ddpm(ImageSpec(1, 4, 4, classes=3), conditional=True).num_classes == 3


def test_ema_follows_the_warm_up_recurrence_and_is_used_in_eval_mode():
    model = tiny_ddpm(ema=0.5)
    assert shared_tensors(model) == []
    assert {k.split(".")[0] for k in model.state_dict()} == {"net", "ema", "ema_updates"}
    assert not any(p.requires_grad for p in model.ema.parameters())
    x, t = torch.randn(3, *TINY.shape), torch.tensor([1, 5, 10])
    perturb(model.net)
    with torch.no_grad():
        raw = model.train().predict_noise(x, t)
        torch.testing.assert_close(model.eval().predict_noise(x, t), raw)  # no update yet: the raw weights
    expected = [p.clone() for p in model.ema.parameters()]
    for n in range(12):  # d_n = min(0.5, (1 + n) / (10 + n)) reaches the cap at n = 9
        with torch.no_grad():
            for p in model.net.parameters():
                p.fill_(float(n))
        decay = min(0.5, (1 + n) / (10 + n))
        expected = [decay * e + (1 - decay) * n for e in expected]
        model.update_ema()
    for average, e in zip(model.ema.parameters(), expected, strict=True):
        torch.testing.assert_close(average, e)
    assert model.ema_updates.item() == 12
    with torch.no_grad():
        assert not torch.allclose(model.eval().predict_noise(x, t), model.train().predict_noise(x, t))
    assert "ema" not in {k.split(".")[0] for k in tiny_ddpm(ema=0.0).state_dict()}


def test_guidance_0_is_the_unconditional_prediction_and_1_the_conditional():
    model = perturb(tiny_ddpm(ImageSpec(1, 4, 4, classes=3), conditional=True)).eval()
    g = torch.Generator().manual_seed(0)
    x, t, labels = torch.randn(4, *TINY.shape, generator=g), torch.tensor([1, 4, 7, 10]), torch.tensor([0, 1, 2, 1])
    with torch.no_grad():
        conditional, unconditional = model.predict_noise(x, t, labels), model.predict_noise(x, t)
        assert not torch.allclose(conditional, unconditional)
        torch.testing.assert_close(model.predict_noise(x, t, torch.full((4,), 3)), unconditional)  # "no label"
        torch.testing.assert_close(guided_noise(model, x, t, labels, 0.0), unconditional)
        torch.testing.assert_close(guided_noise(model, x, t, labels, 1.0), conditional)
        torch.testing.assert_close(guided_noise(model, x, t, labels, 3.0),
                                   unconditional + 3 * (conditional - unconditional), atol=1e-5, rtol=1e-5)
        sampler = DDIMSampler(DDIMSampler.Config(steps=4, guidance=0.0))
        zeros, twos = (sampler.sample(model, 4, torch.Generator().manual_seed(1), torch.full((4,), c)).images
                       for c in (0, 2))
        torch.testing.assert_close(zeros, twos)  # at w = 0 the label plays no part


def test_labels_are_dropped_in_training_only():
    model = perturb(tiny_ddpm(ImageSpec(1, 4, 4, classes=3), conditional=True, label_dropout=0.5))
    x, t, labels = torch.randn(400, *TINY.shape), torch.randint(1, 11, (400,)), torch.randint(3, (400,))
    with torch.no_grad():
        model.eval()
        conditional, unconditional = model.predict_noise(x, t, labels), model.predict_noise(x, t)
        torch.manual_seed(0)
        trained = model.train().predict_noise(x, t, labels)  # the raw weights, as no average was updated
    dropped = torch.isclose(trained, unconditional).flatten(1).all(1)
    kept = torch.isclose(trained, conditional).flatten(1).all(1)
    assert torch.all(dropped ^ kept) and 150 < dropped.sum() < 250


# ------------------------------------------------------------------- training


def test_ema_adam_trains_the_raw_weights_with_the_adam_trainers_settings():
    model = tiny_ddpm(timesteps=20, base_channels=8, attention_levels=(), ema=0.9)
    trainer = EMAAdam(model, NoiseMSE(), EMAAdam.Config(beta1=0.8), lr=1e-3)
    (group,) = trainer.optimizer.param_groups
    assert {id(p) for p in group["params"]} == {id(p) for p in model.net.parameters()}  # not the average
    assert group["betas"] == (0.8, 0.999) and EMAAdam.Config().grad_clip == 1.0  # Ho et al. clip at 1
    vae = get_toolkit().models.get("vae")
    with pytest.raises(GentoolError, match="trainer 'ema-adam' needs a model that keeps a moving average"):
        EMAAdam(vae(vae.Config(), TINY), NoiseMSE(), EMAAdam.Config(), lr=1e-3)


def test_a_tiny_model_learns_a_two_point_data_set():
    """Two 4 x 4 images, a checkerboard and its negative, 2 apart in every pixel: after 200
    steps the samples land on one or the other, and on both about equally often."""
    model = tiny_ddpm(timesteps=20, base_channels=16, attention_levels=(), ema=0.9)
    board = (torch.arange(16).view(4, 4) + torch.arange(4).view(4, 1)) % 2 * 2.0 - 1  # +-1
    points = torch.stack([board, -board])[:, None]  # 2 x 1 x 4 x 4
    trainer = EMAAdam(model, NoiseMSE(), EMAAdam.Config(), lr=3e-3)
    torch.manual_seed(0)
    for _ in range(200):
        trainer.train_step(points[torch.randint(2, (32,))])
    assert model.ema_updates.item() == 200
    images = AncestralSampler().sample(model, 64, torch.Generator().manual_seed(0)).images * 2 - 1
    distance = (images[:, None] - points[None]).abs().flatten(2).mean(2)  # 64 x 2, mean over pixels
    nearest = distance.amin(1)
    assert nearest.max() < 0.5 and (nearest < 0.25).float().mean() > 0.9, nearest
    assert 16 < distance.argmin(1).sum() < 48  # both points


# ------------------------------------------------------------------------ CLI

TINY_MODEL = ["--image-size", "8", "--set", "timesteps=10", "--set", "base_channels=8", "--set", "channel_mult=1,2",
              "--set", "res_blocks=1", "--set", "attention_levels=1", "--batch-size", "32", "--device", "cpu",
              "--quiet"]
TINY_FIT = ["--dataset", "shapes", "--set", "data.train_size=64", "--set", "data.test_size=16", *TINY_MODEL]
gentool = test_cli.gentool  # the fixture: gentool(*args, ok=True) runs the CLI in tmp_path, returns Click's result


def test_ddpm_through_the_command_line(gentool, tmp_path):
    listing = gentool("list-models").output
    assert "ddpm" in listing and "diffusion" in listing
    gentool("fit", "diffusion", *TINY_FIT, "--epochs", "2")  # by its alias; 2 steps an epoch
    run = tmp_path / "runs" / "ddpm" / next((tmp_path / "runs" / "ddpm").iterdir()).name
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and {"train_loss", "test_loss"} <= set(rows[-1])
    assert (run / "samples" / "epoch-002.png").is_file()
    config = json.loads((run / "config.json").read_text())
    assert (config["objective"]["name"], config["trainer"]["name"]) == ("eps-mse", "ema-adam")
    weights, state = load_file(run / "model.safetensors"), load_file(run / "trainer.safetensors")
    assert weights["ema_updates"].item() == 4 and any(k.startswith("ema.") for k in weights)
    assert any(".net." in k for k in state)  # the raw weights travel in the resume state
    loaded = gt.load_run(run).model  # samples with the average it loaded, not with the raw weights
    assert loaded.ema_ready and not loaded.training
    x, t = torch.randn(2, *loaded.spec.shape), torch.tensor([3, 7])
    with torch.no_grad():
        torch.testing.assert_close(loaded.predict_noise(x, t), loaded.ema(x, t))
        assert not torch.allclose(loaded.predict_noise(x, t), loaded.net(x, t))

    gentool("fit", "ddpm", *TINY_FIT, "--epochs", "1", "--run-dir", "halves")
    gentool("fit", "--resume", "halves", "--epochs", "2")
    resumed = load_file(tmp_path / "halves" / "model.safetensors")
    assert resumed.keys() == weights.keys()
    for key, value in weights.items():  # the raw weights and their average continue exactly
        torch.testing.assert_close(resumed[key], value, rtol=0, atol=0, msg=key)

    gentool("sample", "ddpm", "-n", "8", "--sampler", "ddim", "--steps", "5", "--eta", "0.5", "--out", "ddim.png")
    gentool("sample", "--run", run, "-n", "4", "--sampler", "ddpm", "--batch-size", "3", "--out", "ddpm.safetensors")
    assert (tmp_path / "ddim.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert load_file(tmp_path / "ddpm.safetensors")["images"].shape == (4, 1, 8, 8)
    evaluated = gentool("evaluate", "--run", run, "--metric", "nll", "--limit", "8", "--k", "4", "--json")
    result = json.loads(evaluated.stdout)
    assert result["nll_kind"] == "bound" and result["nll_k"] == 4
    assert result["nll_bits_per_dim"] == pytest.approx(result["nll"] / (64 * math.log(2)))

    for args, message in [(["--steps", "50"], "--steps 50: the model has only 10 diffusion steps"),
                          (["--guidance", "2"], "--guidance needs a class-conditional model")]:
        test_cli.one_line_error(gentool("sample", "ddpm", *args, ok=False), message)


def test_a_conditional_ddpm_samples_by_label_and_needs_labelled_data(gentool, tmp_path):
    gentool("fit", "ddpm", *TINY_FIT, "--set", "conditional=true", "--max-steps", "2", "--run-dir", "r")
    run = gt.load_run(tmp_path / "r")
    assert run.model.num_classes == 4
    gentool("sample", "--run", "r", "--label", "1", "-n", "8", "--steps", "3", "--guidance", "3", "--out", "one.png")
    gentool("sample", "--run", "r", "-n", "8", "--steps", "3", "--out", "rows.png")  # a row per class
    assert Image.open(tmp_path / "one.png").size == Image.open(tmp_path / "rows.png").size

    folder = tmp_path / "pictures"
    folder.mkdir()
    for i in range(4):
        Image.new("L", (8, 8), 60 * i).save(folder / f"{i}.png")
    unlabelled = gentool("fit", "ddpm", *TINY_MODEL, "--dataset", "image-folder", "--data-dir", folder,
                         "--set", "data.mode=grey", "--set", "conditional=true", ok=False)
    test_cli.one_line_error(unlabelled, "conditional=true needs a data set with class labels")


def test_ddpm_is_found_by_a_fresh_process(gentool, tmp_path):
    """Through the entry point in pyproject.toml, as a user's shell finds it: the documented
    DDIM command on the latest run."""
    gentool("fit", "ddpm", *TINY_FIT, "--max-steps", "2")
    result = subprocess.run([sys.executable, "-m", "gentoolkit", "sample", "ddpm", "-n", "64", "--sampler", "ddim",
                             "--steps", "5", "--out", "grid.png"], cwd=tmp_path, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert Image.open(tmp_path / "grid.png").size[0] > 8 * 8  # 64 images of 8 x 8 in a grid


def test_plugin_registers_its_components():
    with toolkit_with(gentoolkit_diffusion, only=[]) as toolkit:
        assert toolkit.models.get("ddpm") is DDPM and toolkit.models.get("diffusion") is DDPM
        assert toolkit.objectives.get("eps-mse") is NoiseMSE and toolkit.trainers.get("ema-adam") is EMAAdam
        assert toolkit.samplers.get("ddim") is DDIMSampler and toolkit.samplers.get("ddpm") is AncestralSampler


@pytest.mark.slow
def test_ddpm_trains_on_mnist(mnist_root, tmp_path):
    run = gt.fit("ddpm", "mnist", data_dir=mnist_root, download=False, max_steps=30, batch_size=32, device="cpu",
                 lr=1e-3, overrides=["base_channels=16", "channel_mult=1,2", "res_blocks=1", "attention_levels=1"],
                 run_dir=tmp_path / "r")
    row = run.metrics[-1]
    assert row["step"] == 30 and row["test_loss"] < 0.5  # predicting no noise at all scores 1
    result = run.evaluate(["nll"], limit=20, k=10)
    assert result["nll_kind"] == "bound" and result["nll_bits_per_dim"] < 8  # 8: knowing nothing
    assert run.sample(20, options={"steps": 10}).images.shape == (20, 1, 28, 28)
