"""The reconstruct and interpolate samplers: any model with an encoder and a latent code, real
images from the run's data set, spherical paths for standard normal priors."""

from __future__ import annotations

import math

import pytest
import torch
from click.testing import CliRunner
from torch import Tensor, nn

import gentoolkit.api as gt
from gentoolkit import GentoolError, ImageData, ImageSpec, LatentEncoder, Model, has_capability, to_unit
from gentoolkit.cli import cli
from gentoolkit.reconstruction import InterpolateSampler, ReconstructSampler, lerp, slerp
from gentoolkit_flow.model import Glow

SPEC = ImageSpec(1, 2, 2)


class PriorCodes(Model):
    """An image is its own latent code (4 pixels), so paths can be checked number by number;
    a conditional one adds a tenth of the label to every pixel it generates. No encoder."""

    name = "prior-codes"

    def __init__(self, classes: int = 0):
        super().__init__(None, SPEC)
        self.num_classes = classes
        self.unused = nn.Parameter(torch.zeros(1))  # Model.device reads the parameters

    def prepare(self, batch: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return to_unit(batch)

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(n, 4, generator=generator)

    def generate(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        shift = 0 if labels is None else labels.float().view(-1, 1) / 10
        return (z + shift).view(-1, *SPEC.shape)


class Codes(PriorCodes):
    """The same with an encoder: an image's code is the image."""

    name = "codes"

    def encode_latent(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        return x.flatten(1)


class NormalCodes(Codes):
    standard_normal_prior = True


def data(n: int = 40) -> ImageData:
    """Test image i has every pixel at grey level i, and the label i % 2."""
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, *SPEC.shape).contiguous()
    labels = torch.arange(n) % 2
    return ImageData(train=images, test=images, spec=SPEC, train_labels=labels, test_labels=labels)


def sampler(cls, **options):
    drawer = cls(cls.Config(**options))
    drawer.data = data()
    return drawer


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def grey(images: Tensor) -> list[int]:
    """Each image's grey level (the test image's index, for real images)."""
    return [round(v) for v in (images.flatten(1)[:, 0] * 255).tolist()]


# ---------------------------------------------------------------- paths


def test_lerp_and_slerp_start_and_end_at_the_codes():
    a, b = torch.randn(3, 2, 5, generator=seeded()), torch.randn(3, 2, 5, generator=seeded(1))
    t = torch.linspace(0, 1, 4)
    for path in (lerp(a, b, t), slerp(a, b, t)):
        assert path.shape == (3, 4, 2, 5)
        torch.testing.assert_close(path[:, 0], a)
        torch.testing.assert_close(path[:, -1], b)
    torch.testing.assert_close(lerp(a, b, t)[:, 1], a + (b - a) / 3)


def test_slerp_keeps_to_the_great_circle_and_goes_straight_between_parallel_codes():
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    path = slerp(a, b, torch.linspace(0, 1, 5))[0]
    torch.testing.assert_close(path.norm(dim=1), torch.ones(5))  # a straight line would dip to 0.71
    torch.testing.assert_close(path[2], torch.tensor([1.0, 1.0]) / math.sqrt(2))
    torch.testing.assert_close(slerp(a, 2 * a, torch.tensor([0.5])), torch.tensor([[[1.5, 0.0]]]))


# ---------------------------------------------------------- reconstruct


def test_reconstruct_puts_each_real_image_beside_its_reconstruction():
    images = sampler(ReconstructSampler).sample(Codes(), 7, seeded()).images
    assert images.shape == (7, *SPEC.shape)
    real, recon = images[0::2], images[1::2]
    torch.testing.assert_close(recon, real[:3])  # the codes model reconstructs exactly
    assert len(set(grey(real))) == 4  # four different test images ...
    assert grey(sampler(ReconstructSampler).sample(Codes(), 7, seeded()).images) == grey(images)  # ... per seed
    assert grey(sampler(ReconstructSampler).sample(Codes(), 7, seeded(1)).images) != grey(images)


def test_a_flow_reconstructs_its_images_up_to_the_dequantisation_noise():
    spec = ImageSpec(1, 8, 8)
    torch.manual_seed(0)
    glow = Glow(Glow.Config(levels=2, steps=2, hidden=8), spec).eval()
    assert has_capability(glow, LatentEncoder)
    drawer = ReconstructSampler()
    pixels = torch.randint(0, 256, (10, *spec.shape), generator=seeded(), dtype=torch.uint8)
    drawer.data = ImageData(train=pixels, test=pixels, spec=spec)
    images = drawer.sample(glow, 8, seeded()).images
    assert (images[1::2] - images[0::2]).abs().max() < 1 / 256 + 1e-4


def test_a_conditional_model_reconstructs_images_of_the_classes_asked_for_with_their_labels():
    labels = torch.tensor([1, 1, 0, 0, 1, 1])  # three pairs: classes 1, 0 and 1
    images = sampler(ReconstructSampler).sample(Codes(classes=2), 6, seeded(), labels).images
    assert [level % 2 for level in grey(images[0::2])] == [1, 0, 1]
    torch.testing.assert_close(images[1::2] - images[0::2], torch.tensor([0.1, 0.0, 0.1]).view(3, 1, 1, 1).expand(
        3, *SPEC.shape))


def test_reconstruct_asks_for_no_more_images_than_the_split_has():
    with pytest.raises(GentoolError, match="needs 41 real images, and the test split has 40"):
        sampler(ReconstructSampler).sample(Codes(), 82, seeded())


# ---------------------------------------------------------- interpolate


def test_interpolate_between_prior_draws_is_spherical_for_a_standard_normal_prior_and_straight_otherwise():
    for model, spherical in ((NormalCodes(), True), (Codes(), False)):
        images = sampler(InterpolateSampler, steps=5, between="prior").sample(model, 9, seeded()).images
        assert images.shape == (9, *SPEC.shape)  # two paths of 5, the second cut short
        g = seeded()
        start, end = model.sample_latent(2, g), model.sample_latent(2, g)
        expected = (slerp if spherical else lerp)(start, end, torch.linspace(0, 1, 5)).flatten(0, 1)[:9]
        torch.testing.assert_close(images.flatten(1), expected)


def test_interpolate_between_real_images_goes_from_one_to_the_other():
    images = sampler(InterpolateSampler, steps=4, path="linear").sample(Codes(), 8, seeded()).images
    paths = grey(images)
    for first, last, middle in ((paths[0], paths[3], images[1]), (paths[4], paths[7], images[5])):
        assert first != last
        torch.testing.assert_close(middle, torch.full(SPEC.shape, (2 * first + last) / 3 / 255))


def test_interpolate_between_real_images_needs_an_encoder():
    model = PriorCodes()
    assert not has_capability(model, LatentEncoder)
    with pytest.raises(GentoolError, match="--between data needs a model with an encoder.*use --between prior"):
        sampler(InterpolateSampler).sample(model, 8, seeded())
    assert sampler(InterpolateSampler, between="prior").sample(model, 8, seeded()).images.shape == (8, *SPEC.shape)


@pytest.mark.parametrize("options,message", [({"steps": 1}, "--steps must be 2 or more"),
                                             ({"batch_size": 0}, "--batch-size must be a positive")])
def test_bad_interpolate_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        InterpolateSampler.Config(**options)


# ------------------------------------------------------------------ runs


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("vae") / "run"
    gt.fit("vae", "shapes", max_steps=2, device="cpu", run_dir=path,
           overrides=["data.train_size=256", "data.test_size=64", "hidden=16", "latent_dim=2"])
    return gt.load_run(path)


def test_a_run_hands_its_data_only_to_samplers_that_need_it(vae_run):
    assert vae_run.sampler("reconstruct").data is vae_run.data
    assert vae_run.sampler("interpolate").data is vae_run.data
    assert vae_run.sampler("interpolate", {"between": "prior"}).data is None
    assert vae_run.sampler("prior").data is None


def test_a_vae_reconstructs_its_test_images(vae_run):
    images = vae_run.sample(16, sampler="reconstruct", seed=3).images
    model = vae_run.model
    real = images[0::2]
    assert all(any(torch.equal(image, to_unit(t)) for t in vae_run.data.test) for image in real)
    with torch.no_grad():  # shapes are black and white: preparing them draws nothing
        torch.testing.assert_close(images[1::2], model.generate(model.encode_latent(model.prepare(
            (real * 255).round().to(torch.uint8)))))


def test_batches_hold_whole_paths(vae_run):
    batches = list(vae_run.sample_batches(20, batch_size=8, sampler="interpolate", options={"steps": 3}))
    assert [len(b.images) for b in batches] == [6, 6, 6, 2]


def test_gentool_samples_reconstructions_and_interpolations(vae_run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for args in (["--sampler", "reconstruct", "-n", "32", "--out", "recon.png"],
                 ["--sampler", "interpolate", "-n", "24", "--steps", "6", "--out", "paths.png"],
                 ["--sampler", "interpolate", "-n", "8", "--between", "prior", "--out", "prior.png"]):
        result = runner.invoke(cli, ["sample", "--run", str(vae_run.path), *args])
        assert result.exit_code == 0, result.output
    assert (tmp_path / "recon.png").read_bytes()[:4] == b"\x89PNG"
    result = runner.invoke(cli, ["sample", "--run", str(vae_run.path), "--sampler", "interpolate", "--step", "3"])
    assert result.exit_code == 1 and "Did you mean '--steps'" in result.output
