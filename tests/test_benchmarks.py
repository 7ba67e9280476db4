"""benchmarks/gpu.py, run as the lead runs it on a GPU but on the CPU with --quick: every row, sane numbers."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gentoolkit.registry import get_toolkit

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"
NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?(?:e[+-]\d+)?")


def quick_run(variants: str, out: Path, *options: str) -> list[list[str]]:
    """Run the script on one CPU thread, on the shapes data set; the table's rows, split into cells."""
    result = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--dataset", "shapes",
                             "--variants", variants, "--out", str(out), *options],
                            capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    assert out.read_text() == result.stdout  # the file the lead copies back holds what was printed
    assert f"CPU, 1 threads (cpu); torch {torch.__version__}" in result.stdout
    assert re.search(r"^total wall time \(imports not counted\): \d+ s$", result.stdout, re.MULTILINE)
    lines = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| benchmark | variant |")
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def positive(cell: str) -> float:
    """The number a cell starts with, which must be positive and finite."""
    match = NUMBER.match(cell)
    assert match, f"no number in {cell!r}"
    value = float(match.group().replace(",", ""))
    assert 0 < value < float("inf"), cell
    return value


@pytest.mark.parametrize("variants", ["fp32,channels_last,bf16", pytest.param("compile", marks=pytest.mark.slow)])
def test_quick_cpu_run_has_every_row_with_positive_numbers(variants, tmp_path):
    rows = quick_run(variants, tmp_path / "table.md")
    names = variants.split(",")
    models = get_toolkit().models
    expected = [("vae fit", name) for name in names] + [("dcgan fit", name) for name in names]
    for model in ("glow", "ddpm"):
        expected += [(f"{model} fit", name) for name in names] if model in models else [(f"{model} fit", "all")]
    expected += [("nll", name) for name in names] + [("fid feature classifier", "fp32")]
    expected += [("fid:", name) for name in names]
    assert len(rows) == len(expected), rows
    for (prefix, variant), row in zip(expected, rows, strict=True):
        assert row[0].startswith(prefix) and row[1] == variant, row
    for benchmark, _, rate, time, warmup, measured in rows:
        if measured == "not installed":
            continue
        assert not measured.startswith("error"), measured
        if benchmark.startswith(("vae", "dcgan", "glow", "ddpm", "nll")):
            positive(rate)
        if benchmark.startswith(("vae", "nll", "fid")):
            positive(time)
        if not benchmark.startswith("fid feature classifier"):
            positive(warmup)


def test_only_measures_the_rows_asked_for(tmp_path):
    rows = quick_run("channels_last", tmp_path / "table.md", "--only", "dcgan,fid")
    assert [row[0].split()[0] for row in rows] == ["dcgan", "fid", "fid:"]
    assert not any(cell.startswith("error") for row in rows for cell in row), rows


def test_rounds_show_each_rows_median_and_spread(tmp_path):
    rows = quick_run("fp32,channels_last", tmp_path / "table.md", "--only", "vae,ddpm", "--rounds", "3",
                     "--budget", "0.5")
    assert [(row[0].split()[0], row[1]) for row in rows] == [
        ("vae", "fp32"), ("vae", "channels_last"), ("ddpm", "fp32"), ("ddpm", "channels_last")]
    for row in rows:
        assert re.search(r"; median of 3 rounds, spread \d+%$", row[5]), row
        positive(row[2])


def test_a_row_shows_its_median_round_and_an_error_over_any_number(monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    from gpu import Result, Row

    row = Row("vae fit", "fp32", measure=lambda: None)
    row.results = [Result(f"{rate} images/s", measured="5 steps", value=rate) for rate in (90, 120, 100)]
    assert row.result.rate == "100 images/s" and row.result.measured == "5 steps; median of 3 rounds, spread 30%"
    row.results.append(Result(measured="error: RuntimeError: out of memory"))
    assert row.result.measured.startswith("error")


@pytest.mark.slow
def test_compute_bound_counts_the_flops_of_gentools_own_work(mnist_root):
    script = SCRIPT.parent / "compute_bound.py"
    result = subprocess.run([sys.executable, str(script), "--quick"], capture_output=True, text=True, timeout=900,
                            env={**os.environ, "GENTOOL_DATA_DIR": str(mnist_root)})
    assert result.returncode == 0, result.stderr[-4000:]
    rows = {line.split("|")[1].strip().split()[0]: [cell.strip() for cell in line.strip("|").split("|")]
            for line in result.stdout.splitlines() if line.startswith("| dcgan") or line.startswith("| conv")}
    # Multiply-adds per image of each network pass, layer by layer (input pixels x in x out x taps).
    netg = 100 * 512 * 16 + 3 * (16 * 512 * 256 * 16) + 1024 * 64 * 3 * 25  # last: 5 x 5, stride 3
    netd = 1024 * 64 * 3 * 25 + 3 * (16 * 512 * 256 * 16) + 512 * 16  # first: 5 x 5, stride 3
    first_g, first_d = 100 * 512 * 16, 1024 * 64 * 3 * 25
    # Five batches: five discriminator steps (generator forward without gradients; the discriminator
    # forward and backward on real and fake, no input gradient at its first layer), one generator step
    # (both forward, the frozen discriminator's input gradients, the generator's backward but for z).
    cycle = 5 * (netg + 6 * netd - 2 * first_d) + (3 * netg + 2 * netd - first_g)
    assert float(rows["dcgan"][1]) == pytest.approx(2 * cycle / 5 / 1e9, abs=0.006)  # 1.67 GFLOP
    # The conv VAE: 8 decoder passes and one encoder pass per image.
    decoder = 32 * 3136 + 49 * 64 * 32 * 16 + 196 * 32 * 16
    encoder = 196 * 32 * 16 + 49 * 64 * 32 * 16 + 3136 * 64
    assert float(rows["conv"][1]) == pytest.approx(2 * (8 * decoder + encoder) / 1e9, rel=0.01)
    for row in rows.values():
        assert re.match(r"\d+% of peak$", row[-1]), row
