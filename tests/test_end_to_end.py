"""The README's journey as a new user runs it: real processes, real MNIST."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from safetensors.torch import load_file


def gentool(*args, cwd, env=None):
    result = subprocess.run([sys.executable, "-m", "gentoolkit", *map(str, args)], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_fit_and_sample_vae_on_mnist(mnist_root, tmp_path):
    gentool("fit", "vae", "--dataset", "mnist", "--data-dir", mnist_root, "--no-download", "--epochs", 1,
            "--quiet", cwd=tmp_path)
    (run,) = (tmp_path / "runs" / "bernoulli-vae").iterdir()
    row = json.loads((run / "metrics.jsonl").read_text())
    # After one epoch the article's MLP VAE is well below 784 ln 2 = 543 nats (a coin per pixel).
    assert row["epoch"] == 1 and -200 < row["test_elbo"] < -100
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["plugin"] == "vae" and config["dataset"]["train_size"] == 60000
    assert (run / "samples" / "epoch-001.png").exists()

    result = json.loads(gentool("evaluate", "vae", "--metric", "elbo", "--limit", 200, "--json", cwd=tmp_path).stdout)
    assert -200 < result["elbo"] < -100
    assert result["elbo_bits_per_dim"] == pytest.approx(-result["elbo"] / (784 * math.log(2)))  # binarised pixels

    gentool("sample", "vae", "-n", 64, "--out", "samples.png", cwd=tmp_path)
    assert (tmp_path / "samples.png").read_bytes()[:4] == b"\x89PNG"
    gentool("sample", "vae", "-n", 8, "--out", "x.safetensors", "--seed", 3, cwd=tmp_path)
    images = load_file(tmp_path / "x.safetensors")["images"]
    assert images.shape == (8, 1, 28, 28) and 0 <= images.min() and images.max() <= 1


def test_shapes_needs_no_download(tmp_path):
    gentool("fit", "vae", "--dataset", "shapes", "--max-steps", 5, "--set", "data.train_size=512",
            "--set", "data.test_size=128", "--quiet", "--run-dir", "r", cwd=tmp_path)
    gentool("sample", "--run", "r", "-n", 4, "--out", "s.png", cwd=tmp_path)
    assert (tmp_path / "s.png").exists()


def test_gaussian_vae_reports_bits_per_dim_of_the_dequantised_pixels(tmp_path):
    gentool("fit", "gaussian-vae", "--dataset", "shapes", "--max-steps", 5, "--set", "data.train_size=256",
            "--set", "data.test_size=64", "--quiet", "--run-dir", "r", cwd=tmp_path)
    result = json.loads(gentool("evaluate", "--run", "r", "--metric", "elbo,nll", "--k", 10, "--json",
                                cwd=tmp_path).stdout)
    spec = json.loads((tmp_path / "r" / "config.json").read_text())["image_spec"]
    dims = spec["channels"] * spec["height"] * spec["width"]
    for bound, key in ((result["elbo"], "elbo_bits_per_dim"), (-result["nll"], "nll_bits_per_dim")):
        assert result[key] == pytest.approx((-bound + dims * math.log(256)) / (dims * math.log(2)))
    assert result["nll_bits_per_dim"] <= result["elbo_bits_per_dim"]
