"""The flow plugin: every layer's log-determinant against its Jacobian, invertibility, the
bits/dim convention, actnorm's data-dependent start, training, and glow through the CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from torch.autograd.functional import jacobian

import gentoolkit.api as gt
import gentoolkit_flow
from gentoolkit import BitsPerDim, GentoolError, ImageSpec, LatentModel, Likelihood, StandardNormalPrior, capabilities
from gentoolkit.checkpoint import load_weights, save_weights
from gentoolkit.cli import cli
from gentoolkit.testing import toolkit_with
from gentoolkit_flow import (
    ActNorm,
    Coupling,
    Glow,
    InvertibleConv1x1,
    MaximumLikelihood,
    Squeeze,
    bits_per_dim,
)
from gentoolkit_flow.maths import standard_normal_log_prob
from gentoolkit_vae import BernoulliVAE


def random_pixels(n: int, spec: ImageSpec, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, *spec.shape), generator=g, dtype=torch.uint8)


def perturb(module: torch.nn.Module, scale: float = 0.3) -> torch.nn.Module:
    """Move every parameter off its neutral start (zero convolutions, unit scales), so
    a test sees the layer at work and not the identity it starts as."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


TINY = ImageSpec(1, 4, 4)


def tiny_glow(spec: ImageSpec = TINY, **options) -> Glow:
    torch.manual_seed(0)
    return Glow(Glow.Config(**{"levels": 2, "steps": 2, "hidden": 8, **options}), spec)


# ------------------------------------------------------------------- layers

LAYERS = {
    "squeeze": lambda: Squeeze(),
    "actnorm": lambda: perturb(ActNorm(4)),
    "conv1x1": lambda: InvertibleConv1x1(4, lu=False),
    "conv1x1-lu": lambda: perturb(InvertibleConv1x1(4, lu=True)),
    "affine-coupling": lambda: perturb(Coupling(4, hidden=8, affine=True)),
    "additive-coupling": lambda: perturb(Coupling(4, hidden=8, affine=False)),
}


@pytest.mark.parametrize("name", LAYERS)
def test_log_det_is_that_of_the_full_jacobian(name):
    torch.manual_seed(0)
    layer = LAYERS[name]().double().eval()
    x = torch.randn(1, 4, 4, 4, dtype=torch.float64)  # D = 64
    jac = jacobian(lambda v: layer(v.view_as(x))[0].flatten(), x.flatten())  # D x D
    _, logdet = layer(x)
    assert logdet.shape == (1,)
    torch.testing.assert_close(logdet[0], torch.linalg.slogdet(jac).logabsdet)


@pytest.mark.parametrize("name", LAYERS)
def test_layers_invert(name):
    torch.manual_seed(0)
    layer = LAYERS[name]().eval()
    x = torch.randn(3, 4, 6, 6)
    y, logdet = layer(x)
    assert y.shape == (3, 16, 3, 3) if name == "squeeze" else y.shape == x.shape
    assert logdet.shape == (3,)
    torch.testing.assert_close(layer.inverse(y), x, atol=1e-5, rtol=0)


def test_squeeze_moves_each_2x2_block_into_channels():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    y, _ = Squeeze()(x)
    assert y[0, :, 0, 0].tolist() == [0.0, 1.0, 4.0, 5.0]  # the top-left block
    assert y[0, :, 1, 1].tolist() == [10.0, 11.0, 14.0, 15.0]


def test_actnorm_starts_from_the_first_training_batch_then_keeps_its_parameters(tmp_path):
    layer = ActNorm(3)
    std, mean = torch.tensor([0.1, 2.0, 7.0]).view(1, 3, 1, 1), torch.tensor([5.0, -1.0, 0.0]).view(1, 3, 1, 1)
    x = torch.randn(64, 3, 5, 5) * std + mean
    layer.eval()(x)
    assert not layer.initialized  # evaluation never initialises
    y, _ = layer.train()(x)
    assert layer.initialized
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4, rtol=0)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    layer(3 * x + 1)  # a second batch is an ordinary forward pass
    assert all(torch.equal(before[k], v) for k, v in layer.state_dict().items())

    save_weights(layer, tmp_path / "actnorm.safetensors")
    loaded = ActNorm(3).train()
    load_weights(loaded, tmp_path / "actnorm.safetensors")
    assert loaded.initialized
    torch.testing.assert_close(loaded(3 * x + 1)[0], layer(3 * x + 1)[0])  # not initialised again


def test_lu_conv_starts_as_a_rotation_stored_as_its_lu_factors():
    torch.manual_seed(0)
    conv = InvertibleConv1x1(6, lu=True)
    w = conv.matrix()
    torch.testing.assert_close(w @ w.T, torch.eye(6), atol=1e-5, rtol=0)
    assert conv.log_abs_det().abs() < 1e-5
    assert set(conv.state_dict()) == {"permutation", "sign_s", "lower", "upper", "log_s"}


# -------------------------------------------------------------------- model


def test_the_whole_flow_is_a_change_of_variables():
    """log p(x) = log N(eps; 0, I) + log |det d eps / dx| for the standardised codes eps:
    the split priors, the centring and every layer's log-determinant, checked at once."""
    model = perturb(tiny_glow(), scale=0.1).double().eval()
    x = model.prepare(random_pixels(1, model.spec)).double()
    codes, log_p = model(x)
    jac = jacobian(lambda v: model(v.view_as(x))[0].flatten(), x.flatten())  # 16 x 16
    expected = standard_normal_log_prob(codes).sum() + torch.linalg.slogdet(jac).logabsdet
    torch.testing.assert_close(log_p[0], expected)


@pytest.mark.parametrize("spec,options", [
    (ImageSpec(1, 28, 28), {}),
    (ImageSpec(3, 32, 32), {"levels": 3, "coupling": "additive"}),
    (ImageSpec(3, 16, 16), {"levels": 4, "lu": False}),
    (ImageSpec(3, 64, 64), {"steps": 1}),
], ids=["mnist", "cifar-additive", "rgb-plain-conv", "folder-64"])
def test_images_go_to_codes_and_back(spec, options):
    model = tiny_glow(spec, **options)
    x = model.prepare(random_pixels(4, spec))
    model.train()(x)  # initialise the actnorms on data, as training does
    model = perturb(model, scale=0.05).eval()
    with torch.no_grad():
        codes, log_p = model(x)
        assert codes.shape == (4, spec.pixels) and log_p.shape == (4,)
        torch.testing.assert_close(model.inverse(codes), x, atol=1e-4, rtol=0)


def test_an_identity_flow_has_the_closed_form_density_and_bits_per_dim():
    """With the 1x1 convolutions set to the identity, actnorm not yet initialised and additive
    couplings (whose nets start at zero), glow only moves pixels: log p(x) is the standard
    normal density of x - 1/2, and bits/dim follow from it in closed form."""
    model = tiny_glow(ImageSpec(1, 8, 8), coupling="additive", lu=False).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, InvertibleConv1x1):
                module.weight.copy_(torch.eye(len(module.weight)))
    x = model.prepare(random_pixels(5, model.spec))
    codes, log_p = model(x)
    expected = (-0.5 * (x - 0.5).square() - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)
    torch.testing.assert_close(log_p, expected)
    torch.testing.assert_close(codes.sort(1).values, (x - 0.5).flatten(1).sort(1).values)
    log_p0, d = log_p[0].item(), 64
    assert model.bits_per_dim(log_p0) == pytest.approx((-log_p0 + d * math.log(256)) / (d * math.log(2)))


def test_bits_per_dim_of_the_uniform_density_is_eight():
    """The uniform density on [0, 1]^D (log p = 0) gives each 8-bit image probability 256^-D."""
    assert bits_per_dim(0.0, 784) == pytest.approx(8.0)
    assert bits_per_dim(784 * math.log(2), 784) == pytest.approx(7.0)
    assert tiny_glow().bits_per_dim(0.0) == pytest.approx(8.0)


def test_prepare_dequantises_within_each_pixels_bin():
    model = tiny_glow()
    batch = random_pixels(50, model.spec)
    x = model.prepare(batch, torch.Generator().manual_seed(0))
    assert torch.all(x >= batch / 256) and torch.all(x < (batch.float() + 1) / 256)
    torch.testing.assert_close(x, model.prepare(batch, torch.Generator().manual_seed(0)))


def test_log_prob_in_chunks_is_the_exact_log_density():
    model = perturb(tiny_glow(), scale=0.1).eval()
    x = model.prepare(random_pixels(7, model.spec))
    with torch.no_grad():
        whole = model.log_density(x)
        chunked = model.log_prob(x, k=None, generator=torch.Generator(), max_floats=300)  # 2 images at a time
    assert chunked.dtype == torch.float64 and chunked.shape == (7,)
    torch.testing.assert_close(chunked, whole.double())


def test_glow_declares_its_capabilities_and_samples_at_a_temperature():
    model = tiny_glow(ImageSpec(3, 8, 8)).eval()
    for capability in (LatentModel, StandardNormalPrior, Likelihood, BitsPerDim):
        assert isinstance(model, capability)
    assert "VariationalModel" not in capabilities(model)
    assert (model.nll_kind, model.default_nll_k) == ("exact", None)
    z = model.sample_latent(4000, torch.Generator().manual_seed(0))
    assert z.shape == (4000, 192)
    assert abs(z.mean().item()) < 0.01 and z.std().item() == pytest.approx(1.0, abs=0.01)
    with torch.no_grad():
        images = model.generate(0.7 * z[:8])
    assert images.shape == (8, 3, 8, 8) and images.min() >= 0 and images.max() <= 1


def test_mle_steps_lower_the_nll_of_a_batch():
    spec = ImageSpec(1, 8, 8)
    model = tiny_glow(spec)
    on = torch.rand(spec.shape, generator=torch.Generator().manual_seed(0)) < 0.5
    batch = torch.where(on, 220, 30).expand(64, *spec.shape).to(torch.uint8)  # one image, many dequantisations
    objective = MaximumLikelihood()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss = objective.loss(model, model.prepare(batch))
        optimizer.zero_grad()
        loss.value.backward()
        optimizer.step()
        losses.append(loss.value.item())
    assert losses[-1] < losses[0] - 1.0, losses
    assert set(loss.metrics) == {"bits_per_dim", "nll"}
    torch.testing.assert_close(loss.metrics["bits_per_dim"],
                               bits_per_dim(-loss.metrics["nll"], spec.pixels))


def test_mle_needs_an_exact_likelihood():
    assert MaximumLikelihood.fits(tiny_glow())
    assert not MaximumLikelihood.fits(BernoulliVAE(BernoulliVAE.Config(), ImageSpec(1, 8, 8)))


def test_save_and_load_keeps_the_weights_and_the_actnorm_state(tmp_path):
    model = tiny_glow()
    x = model.prepare(random_pixels(16, model.spec))
    model.train()(x)
    save_weights(perturb(model, scale=0.05), tmp_path / "glow.safetensors")  # no two tensors share memory
    loaded = tiny_glow()
    load_weights(loaded, tmp_path / "glow.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(loaded.train()(x)[1], model.train()(x)[1])


# ------------------------------------------------------------------ configs


@pytest.mark.parametrize("options", [{"levels": 0}, {"steps": 0}, {"hidden": -1}, {"coupling": "spline"}])
def test_invalid_configs_raise(options):
    with pytest.raises(ValueError):
        Glow.Config(**options)


@pytest.mark.parametrize("size,levels,message", [
    (28, 3, "levels=3 needs image sides divisible by 8, and 28x28 images allow at most levels=2; lower levels "
            "or resize with --image-size 32."),
    (27, 1, "27x27 images allow no level; lower levels or resize with --image-size 28."),
])
def test_levels_the_image_size_does_not_allow_are_one_clear_error(size, levels, message):
    with pytest.raises(GentoolError, match=message.replace(".", r"\.").replace("+", r"\+")) as error:
        Glow(Glow.Config(levels=levels), ImageSpec(1, size, size))
    assert "\n" not in str(error.value)


def test_plugin_registers_glow_with_its_alias_and_the_mle_objective():
    with toolkit_with(gentoolkit_flow, only=[]) as toolkit:
        assert toolkit.models.get("glow") is Glow
        assert toolkit.models.get("flow") is Glow
        assert toolkit.objectives.get("mle") is MaximumLikelihood


# ---------------------------------------------------------------------- CLI

TINY_FIT = ["--dataset", "shapes", "--image-size", "8", "--set", "data.train_size=96", "--set", "data.test_size=32",
            "--set", "steps=1", "--set", "hidden=8", "--batch-size", "32", "--device", "cpu", "--quiet"]


def test_glow_through_the_command_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    runner = CliRunner()

    def gentool(*args):
        result = runner.invoke(cli, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        return result.stdout

    listing = gentool("list-models")
    assert "glow" in listing and "flow" in listing
    gentool("fit", "flow", *TINY_FIT, "--epochs", "2", "--max-steps", "4")  # by its alias
    (run,) = (tmp_path / "runs" / "glow").iterdir()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"train_loss", "train_bits_per_dim", "test_bits_per_dim", "test_nll"} <= set(rows[-1])
    assert rows[-1]["test_loss"] == pytest.approx(rows[-1]["test_bits_per_dim"])
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["name"] == "glow" and config["objective"]["name"] == "mle"

    gentool("sample", "glow", "-n", "16", "--temperature", "0.7", "--out", "x.png")  # the latest run
    assert (tmp_path / "x.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    gentool("sample", "--run", run, "-n", "16", "--temperature", "0.7", "--out", "x.safetensors")
    assert load_file(tmp_path / "x.safetensors")["images"].shape == (16, 1, 8, 8)
    result = json.loads(gentool("evaluate", "--run", run, "--metric", "nll", "--limit", "32", "--json"))
    assert result["nll_kind"] == "exact" and "nll_k" not in result
    assert result["nll_bits_per_dim"] == pytest.approx(bits_per_dim(-result["nll"], 64))

    error = runner.invoke(cli, ["fit", "glow", *TINY_FIT, "--image-size", "28", "--set", "levels=3"])
    assert error.exit_code != 0 and "Traceback" not in error.output
    (line,) = [line for line in error.output.splitlines() if line.startswith("Error")]
    assert "levels=3 needs image sides divisible by 8" in line


def test_a_saved_run_gives_the_log_likelihood_it_was_trained_to(tmp_path):
    run = gt.fit("glow", "shapes", image_size=8, max_steps=3, batch_size=32, device="cpu", run_dir=tmp_path / "r",
                 overrides=["data.train_size=96", "data.test_size=32", "steps=1", "hidden=8"])
    x = run.model.prepare(random_pixels(16, run.model.spec), torch.Generator().manual_seed(0))
    reloaded = gt.load_run(run.path).model
    with torch.no_grad():
        expected = run.model.log_prob(x, k=None, generator=torch.Generator(), max_floats=1 << 20)
        torch.testing.assert_close(reloaded.log_prob(x, k=None, generator=torch.Generator(), max_floats=1 << 20),
                                   expected)
        reloaded.train()(x)  # its actnorms were set in training and stay as they are
        torch.testing.assert_close(reloaded.eval().log_density(x).double(), expected)


def test_glow_is_found_by_a_fresh_process(tmp_path):
    """Through the entry point in pyproject.toml, as a user's shell finds it."""
    result = subprocess.run([sys.executable, "-m", "gentoolkit", "fit", "glow", *TINY_FIT, "--max-steps", "3",
                             "--run-dir", "r"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert {"config.json", "model.safetensors", "metrics.jsonl"} <= {p.name for p in (tmp_path / "r").iterdir()}
    assert json.loads((tmp_path / "r" / "metrics.jsonl").read_text())["step"] == 3


@pytest.mark.slow
def test_glow_trains_on_mnist(mnist_root, tmp_path):
    run = gt.fit("glow", "mnist", data_dir=mnist_root, download=False, max_steps=40, batch_size=32, device="cpu",
                 overrides=["steps=2", "hidden=32"], run_dir=tmp_path / "r")
    row = run.metrics[-1]
    assert row["step"] == 40 and row["train_bits_per_dim"] < 8  # the uniform density's 8 bits/dim
    result = run.evaluate(["nll"], limit=500)
    assert result["nll_kind"] == "exact" and result["nll_bits_per_dim"] < 7.8
    assert result["nll_bits_per_dim"] == pytest.approx(bits_per_dim(-result["nll"], 784))
    assert result["nll_bits_per_dim"] == pytest.approx(row["test_bits_per_dim"], abs=0.05)  # other noise, same model
