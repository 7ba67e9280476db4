"""Two processes under torchrun train the same model as one process with the same global batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from gentoolkit import distributed


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


def updates(shard: slice | None) -> tuple[torch.nn.Module, dict[str, int]]:
    """Train a small net through every way a trainer may use gradients, on ``shard`` of each
    batch (None: the whole batch in this one process); the net, and under torchrun the
    averager's counts. Each loss is a mean, so the average over two halves is the whole's."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 16), torch.nn.Tanh(),
                              torch.nn.Linear(16, 1))
    x, y = torch.randn(32, 8), torch.randn(32, 1)
    part = (lambda t: t[shard]) if shard else (lambda t: t)

    def backward(rows: slice = slice(None)) -> None:
        torch.nn.functional.mse_loss(net(part(x[rows])), part(y[rows])).backward()

    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(2):  # as Trainer.optimize does it: average, clip, step
        optimizer.zero_grad()
        backward()
        distributed.average_gradients(optimizer)
        torch.nn.utils.clip_grad_norm_(net.parameters(), 0.1)
        optimizer.step()
    optimizer.zero_grad()  # a trainer that steps on its own: the step hook averages
    backward()
    optimizer.step()
    optimizer.zero_grad()  # two backward passes accumulate before the step
    backward(slice(0, 16))
    backward(slice(16, 32))
    optimizer.step()
    backward()  # gradients dropped between two backward passes: only the second counts
    optimizer.zero_grad(set_to_none=True)
    backward(slice(8, 24))
    optimizer.step()
    first, rest = torch.optim.SGD(net[0].parameters(), lr=0.1), torch.optim.SGD(net[2:].parameters(), lr=0.1)
    for optimizer, frozen in ((first, net[2:]), (rest, net[0])):  # a GAN's two players
        optimizer.zero_grad()
        frozen.requires_grad_(False)
        backward()
        frozen.requires_grad_(True)
        optimizer.step()
    averager = distributed._averager
    return net, {"overlapped": averager.overlapped, "averaged": averager.averaged} if averager else {}


def average_in_two_processes(rank: int, port: int, out: str) -> None:
    os.environ.update(WORLD_SIZE="2", RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    with distributed.process_group(torch.device("cpu")):
        distributed._averager.bucket_bytes = 256  # several buckets per optimiser
        net, counts = updates(slice(rank, None, 2))
    torch.save({"state": net.state_dict(), **counts}, f"{out}/rank{rank}.pt")


def test_bucketed_averaging_overlaps_backward_and_matches_one_process(tmp_path):
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    torch.multiprocessing.spawn(average_in_two_processes, args=(port, str(tmp_path)), nprocs=2)
    one, _ = updates(None)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    for rank in ranks:
        for name, value in one.state_dict().items():
            torch.testing.assert_close(rank["state"][name], value, rtol=1e-5, atol=1e-6)
    # the plain steps were averaged while the backward pass ran; the accumulated and
    # dropped gradients, and parameters frozen at their optimiser's first step, after it
    assert ranks[0]["overlapped"] > 0 and ranks[0]["averaged"] > 0
    assert ranks[0]["overlapped"] == ranks[1]["overlapped"]


def test_summing_no_metrics_needs_no_collective():
    """A GAN's held-out evaluation has no metrics; under torchrun summing them crashed the run."""
    assert distributed.Group(rank=1, world_size=2).sum({}) == {}
