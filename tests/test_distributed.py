"""Two processes under torchrun train the same model as one process with the same global batch."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file


def gentool(*args, env, launcher=()):
    command = [sys.executable, *launcher, "-m", "gentoolkit", *map(str, args)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_two_gloo_processes_match_one(toy_installed, mnist_root, tmp_path):
    fit = ("fit", "pixels", "--dataset", "mnist", "--data-dir", mnist_root, "--no-download",
           "--batch-size", 64, "--max-steps", 30, "--lr", 0.05, "--quiet", "--device", "cpu")
    torchrun = ("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2")
    gentool(*fit, "--run-dir", tmp_path / "two", env=toy_installed, launcher=torchrun)
    gentool(*fit, "--run-dir", tmp_path / "one", env=toy_installed)

    two = load_file(tmp_path / "two" / "model.safetensors")["logits"]
    one = load_file(tmp_path / "one" / "model.safetensors")["logits"]
    assert torch.allclose(two, one, atol=1e-4)
    rows = [(tmp_path / run / "metrics.jsonl").read_text().splitlines() for run in ("one", "two")]
    assert len(rows[0]) == len(rows[1]) == 1
    assert '"step": 30' in rows[1][0]
    assert not list((tmp_path / "two").glob(".*tmp*"))  # rank 1 wrote nothing half-done
