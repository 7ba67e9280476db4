"""gentoolkit-wgan: the critic, the Wasserstein loss with gradient penalty, the n_critic trainer, a real fit."""

from __future__ import annotations

import json
import types

import pytest
import torch
from PIL import Image
from torch import nn

import gentoolkit.api as gt
import gentoolkit_wgan
from gentoolkit import DiscriminatorScored, GentoolError, ImageSpec, apply_overrides, to_unit
from gentoolkit.testing import invoke_gentool
from gentoolkit_wgan import WGANGP, WassersteinGP, WGANGPTrainer, gradient_penalty


def small(channels: int = 1, size: int = 28) -> WGANGP:
    torch.manual_seed(0)
    return WGANGP(WGANGP.Config(nz=16, ngf=4, ndf=4), ImageSpec(channels, size, size))


def linear_critic(pixels: int) -> tuple[types.SimpleNamespace, torch.Tensor]:
    """A stand-in model whose critic is D(x) = w . x, so its gradient is w everywhere."""
    linear = nn.Linear(pixels, 1, bias=False)
    return types.SimpleNamespace(netd=nn.Sequential(nn.Flatten(), linear, nn.Flatten(0))), linear.weight


# ------------------------------------------------------------------- model


@pytest.mark.parametrize("channels,size", [(1, 28), (3, 28), (1, 32), (3, 32), (3, 64)])
def test_generator_and_critic_shapes(channels, size):
    model = small(channels, size)
    images = model.generate(model.sample_latent(5))
    assert images.shape == (5, channels, size, size)
    assert images.min() >= 0 and images.max() <= 1
    assert model.netd(model.prepare((images * 255).to(torch.uint8))).shape == (5,)
    assert isinstance(model, DiscriminatorScored) and model.discriminator_score(images).shape == (5,)


def test_critic_scores_each_image_on_its_own():
    model = small().train()
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.netd.modules())
    x = torch.rand(6, 1, 28, 28) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(model.netd(x)[:2], model.netd(x[:2]))  # no statistics shared across the batch


@pytest.mark.parametrize("height,width", [(48, 48), (32, 28)])
def test_unsupported_size_is_a_clear_error(height, width):
    with pytest.raises(GentoolError, match=f"got {height}x{width}. Use --image-size 32"):
        WGANGP(WGANGP.Config(), ImageSpec(1, height, width))


def test_bad_options_are_caught_when_set():
    with pytest.raises(GentoolError, match="ndf must be a positive integer"):
        apply_overrides(WGANGP.Config(), [("ndf", "0")], "model 'wgan-gp'")
    with pytest.raises(GentoolError, match="n_critic must be a positive integer"):
        apply_overrides(WGANGPTrainer.Config(), [("n_critic", "0")], "trainer 'wgan-gp'")
    with pytest.raises(GentoolError, match="gp_weight must be 0 or more"):
        apply_overrides(WassersteinGP.Config(), [("gp_weight", "-1")], "objective 'wasserstein-gp'")


# --------------------------------------------------------------- objective


def test_gradient_penalty_of_a_linear_critic_is_closed_form():
    model, w = linear_critic(12)
    real, fake = torch.randn(8, 3, 2, 2), torch.randn(8, 3, 2, 2)
    torch.testing.assert_close(gradient_penalty(model.netd, real, fake), (w.norm() - 1).square())


def test_critic_loss_is_minus_the_wasserstein_estimate_plus_the_penalty():
    model, w = linear_critic(4)
    real, fake = torch.randn(6, 1, 2, 2), torch.randn(6, 1, 2, 2)
    loss = WassersteinGP(WassersteinGP.Config(gp_weight=3.0)).discriminator_loss(model, real, fake)
    estimate = model.netd(real).mean() - model.netd(fake).mean()
    penalty = (w.norm() - 1).square()
    torch.testing.assert_close(loss.value, -estimate + 3.0 * penalty)
    assert set(loss.metrics) == {"d_loss", "wasserstein", "gp"}
    torch.testing.assert_close(loss.metrics["wasserstein"], estimate.detach())
    torch.testing.assert_close(loss.metrics["gp"], penalty.detach())


def test_generator_loss_is_minus_the_critics_mean_score():
    model, _ = linear_critic(4)
    fake = torch.randn(6, 1, 2, 2)
    loss = WassersteinGP().generator_loss(model, fake)
    torch.testing.assert_close(loss.value, -model.netd(fake).mean())
    assert set(loss.metrics) == {"g_loss"}


def test_objective_needs_a_generator_and_a_critic():
    assert WassersteinGP.fits(small())
    assert not WassersteinGP.fits(nn.Linear(2, 2))


# ----------------------------------------------------------------- trainer


def make_trainer(model: WGANGP, **config) -> WGANGPTrainer:
    return WGANGPTrainer(model, WassersteinGP(), WGANGPTrainer.Config(**config), lr=1e-4)


def step_counter(optimizer: torch.optim.Optimizer) -> list[int]:
    counter = [0]
    optimizer.register_step_post_hook(lambda *args: counter.__setitem__(0, counter[0] + 1))
    return counter


def real_batch() -> torch.Tensor:
    return torch.randint(0, 256, (4, 1, 28, 28), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)


def test_generator_updates_after_every_n_critic_critic_updates():
    model = small()
    trainer = make_trainer(model, n_critic=3)
    assert trainer.optimizer_d.defaults["betas"] == (0.0, 0.9) and trainer.optimizer_d.defaults["lr"] == 1e-4
    d_steps, g_steps = step_counter(trainer.optimizer_d), step_counter(trainer.optimizer_g)
    with_generator = []
    for _ in range(6):
        metrics = trainer.train_step(model.prepare(real_batch()))
        assert all(v.dim() == 0 and not v.requires_grad and torch.isfinite(v) for v in metrics.values())
        assert {"loss", "d_loss", "wasserstein", "gp"} <= set(metrics)
        with_generator.append("g_loss" in metrics)
    assert (d_steps[0], g_steps[0]) == (6, 2)
    assert with_generator == [False, False, True, False, False, True]


def test_state_dict_restores_optimisers_and_the_rhythm():
    model = small()
    trainer = make_trainer(model, n_critic=3)
    for _ in range(2):
        trainer.train_step(model.prepare(real_batch()))
    restored = make_trainer(model, n_critic=3)
    restored.load_state_dict(trainer.state_dict())
    assert restored.critic_steps == 2
    torch.testing.assert_close(restored.optimizer_d.state_dict(), trainer.optimizer_d.state_dict())
    assert "g_loss" in restored.train_step(model.prepare(real_batch()))  # the third critic update


# ------------------------------------------------------------- end to end

TINY = ["nz=16", "ngf=8", "ndf=8", "data.train_size=256", "data.test_size=32"]


def test_registered_as_the_models_defaults(gentool_plugins):
    toolkit = gentool_plugins(gentoolkit_wgan, only=[])  # this plugin and gentoolkit's core, nothing installed
    assert toolkit.models.get("wgan-gp") is WGANGP
    assert toolkit.objectives.get("wasserstein-gp") is WassersteinGP
    assert toolkit.trainers.get("wgan-gp") is WGANGPTrainer
    assert (WGANGP.default_objective, WGANGP.default_trainer) == ("wasserstein-gp", "wgan-gp")
    assert WGANGP.recipe.lr == 1e-4
    assert toolkit.commands.get("wgan-critic") is gentoolkit_wgan.wgan_critic


def test_fit_learns_to_score_real_above_fake_and_samples_rank(gentool_plugins, tmp_path):
    gentool_plugins(gentoolkit_wgan, only=["datasets", "ranking"])
    run = gt.fit("wgan-gp", "shapes", run_dir=tmp_path / "run", max_steps=15, batch_size=16, overrides=TINY)
    row = run.metrics[-1]
    assert {"train_loss", "train_d_loss", "train_g_loss", "train_wasserstein", "train_gp"} <= set(row)
    assert row["train_wasserstein"] > 0  # the critic already tells shapes from noise
    samples = gt.load_run(run.path).sample(8, sampler="ranking", options={"candidates": 32})
    assert samples.images.shape == (8, 1, 28, 28)
    assert torch.equal(samples.scores, samples.scores.sort(descending=True).values)


def test_resume_continues_exactly(gentool_plugins, tmp_path):
    gentool_plugins(gentoolkit_wgan, only=["datasets", "ranking"])
    fit = dict(batch_size=16, overrides=[*TINY, "data.train_size=64"])  # 4 critic updates per epoch
    straight = gt.fit("wgan-gp", "shapes", run_dir=tmp_path / "a", epochs=2, **fit)
    gt.fit("wgan-gp", "shapes", run_dir=tmp_path / "b", epochs=1, **fit)
    resumed = gt.resume(tmp_path / "b", epochs=2)  # its first update is the 5th: the generator's turn
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


# ---------------------------------------------------------------- command


def test_critic_command_scores_files_and_folders_highest_first(gentool_plugins, tmp_path):
    gentool_plugins(gentoolkit_wgan, only=["datasets"])
    run = gt.fit("wgan-gp", "shapes", run_dir=tmp_path / "run", max_steps=2, batch_size=16, overrides=TINY)
    folder = tmp_path / "images"
    folder.mkdir()
    images = torch.randint(0, 256, (3, 1, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    for i, image in enumerate(images):
        Image.fromarray(image[0].numpy()).save(folder / f"{i}.png")
    (folder / "notes.txt").write_text("not an image, so not scored")
    wide = tmp_path / "wide.jpg"  # colour and 56 x 40: read as grey, scaled to 40 x 28 and its centre cut
    Image.new("RGB", (56, 40), "orange").save(wide)

    result = invoke_gentool("wgan-critic", run.path, folder, wide, "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)
    scores = {r["path"]: r["score"] for r in rows}
    assert set(scores) == {str(folder / f"{i}.png") for i in range(3)} | {str(wide)}
    with torch.no_grad():
        expected = run.model.discriminator_score(to_unit(images)).tolist()
    assert [scores[str(folder / f"{i}.png")] for i in range(3)] == pytest.approx(expected, abs=1e-5)

    bad = invoke_gentool("wgan-critic", run.path, folder / "notes.txt")
    assert bad.exit_code == 1 and "notes.txt is not an image wgan-critic can read" in bad.output
