"""Runs written by gentoolkit 0.1.0 keep working: sample, evaluate, show and resume, with the same numbers.

The fixtures in tests/fixtures/runs-0.1.0 were written by 0.1.0 itself (see the README
there), with what it sampled and measured on them. Each test works on a copy.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from safetensors.torch import load_file

from gentoolkit.cli import cli

FIXTURES = Path(__file__).parent / "fixtures" / "runs-0.1.0"


@pytest.fixture
def old_runs(tmp_path, monkeypatch) -> Path:
    """A copy of the 0.1.0 runs, as the current folder."""
    shutil.copytree(FIXTURES, tmp_path / "runs")
    monkeypatch.chdir(tmp_path / "runs")
    monkeypatch.setenv("COLUMNS", "200")
    return tmp_path / "runs"


def gentool(*args: str, ok: bool = True):
    result = CliRunner().invoke(cli, list(args))
    if ok:
        assert result.exit_code == 0, result.output
    return result


@pytest.mark.parametrize("model", ["vae", "dcgan"])
def test_old_runs_sample_the_same_images(old_runs, model):
    run = "bernoulli-vae" if model == "vae" else "dcgan"
    gentool("sample", "--run", run, "-n", "8", "--out", "new.safetensors", "--device", "cpu")  # as they were made
    expected = load_file(f"expected-{model}-samples.safetensors")["images"]
    assert load_file("new.safetensors")["images"].equal(expected)


def test_old_vae_run_measures_the_same_numbers(old_runs):
    expected = json.loads(Path("expected-vae-evaluate.json").read_text())
    result = gentool("evaluate", "--run", "bernoulli-vae", "--metric", "elbo,nll,recon", "--k", "20", "--limit", "64",
                     "--json", "--device", "cpu")
    measured = json.loads(result.stdout)
    for key, value in expected.items():
        if key != "settings":  # the same up to float32 rounding (the thread count changes the order of sums)
            assert measured[key] == pytest.approx(value, rel=1e-6), key
    assert measured["nll_kind"] == "iwae"


def test_old_dcgan_run_measures_the_same_fid(old_runs):
    expected = json.loads(Path("expected-dcgan-evaluate.json").read_text())
    result = gentool("evaluate", "--run", "dcgan", "--metric", "fid", "--k", "64", "--limit", "64", "--json",
                     "--device", "cpu")
    assert json.loads(result.stdout)["fid"] == pytest.approx(expected["fid"], rel=1e-9)


def test_show_and_resume_old_runs(old_runs):
    assert "bernoulli-vae" in gentool("show", "bernoulli-vae").output
    assert "train_d_loss" in gentool("show", "dcgan").output
    gentool("fit", "--resume", "dcgan", "--max-steps", "6", "--quiet")  # 0.1.0's resume state carries on
    rows = [json.loads(line) for line in Path("dcgan/metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [4, 6]


def test_a_config_field_added_since_takes_its_default(old_runs):
    config = json.loads(Path("bernoulli-vae/config.json").read_text())
    del config["model"]["config"]["binarize"]  # as if 0.1.0 had not had it yet
    Path("bernoulli-vae/config.json").write_text(json.dumps(config))
    gentool("sample", "--run", "bernoulli-vae", "-n", "8", "--out", "new.safetensors")
    assert load_file("new.safetensors")["images"].equal(load_file("expected-vae-samples.safetensors")["images"])


def test_a_field_the_plugin_no_longer_has_is_one_line_naming_it(old_runs):
    config = json.loads(Path("bernoulli-vae/config.json").read_text())
    config["model"]["config"]["dropout"] = 0.1  # an option this version's VAE does not have
    Path("bernoulli-vae/config.json").write_text(json.dumps(config))
    result = gentool("sample", "--run", "bernoulli-vae", ok=False)
    assert result.exit_code == 1 and "Traceback" not in result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert "model 'bernoulli-vae' has no option 'dropout'" in line
    assert "written by gentoolkit 0.1.0 with gentoolkit 0.1.0" in line


@pytest.mark.parametrize("edit, fragment", [
    (lambda c: c["model"]["config"].update(latent_dim="four"), "'latent_dim' must be int"),
    (lambda c: c.pop("image_spec"), "has no 'image_spec' section"),
    (lambda c: c.update(training=[]), "has a damaged 'training' section"),
])
def test_a_config_edited_by_hand_is_one_line(old_runs, edit, fragment):
    config = json.loads(Path("bernoulli-vae/config.json").read_text())
    edit(config)
    Path("bernoulli-vae/config.json").write_text(json.dumps(config))
    result = gentool("sample", "--run", "bernoulli-vae", ok=False)
    assert result.exit_code == 1 and fragment in result.output and "internal error" not in result.output


def test_old_run_through_the_installed_command(old_runs):
    """As a user runs it: the console script, in a fresh process."""
    result = subprocess.run([sys.executable, "-m", "gentoolkit", "sample", "--run", "dcgan", "-n", "8", "--out",
                             "cli.safetensors"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert load_file("cli.safetensors")["images"].equal(load_file("expected-dcgan-samples.safetensors")["images"])
