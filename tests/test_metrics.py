"""The metrics plugin: likelihoods checked against a model with a closed-form log p(x), distances
against closed forms, and the sample-quality metrics end to end on a tiny labelled data set."""

from __future__ import annotations

import functools
import json
import math
import sys
import time
import types

import pytest
import torch
import toy_plugin
from phase_log import phase_log
from torch import Tensor, nn

import gentoolkit.api as gt
import gentoolkit_metrics
from gentoolkit import (
    Dataset,
    GentoolError,
    ImageData,
    ImageSpec,
    Model,
    binarize,
    hookimpl,
    importance_weighted_log_prob,
    to_unit,
)
from gentoolkit.standard import PriorSampler
from gentoolkit.testing import invoke_gentool, toolkit_with
from gentoolkit_metrics import (
    ELBO,
    FID,
    KID,
    NLL,
    PrecisionRecall,
    Reconstruction,
    features,
    frechet_distance,
    kernel_distance,
    likelihood,
    precision_recall,
)

F64 = torch.float64


@pytest.fixture(autouse=True)
def one_thread():
    """The tensors here are tiny: a second thread only adds synchronisation, which on a shared,
    busy machine made these tests 20 times slower (65 s instead of 3 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def evaluate(metric, model: Model, images: Tensor, k: int | None = None, data: ImageData | None = None,
             batch_size: int = 500, seed: int = 0) -> dict:
    """Call a metric as Run.evaluate does."""
    data = data or ImageData(train=images, test=images, spec=model.spec)
    return metric.compute(model, images, k=k, batch_size=batch_size, generator=seeded(seed), data=data,
                          sampler=PriorSampler())


# ------------------------------------------------------ linear-Gaussian VAE


class LinearGaussian(Model):
    """z ~ N(0, I), x|z ~ N(Wz + b, s^2 I) on 1 x 2 x 3 images, in float64.

    W has orthogonal columns, so the true posterior p(z|x) is a diagonal Gaussian that
    ``encode`` returns exactly (``shift`` moves its mean, making it wrong on purpose), and
    log p(x) = log N(x; b, W W^T + s^2 I) is known in closed form.
    """

    name = "linear-gaussian"
    s = 0.3
    nll_kind = "iwae"
    default_nll_k = 5000

    def __init__(self, shift: float = 0.0):
        super().__init__(None, ImageSpec(1, 2, 3))
        g = seeded()
        q, _ = torch.linalg.qr(torch.randn(6, 2, generator=g, dtype=F64))
        self.w = nn.Parameter(q * torch.tensor([2.0, 0.5], dtype=F64))  # D x L
        self.b = nn.Parameter(0.3 + 0.4 * torch.rand(6, generator=g, dtype=F64))
        self.shift = shift

    def prepare(self, batch, generator=None):
        return to_unit(batch).double()

    def encode(self, x):
        precision = 1 + self.w.square().sum(0) / self.s ** 2  # L: of p(z|x), diagonal as W^T W is
        mu = (x.flatten(1) - self.b) @ self.w / self.s ** 2 / precision
        return mu + self.shift, (-precision.log()).expand_as(mu)

    def decode(self, z):
        return (z @ self.w.T + self.b).view(-1, *self.spec.shape)

    def log_likelihood(self, x, decoded):
        return torch.distributions.Normal(decoded, self.s).log_prob(x).flatten(1).sum(1)

    def sample_latent(self, n, generator=None):
        return torch.randn(n, 2, generator=generator, dtype=F64)

    def log_prob(self, x, *, k, generator, max_floats):
        return importance_weighted_log_prob(self, x, k, generator, max_floats)

    def generate(self, z):
        return self.decode(z).clamp(0, 1)

    def log_marginal(self, images: Tensor) -> Tensor:
        """log p(x) per image, in closed form."""
        cov = self.w @ self.w.T + self.s ** 2 * torch.eye(6, dtype=F64)
        return torch.distributions.MultivariateNormal(self.b, cov).log_prob(self.prepare(images).flatten(1))


class BinarisedLinearGaussian(LinearGaussian):
    """Sees binarised pixels, as the Bernoulli VAE does."""

    def prepare(self, batch, generator=None):
        return binarize(to_unit(batch), generator).double()


@pytest.fixture(scope="module")
def pixels() -> Tensor:
    """64 uint8 images drawn from the linear-Gaussian model."""
    model, g = LinearGaussian(), seeded(1)
    with torch.no_grad():
        x = model.decode(model.sample_latent(64, g)) + model.s * torch.randn(64, 1, 2, 3, generator=g, dtype=F64)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def test_with_the_exact_posterior_elbo_and_nll_equal_log_px(pixels):
    model = LinearGaussian()
    log_px = model.log_marginal(pixels).mean().item()
    nll = evaluate(NLL(), model, pixels, k=50)
    # every importance weight is p(x)
    assert nll == {"nll": pytest.approx(-log_px, abs=1e-6), "nll_k": 50, "nll_kind": "iwae"}
    elbo = evaluate(ELBO(), model, pixels, k=2000)
    assert elbo["elbo"] == pytest.approx(log_px, abs=0.01)  # only the sampled recon term is noisy
    assert elbo["elbo"] == pytest.approx(-(elbo["kl"] + elbo["recon_nll"]))
    assert elbo["kl"] > 0


class DequantisedLinearGaussian(LinearGaussian):
    """States its bound in bits per dimension, as a density of dequantised 8-bit pixels does."""

    def bits_per_dim(self, log_likelihood):
        return (-log_likelihood + 6 * math.log(256)) / (6 * math.log(2))


def test_bounds_come_in_bits_per_dim_where_the_model_can_state_them(pixels):
    model = DequantisedLinearGaussian()
    nll = evaluate(NLL(), model, pixels, k=50)
    elbo = evaluate(ELBO(), model, pixels, k=10)
    assert nll["nll_bits_per_dim"] == pytest.approx((nll["nll"] + 6 * math.log(256)) / (6 * math.log(2)))
    assert elbo["elbo_bits_per_dim"] == pytest.approx(model.bits_per_dim(elbo["elbo"]))
    assert "elbo_bits_per_dim" not in evaluate(ELBO(), LinearGaussian(), pixels, k=10)  # no bits_per_dim method


def test_with_a_wrong_posterior_the_bounds_are_ordered_and_nll_tightens_with_k(pixels):
    model = LinearGaussian(shift=0.1)
    log_px = model.log_marginal(pixels).mean().item()
    elbo = evaluate(ELBO(), model, pixels, k=200)["elbo"]
    nll = {k: evaluate(NLL(), model, pixels, k=k)["nll"] for k in (10, 1000)}
    assert elbo < -nll[10] < -nll[1000] <= log_px + 0.01  # a bound in expectation: allow the sampling noise
    assert abs(nll[1000] + log_px) < abs(nll[10] + log_px) < log_px - elbo
    assert log_px - elbo > 0.1  # the gap the wrong posterior opens


def test_nll_is_the_same_for_any_chunk_size(pixels):
    model = LinearGaussian(shift=0.5)
    floats = [64 * 6, 7 * 64 * 6, 1 << 26]  # 1, 7 (with a short last chunk) and all 50 samples at once
    results = [evaluate(NLL(NLL.Config(max_floats=m)), model, pixels, k=50)["nll"] for m in floats]
    assert results == pytest.approx([results[0]] * 3, abs=1e-9)


def test_binarisation_is_fixed_by_the_seed_alone(pixels):
    model = BinarisedLinearGaussian()

    def prepared(batch_size, seed=0):
        return torch.cat([x for _, x, _ in likelihood.prepared_batches(model, pixels, batch_size, seeded(seed),
                                                                       "test")])

    x = prepared(500)
    assert set(x.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(prepared(5), x)
    assert not torch.equal(prepared(500, seed=1), x)


@pytest.mark.parametrize("metric", [ELBO(), NLL(), FID()])
def test_k_must_be_positive(metric, pixels):
    with pytest.raises(GentoolError, match="k must be a positive integer, got 0"):
        evaluate(metric, LinearGaussian(), pixels, k=0)


# ----------------------------------------------------------- reconstruction


class Autoencoder(LinearGaussian):
    """Reconstructs x exactly (blur=0) or as flat grey (blur=1)."""

    def __init__(self, blur: float):
        super().__init__()
        self.blur = blur

    def encode(self, x):
        return x.flatten(1), torch.zeros_like(x.flatten(1))

    def generate(self, z):
        return ((1 - self.blur) * z + self.blur * 0.5).view(-1, *self.spec.shape)


def test_recon_against_closed_forms(pixels):
    x = to_unit(pixels).double()
    entropy = -(x * x.log() + (1 - x) * (1 - x).log()).nan_to_num().flatten(1).sum(1).mean().item()
    exact = evaluate(Reconstruction(), Autoencoder(blur=0.0), pixels, batch_size=10)
    assert exact == {"recon_mse": pytest.approx(0.0, abs=1e-12), "recon_bce": pytest.approx(entropy)}
    grey = evaluate(Reconstruction(), Autoencoder(blur=1.0), pixels)
    assert grey["recon_mse"] == pytest.approx((x - 0.5).square().flatten(1).sum(1).mean().item())
    assert grey["recon_bce"] == pytest.approx(6 * math.log(2))


# ---------------------------------------------------------------- distances


def with_moments(n: int, mean: Tensor, cov: Tensor, g: torch.Generator) -> Tensor:
    """n samples whose sample mean and (unbiased) covariance are exactly ``mean`` and ``cov``."""
    x = torch.randn(n, len(mean), generator=g, dtype=F64)
    x = x - x.mean(0)
    x = x @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(x.T))).T  # sample covariance I
    return x @ torch.linalg.cholesky(cov).T + mean


def test_frechet_distance_matches_closed_forms():
    g = seeded()
    m1, m2 = torch.tensor([0.0, 1.0, 2.0], dtype=F64), torch.tensor([1.0, 1.0, 0.0], dtype=F64)
    v1, v2 = torch.tensor([1.0, 4.0, 0.5], dtype=F64), torch.tensor([2.0, 1.0, 0.5], dtype=F64)
    a, b = with_moments(500, m1, torch.diag(v1), g), with_moments(700, m2, torch.diag(v2), g)
    diagonal = (m1 - m2).square().sum() + (v1.sqrt() - v2.sqrt()).square().sum()  # commuting covariances
    assert frechet_distance(a, b) == pytest.approx(diagonal.item(), rel=1e-9)

    # full covariances: tr((S1 S2)^1/2) is the sum of the roots of the (real) eigenvalues of S1 S2
    r1, r2 = torch.randn(3, 3, generator=g, dtype=F64), torch.randn(3, 3, generator=g, dtype=F64)
    s1, s2 = r1 @ r1.T + 0.1 * torch.eye(3, dtype=F64), r2 @ r2.T + 0.1 * torch.eye(3, dtype=F64)
    a, b = with_moments(500, m1, s1, g), with_moments(700, m2, s2, g)
    trace_root = torch.linalg.eigvals(s1 @ s2).real.sqrt().sum()
    expected = (m1 - m2).square().sum() + s1.trace() + s2.trace() - 2 * trace_root
    assert frechet_distance(a, b) == pytest.approx(expected.item(), rel=1e-9)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def test_kid_is_zero_for_one_distribution_and_grows_with_a_shift():
    g = seeded()
    a, b = (torch.randn(1000, 8, generator=g, dtype=F64) for _ in range(2))
    same, spread = kernel_distance(a, b, g, subsets=5, subset_size=400)
    shifted, _ = kernel_distance(a, b + 1, g, subsets=5, subset_size=400)
    assert abs(same) < 3 * spread + 1e-3
    assert shifted > 0.5 and shifted > 100 * abs(same)


def test_precision_and_recall():
    g = seeded()
    cluster = torch.randn(300, 4, generator=g, dtype=F64)
    far = cluster + 100
    assert precision_recall(cluster, cluster) == (1.0, 1.0)
    assert precision_recall(cluster, far) == (0.0, 0.0)
    # a model covering one of two real modes: everything it makes looks real, it misses half the data
    precision, recall = precision_recall(torch.cat([cluster, far]), torch.randn(300, 4, generator=g, dtype=F64))
    assert precision > 0.95 and recall == pytest.approx(0.5, abs=0.03)


# ------------------------------------------------------ sample quality, e2e


def labelled(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """n noisy 1 x 8 x 8 images of four classes: a row bar, a column bar, a diagonal, a square."""
    g = seeded(seed)
    base = torch.zeros(4, 8, 8)
    base[0, 2:4], base[1, :, 5:7], base[2] = 1, 1, torch.eye(8)
    base[3, 3:6, 3:6] = 1
    labels = torch.randint(0, 4, (n,), generator=g)
    images = 0.75 * base[labels] + 0.25 * torch.rand(n, 8, 8, generator=g)
    return (images * 255).round().to(torch.uint8).unsqueeze(1), labels


def tiny_data(labels: bool = True) -> ImageData:
    train, train_labels = labelled(512, seed=0)
    test, test_labels = labelled(256, seed=1)
    if not labels:
        return ImageData(train=train, test=test, spec=ImageSpec(1, 8, 8))
    return ImageData(train=train, test=test, spec=ImageSpec(1, 8, 8),
                     train_labels=train_labels, test_labels=test_labels)


class Replay(Model):
    """Generates images drawn from a fixed bank: the data's own distribution, or noise."""

    name = "replay"

    def __init__(self, bank: Tensor):
        super().__init__(None, ImageSpec(1, 8, 8))
        self.register_buffer("bank", bank)
        self.unused = nn.Parameter(torch.zeros(1))  # Model.device reads the parameters

    def prepare(self, batch, generator=None):
        return to_unit(batch)

    def sample_latent(self, n, generator=None):
        return torch.randint(0, len(self.bank), (n,), generator=generator)

    def generate(self, z):
        return to_unit(self.bank[z])


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty user cache, no Inception whatever is installed, and a classifier trained
    with 50 updates (plenty for the 8 x 8 patterns) to keep the tests fast."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(features, "inception_weights", lambda: None)
    monkeypatch.setattr(features, "train_classifier", functools.partial(features.train_classifier, steps=50))
    return tmp_path / "cache" / "gentoolkit" / "features"


def test_fid_separates_real_from_noise_and_reuses_the_cached_classifier(cache, monkeypatch):
    data = tiny_data()
    real = Replay(labelled(1000, seed=2)[0])
    noise = Replay(torch.randint(0, 256, (1000, 1, 8, 8), generator=seeded(3), dtype=torch.uint8))
    good = evaluate(FID(), real, data.test, data=data)
    assert good["fid_features"].startswith("classifier-") and good["fid_k"] == 256
    assert [p.suffix for p in cache.iterdir()] == [".safetensors"]

    def no_training(*args, **kwargs):
        raise AssertionError("the cached classifier should have been used")

    monkeypatch.setattr(features, "train_classifier", no_training)
    assert evaluate(FID(), real, data.test, data=data) == good
    bad = evaluate(FID(), noise, data.test, data=data, k=100)
    assert bad["fid"] > 10 * good["fid"] and bad["fid_k"] == 100


def test_sample_metrics_need_enough_images():
    data = tiny_data()
    with pytest.raises(GentoolError, match="precision-recall needs at least 4 real and 4 generated images; "
                                           "got 256 real and k=3"):
        evaluate(PrecisionRecall(), Replay(data.test), data.test, k=3, data=data)


def test_the_classifier_learns_the_classes(cache):
    data = tiny_data()
    net = features.train_classifier(data.train, data.train_labels, torch.device("cpu"))  # 50 updates
    with torch.no_grad():
        accuracy = (net.logits(data.test).argmax(1) == data.test_labels).float().mean()
    assert accuracy > 0.95


def test_classifier_features_need_labels(cache):
    with pytest.raises(GentoolError, match=r"kid with classifier features needs a data set with labels \(mnist"):
        evaluate(KID(), Replay(tiny_data().test), tiny_data().test, data=tiny_data(labels=False))


def test_inception_features_are_never_downloaded(cache):
    with pytest.raises(GentoolError, match="features=inception needs the torch-fidelity package"):
        evaluate(FID(FID.Config(features="inception")), Replay(tiny_data().test), tiny_data().test, data=tiny_data())


def test_auto_features_use_inception_once_its_weights_are_here(tmp_path, monkeypatch):
    """With a stand-in torch-fidelity: no weights file, no Inception; with it, auto picks
    Inception and feeds it RGB uint8 images."""
    seen = []

    class FakeInception(nn.Module):
        def __init__(self, name, features_list, feature_extractor_weights_path):
            super().__init__()

        def forward(self, images):
            seen.append(images)
            return (images.float().flatten(1)[:, :16],)

    fake = types.SimpleNamespace(URL_INCEPTION_V3="https://example.com/v0.2.0/weights-inception.pth",
                                 FeatureExtractorInceptionV3=FakeInception)
    monkeypatch.setitem(sys.modules, "torch_fidelity", types.ModuleType("torch_fidelity"))
    monkeypatch.setitem(sys.modules, "torch_fidelity.feature_extractor_inceptionv3", fake)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert features.inception_weights() is None
    weights = tmp_path / "hub" / "checkpoints" / "weights-inception.pth"
    weights.parent.mkdir(parents=True)
    weights.touch()
    assert features.inception_weights() == weights
    data = tiny_data()
    assert evaluate(FID(), Replay(data.test), data.test, data=data)["fid_features"] == "inception-v3"
    assert seen and all(x.dtype == torch.uint8 and x.shape[1] == 3 for x in seen)


class TinyShapes(Dataset):
    """The labelled 8 x 8 patterns as a registered data set."""

    name = "tiny-shapes"

    def load(self, options):
        return tiny_data()


@hookimpl
def register_datasets(register):
    register(TinyShapes)


def test_evaluate_a_run_with_every_sample_metric(cache, tmp_path):
    this = sys.modules[__name__]
    with toolkit_with(toy_plugin, this, gentoolkit_metrics, only=()):
        gt.fit("pixels", "tiny-shapes", run_dir=tmp_path / "run", epochs=2, device="cpu")
        results = gt.load_run(tmp_path / "run").evaluate(["fid", "kid", "precision-recall"], k=200)
        assert set(results) == {"fid", "fid_k", "fid_features", "kid", "kid_std", "kid_k", "kid_features",
                                "precision", "recall", "precision_recall_k", "precision_recall_features"}
        assert results["fid_features"] == results["kid_features"] == results["precision_recall_features"]
        with pytest.raises(GentoolError, match="metric 'nll' does not work with model 'pixels'"):
            gt.load_run(tmp_path / "run").evaluate(["nll"])


def test_the_plugin_registers_every_metric():
    with toolkit_with(gentoolkit_metrics, only=()) as toolkit:
        assert toolkit.metrics.names() == ["elbo", "fid", "kid", "label-accuracy", "nll", "precision-recall", "recon"]
        assert toolkit.metrics.get("precision-recall") is PrecisionRecall


@pytest.mark.slow
def test_mnist_classifier_trains_in_a_minute_on_one_core(mnist_root):
    """On one thread (see one_thread): a stricter bound than the two cores the budget is for."""
    torchvision = pytest.importorskip("torchvision")
    train = torchvision.datasets.MNIST(mnist_root, train=True, download=False)
    test = torchvision.datasets.MNIST(mnist_root, train=False, download=False)
    start = time.perf_counter()
    net = features.train_classifier(train.data.unsqueeze(1), train.targets, torch.device("cpu"))
    assert time.perf_counter() - start < 60
    with torch.no_grad():
        accuracy = (net.logits(test.data.unsqueeze(1)).argmax(1) == test.targets).float().mean()
    assert accuracy > 0.975


def test_gentool_evaluate_says_what_it_does_one_line_per_phase(cache, tmp_path):
    this = sys.modules[__name__]
    with toolkit_with(toy_plugin, this, gentoolkit_metrics, only=()):
        gt.fit("pixels", "tiny-shapes", run_dir=tmp_path / "run", epochs=1, device="cpu")
        result = invoke_gentool("evaluate", "--run", tmp_path / "run", "--metric", "fid,kid", "--k", "64",
                                "--limit", "100")
        assert result.exit_code == 0, result.output
        started, timed = phase_log(result.stderr)
        assert timed == ["loading data set 'tiny-shapes'", "fid", "kid"]  # the data set and each metric
        assert started == [
            "loading data set 'tiny-shapes'",
            "fid", "fid › loading the feature classifier",
            "fid › training the feature classifier (once per data set)",
            "fid › embedding 100 real images", "fid › generating 64 images",
            "fid › comparing real and generated features",
            "kid", "kid › loading the feature classifier",  # trained and cached by fid
            "kid › embedding 100 real images", "kid › generating 64 images",
            "kid › comparing real and generated features",
        ]
        quiet = invoke_gentool("evaluate", "--run", tmp_path / "run", "--metric", "fid", "-q", "--json")
        assert quiet.stderr == "" and json.loads(quiet.stdout)["fid_k"] == 256  # the whole test split
