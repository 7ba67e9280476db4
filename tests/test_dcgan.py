"""The dcgan plugin: architectures per image size, the GAN loss, the adversarial trainer."""

from __future__ import annotations

import json
import math
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gentoolkit.api as gt
from gentoolkit import (
    Callback,
    DataOptions,
    Dataset,
    DiscriminatorScored,
    GentoolError,
    ImageData,
    ImageSpec,
    apply_overrides,
    hookimpl,
)
from gentoolkit.checkpoint import flatten_state, unflatten_state
from gentoolkit.registry import get_toolkit
from gentoolkit.testing import toolkit_with
from gentoolkit_dcgan import DCGAN, AdversarialTrainer, GANObjective
from gentoolkit_ranking import RankingSampler


def small(channels: int = 1, size: int = 28, nz: int = 100, width: int = 8) -> DCGAN:
    torch.manual_seed(0)
    return DCGAN(DCGAN.Config(nz=nz, ngf=width, ndf=width), ImageSpec(channels, size, size))


def state_sizes(net: nn.Sequential, x: torch.Tensor) -> list[tuple[int, ...]]:
    """The output shape (without the batch) of every convolution in ``net``."""
    sizes = []
    for module in net:
        x = module(x)
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            sizes.append(tuple(x.shape[1:]))
    return sizes


# ------------------------------------------------------------------- model


@pytest.mark.parametrize("channels,size", [(1, 28), (1, 32), (3, 32), (3, 64), (3, 96)])
def test_generator_and_discriminator_shapes(channels, size):
    model = small(channels, size)
    z = model.sample_latent(5)
    assert z.shape == (5, 100, 1, 1)
    assert model.netg(z).shape == (5, channels, size, size)
    images = model.generate(z)
    assert images.shape == (5, channels, size, size)
    assert images.min() >= 0 and images.max() <= 1
    assert model.discriminator_logits(model.netg(z)).shape == (5,)
    assert model.discriminator_score(images).shape == (5,)


def test_96_pixels_is_the_articles_architecture():
    model = DCGAN(DCGAN.Config(), ImageSpec(3, 96, 96))
    convs = [(type(m).__name__, m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.padding[0])
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert convs == [
        ("ConvTranspose2d", 100, 512, 4, 1, 0), ("ConvTranspose2d", 512, 256, 4, 2, 1),
        ("ConvTranspose2d", 256, 128, 4, 2, 1), ("ConvTranspose2d", 128, 64, 4, 2, 1),
        ("ConvTranspose2d", 64, 3, 5, 3, 1),
        ("Conv2d", 3, 64, 5, 3, 1), ("Conv2d", 64, 128, 4, 2, 1), ("Conv2d", 128, 256, 4, 2, 1),
        ("Conv2d", 256, 512, 4, 2, 1), ("Conv2d", 512, 1, 4, 1, 0),
    ]
    assert state_sizes(model.netg, torch.zeros(2, 100, 1, 1)) == [
        (512, 4, 4), (256, 8, 8), (128, 16, 16), (64, 32, 32), (3, 96, 96)]
    assert state_sizes(model.netd, torch.zeros(2, 3, 96, 96)) == [
        (64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4), (1, 1, 1)]
    assert isinstance(model.netg[-1], nn.Tanh)
    assert not any(isinstance(m, nn.Sigmoid) for m in model.netd)  # logits, for the loss with logits
    assert not isinstance(model.netd[1], nn.BatchNorm2d)  # none on the input layer
    assert all(not m.bias for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)))


def test_28_pixels_goes_through_7_by_7():
    model = small(1, 28)
    assert state_sizes(model.netg, torch.zeros(2, 100, 1, 1)) == [(32, 4, 4), (16, 7, 7), (8, 14, 14), (1, 28, 28)]
    assert state_sizes(model.netd, torch.zeros(2, 1, 28, 28)) == [(8, 14, 14), (16, 7, 7), (32, 4, 4), (1, 1, 1)]


@pytest.mark.parametrize("height,width", [(50, 50), (64, 32)])
def test_unsupported_size_is_a_clear_error(height, width):
    with pytest.raises(GentoolError, match=f"dcgan supports 28x28, 32x32, 64x64 and 96x96 images; "
                                           f"got {height}x{width}. Use --image-size 64"):
        DCGAN(DCGAN.Config(), ImageSpec(3, height, width))


def test_bad_config_is_caught_when_set():
    with pytest.raises(GentoolError, match="ngf must be a positive integer"):
        apply_overrides(DCGAN.Config(), [("ngf", "0")], "model 'dcgan'")
    with pytest.raises(GentoolError, match="g_every must be a positive integer"):
        apply_overrides(AdversarialTrainer.Config(), [("g_every", "0")], "trainer 'adversarial'")


def test_weights_start_as_in_the_paper():
    torch.manual_seed(0)
    model = DCGAN(DCGAN.Config(), ImageSpec(3, 64, 64))
    convs = torch.cat([m.weight.flatten() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))])
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    scales = torch.cat([m.weight for m in norms])
    assert abs(convs.mean().item()) < 1e-3 and convs.std().item() == pytest.approx(0.02, rel=0.01)
    assert scales.mean().item() == pytest.approx(1.0, abs=0.005) and scales.std().item() == pytest.approx(0.02, rel=0.1)
    assert all(torch.all(m.bias == 0) for m in norms)


def test_images_are_signed_inside_and_scored_as_images():
    model = small().eval()
    batch = (torch.arange(3 * 28 * 28) % 256).to(torch.uint8).view(3, 1, 28, 28)
    x = model.prepare(batch)
    assert x.min() == -1 and x.max() == 1
    assert isinstance(model, DiscriminatorScored) and RankingSampler.fits(model)
    with torch.no_grad():
        torch.testing.assert_close(model.discriminator_score(batch / 255), model.discriminator_logits(x))


def test_registered_with_its_defaults():
    toolkit = get_toolkit()
    assert toolkit.models.get("dcgan") is DCGAN
    assert toolkit.objectives.get("gan") is GANObjective
    assert toolkit.trainers.get("adversarial") is AdversarialTrainer
    assert (DCGAN.default_objective, DCGAN.default_trainer, DCGAN.default_sampler) == ("gan", "adversarial", "prior")
    assert DCGAN.recipe.lr == 2e-4 and DCGAN.recipe.batch_size == 128
    assert AdversarialTrainer.drop_last


# --------------------------------------------------------------- objective


def logits_model() -> types.SimpleNamespace:
    """A stand-in whose discriminator returns its input, so the test chooses the logits."""
    return types.SimpleNamespace(discriminator_logits=lambda x: x)


def test_discriminator_loss_is_bce_on_logits():
    real, fake = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([-3.0, 0.0, 4.0, 1.0])
    loss = GANObjective().discriminator_loss(logits_model(), real, fake)
    expected = (F.binary_cross_entropy_with_logits(real, torch.ones(3))
                + F.binary_cross_entropy_with_logits(fake, torch.zeros(4)))
    by_hand = -torch.log(torch.sigmoid(real)).mean() - torch.log(1 - torch.sigmoid(fake)).mean()
    torch.testing.assert_close(loss.value, expected)
    torch.testing.assert_close(loss.value, by_hand)
    torch.testing.assert_close(loss.metrics["d_loss"], expected)
    torch.testing.assert_close(loss.metrics["d_real"], torch.sigmoid(real).mean())
    torch.testing.assert_close(loss.metrics["d_fake"], torch.sigmoid(fake).mean())


def test_generator_loss_is_non_saturating():
    fake = torch.tensor([-10.0, 0.0], requires_grad=True)
    loss = GANObjective().generator_loss(logits_model(), fake)
    torch.testing.assert_close(loss.value, F.binary_cross_entropy_with_logits(fake, torch.ones(2)))
    torch.testing.assert_close(loss.value, (math.log1p(math.exp(10.0)) + math.log(2)) / 2 * torch.ones(()))
    loss.value.backward()
    # A fake the discriminator rejects outright still gets a full gradient, -1/2 (the mean over 2).
    assert fake.grad[0].item() == pytest.approx(-0.5, abs=1e-4)
    assert set(loss.metrics) == {"g_loss"}


def test_objective_needs_a_generator_and_discriminator():
    assert GANObjective.fits(small())
    assert not GANObjective.fits(nn.Linear(2, 2))


# ----------------------------------------------------------------- trainer


def make_trainer(model: DCGAN, **config) -> AdversarialTrainer:
    return AdversarialTrainer(model, GANObjective(), AdversarialTrainer.Config(**config), lr=2e-4)


def count_steps(optimizer: torch.optim.Optimizer) -> list[int]:
    """A list that grows by one item per optimiser step."""
    steps: list[int] = []
    optimizer.register_step_post_hook(lambda *args: steps.append(1))
    return steps


def real_batch(n: int = 8) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, 28, 28), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)


def test_train_steps_honour_d_every_and_g_every():
    model = small(width=4).train()
    trainer = make_trainer(model, d_every=2, g_every=3)
    d_steps, g_steps = count_steps(trainer.optimizer_d), count_steps(trainer.optimizer_g)
    keys = []
    for _ in range(6):  # batches 0..5: D on 0, 2, 4; G on 0, 3
        metrics = trainer.train_step(model.prepare(real_batch()))
        assert all(v.dim() == 0 and not v.requires_grad and torch.isfinite(v) for v in metrics.values())
        keys.append(set(metrics))
    assert (len(d_steps), len(g_steps)) == (3, 2)
    assert keys[0] == {"d_loss", "d_real", "d_fake", "g_loss"}
    assert keys[1] == set() and keys[2] == {"d_loss", "d_real", "d_fake"} and keys[3] == {"g_loss"}
    assert all(p.requires_grad for p in model.parameters())


def parameters(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


@pytest.mark.parametrize("d_every,g_every,moved", [(2, 2, ()), (1, 2, ("netd",)), (2, 1, ("netg",))])
def test_each_step_updates_only_its_own_network(d_every, g_every, moved):
    model = small(width=4).train()
    trainer = make_trainer(model, d_every=d_every, g_every=g_every)
    trainer.batches = 1  # the batch where only the network with every=1 is due
    before = {name: parameters(getattr(model, name)) for name in ("netg", "netd")}
    trainer.train_step(model.prepare(real_batch()))
    for name, weights in before.items():
        after = parameters(getattr(model, name))
        changed = any(not torch.equal(after[k], v) for k, v in weights.items())
        assert changed == (name in moved), name


def test_state_dict_round_trips_through_a_checkpoint():
    model = small(width=4).train()
    trainer = make_trainer(model, d_every=1, g_every=2, lr_d=1e-4)
    for _ in range(3):
        trainer.train_step(model.prepare(real_batch()))
    skeleton, tensors = flatten_state(trainer.state_dict())
    state = unflatten_state(json.loads(json.dumps(skeleton)), {k: v.clone() for k, v in tensors.items()})

    copied = small(width=4).train()
    copied.load_state_dict(model.state_dict())
    resumed = make_trainer(copied, d_every=1, g_every=2, lr_d=1e-4)
    resumed.load_state_dict(state)
    assert resumed.batches == 3

    results = []
    for m, t in [(model, trainer), (copied, resumed)]:
        torch.manual_seed(7)
        metrics = t.train_step(m.prepare(real_batch()))
        results.append((metrics, m.state_dict()))
    (metrics, weights), (metrics2, weights2) = results
    assert set(metrics) == {"d_loss", "d_real", "d_fake"}  # batch 3: the generator skips it
    for key in metrics:
        assert torch.equal(metrics[key], metrics2[key]), key
    for key in weights:
        assert torch.equal(weights[key], weights2[key]), key


def test_channels_last_memory_gives_the_losses_and_gradients_of_contiguous_memory():
    """DCGAN trains channels-last by default: within float32 rounding it is the same computation."""
    contiguous, channels_last = small(), small().to(memory_format=torch.channels_last)
    assert not channels_last.netd[2].weight.is_contiguous()  # 16 x 8 x 4 x 4, now NHWC
    x, z = contiguous.prepare(real_batch(16)), torch.randn(16, 100, 1, 1, generator=torch.Generator().manual_seed(2))
    losses = []
    for model in (contiguous, channels_last):
        objective = GANObjective()
        d = objective.discriminator_loss(model, x, model.netg(z).detach()).value
        g = objective.generator_loss(model, model.netg(z)).value
        (d + g).backward()
        losses.append((d, g, [p.grad.clone() for p in model.parameters()]))
    (d1, g1, grads1), (d2, g2, grads2) = losses
    torch.testing.assert_close(d2, d1, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(g2, g1, rtol=1e-5, atol=1e-6)
    for one, two in zip(grads1, grads2, strict=True):
        torch.testing.assert_close(two, one, rtol=1e-4, atol=1e-5)


def test_trainer_rejects_a_model_without_netg_and_netd():
    class Plain(nn.Module):
        name = "plain"

    with pytest.raises(GentoolError, match="needs a model with a generator 'netg' and a discriminator 'netd'"):
        AdversarialTrainer(Plain(), GANObjective(), AdversarialTrainer.Config(), lr=2e-4)


# ------------------------------------------------------------- end to end


class Noise28(Dataset):
    """Random grey 28 x 28 images: enough for the loop to run, nothing to learn."""

    name = "noise28"

    def load(self, options: DataOptions) -> ImageData:
        images = torch.randint(0, 256, (40, 1, 28, 28), generator=torch.Generator().manual_seed(0),
                               dtype=torch.uint8)
        return ImageData(train=images[:32], test=images[32:], spec=ImageSpec(1, 28, 28))


def test_fit_resume_and_rank_through_the_api(tmp_path):
    plugin = types.SimpleNamespace(register_datasets=hookimpl(lambda register: register(Noise28)))
    options = dict(dataset="noise28", batch_size=12, device="cpu", run_dir=tmp_path / "run",
                   overrides=["nz=16", "ngf=4", "ndf=4", "trainer.g_every=2"])
    with toolkit_with(plugin):
        gt.fit("dcgan", epochs=1, **options)  # 32 images, batches of 12: 2 steps, the last 8 dropped
        run = gt.resume(tmp_path / "run", epochs=2)
        rows = run.metrics
        assert [row["step"] for row in rows] == [2, 4]
        assert {"train_d_loss", "train_d_real", "train_d_fake", "train_g_loss"} <= set(rows[-1])
        assert (tmp_path / "run" / "samples" / "epoch-002.png").is_file()
        samples = gt.load_run(tmp_path / "run").sample(6, sampler="ranking",
                                                       options={"candidates": 20, "batch_size": 8})
    assert samples.images.shape == (6, 1, 28, 28)
    assert torch.all(samples.scores[:-1] >= samples.scores[1:])


def netd_channels_last(model) -> bool:
    """Whether the discriminator's convolutions with several input channels are channels-last
    (one with one input channel is both formats at once)."""
    weight = next(p for p in model.netd.parameters() if p.dim() == 4 and p.shape[1] > 1)
    return weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()


class MemoryFormat(Callback):
    """Records whether the discriminator trains channels-last."""

    def on_fit_start(self, loop) -> None:
        self.channels_last = netd_channels_last(loop.model)


@pytest.mark.parametrize("choice, expected", [(None, False), (True, True), (False, False)])
def test_fit_trains_channels_last_when_told_to_and_resumes(tmp_path, choice, expected):
    plugin = types.SimpleNamespace(register_datasets=hookimpl(lambda register: register(Noise28)))
    seen = MemoryFormat()
    with toolkit_with(plugin):
        gt.fit("dcgan", "noise28", epochs=1, batch_size=16, device="cpu", run_dir=tmp_path / "run",
               channels_last=choice, overrides=["nz=16", "ngf=4", "ndf=4"], callbacks=[seen])
        assert seen.channels_last is expected
        resumed = gt.resume(tmp_path / "run", epochs=2, callbacks=[seen])
        loaded = gt.load_run(tmp_path / "run", device="cpu").model  # samples and evaluates in the format it trained in
    assert seen.channels_last is expected  # the run's own choice, kept in its config
    assert [row["step"] for row in resumed.metrics] == [2, 4]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["training"]["channels_last"] == choice
    assert netd_channels_last(loaded) is expected
