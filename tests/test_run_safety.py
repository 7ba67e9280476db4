"""Nothing lost, whatever the user does: each case runs the CLI as a subprocess, as a user would, and
checks the exit code, the one-line message and, by checksums, that no file of the run changed."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

import gentoolkit.api as gt
from gentoolkit import checkpoint
from gentoolkit.rundir import RunDir

TINY = ["--dataset", "shapes", "--set", "hidden=16", "--set", "latent_dim=4", "--set", "data.train_size=512",
        "--set", "data.test_size=128", "--batch-size", "64", "--device", "cpu", "--quiet"]


def gentool(*args, ok: bool | None = True) -> subprocess.CompletedProcess:
    """``gentool ARGS`` as a user runs it: a fresh process, in the current folder."""
    result = subprocess.run([sys.executable, "-m", "gentoolkit", *map(str, args)], capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}, timeout=600)
    if ok:
        assert result.returncode == 0, result.stderr
    return result


def one_line_error(result: subprocess.CompletedProcess, fragment: str) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert fragment in line, line
    return line


def checksums(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished 2-epoch VAE run, made once."""
    path = tmp_path_factory.mktemp("trained") / "run"
    gentool("fit", "vae", *TINY, "--epochs", "2", "--run-dir", path)
    return path


@pytest.fixture
def run(trained, tmp_path, monkeypatch) -> Path:
    """A copy of the trained run to damage, the test's folder as the current one."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(trained, tmp_path / "run")
    return tmp_path / "run"


# ------------------------------------------------------------ data lost today


@pytest.mark.parametrize("name", [RunDir.WEIGHTS, "samples/epoch-001.png"])
def test_samples_never_overwrite_a_file_of_a_run(run, name):
    before = checksums(run)
    suffix_out = run / name
    one_line_error(gentool("sample", "--run", run, "-n", "4", "--out", suffix_out, "--force", ok=None),
                   "belongs to the run")
    assert checksums(run) == before


def test_relative_paths_from_inside_a_run_never_write_into_it(run, monkeypatch):
    """The same protection when --out is relative to a folder of the run (samples/, say)."""
    monkeypatch.chdir(run / "samples")
    before = checksums(run)
    one_line_error(gentool("sample", "--run", run, "-n", "4", "--out", "epoch-001.png", "--force", ok=None),
                   "belongs to the run")
    one_line_error(gentool("sample", "--run", run, "-n", "4", "--out", "mine/", ok=None), "is inside the run")
    assert checksums(run) == before and not (run / "samples" / "mine").exists()


def test_an_existing_file_is_overwritten_only_with_force(run, tmp_path):
    (tmp_path / "x.png").write_bytes(b"mine")
    one_line_error(gentool("sample", "--run", run, "-n", "4", "--out", "x.png", ok=None), "pass --force")
    assert (tmp_path / "x.png").read_bytes() == b"mine"
    gentool("sample", "--run", run, "-n", "4", "--out", "x.png", "--force")
    assert (tmp_path / "x.png").read_bytes()[:4] == b"\x89PNG"


def test_a_bad_metrics_line_stops_resume_and_loses_no_row(run):
    metrics = run / RunDir.METRICS
    lines = metrics.read_text().splitlines()
    metrics.write_text(lines[0][:-5] + "\n" + lines[1] + "\n")  # line 1 damaged, line 2 intact
    before = checksums(run)
    one_line_error(gentool("fit", "--resume", run, "--epochs", "3", ok=None), "metrics.jsonl, line 1: not valid JSON")
    one_line_error(gentool("show", run, ok=None), "metrics.jsonl, line 1")
    assert checksums(run) == before


def test_a_metrics_line_that_is_not_a_row_is_one_line(run):
    (run / RunDir.METRICS).write_text('{"epoch": 1}\n[1, 2]\n')
    one_line_error(gentool("show", run, ok=None), "line 2: not a metrics row")


def test_weights_a_kill_left_behind_give_way_to_the_newer_checkpoint(run, tmp_path):
    """A kill while model.safetensors was being replaced: the resume state (written first) is
    newer, and its weights are used."""
    gentool("sample", "--run", run, "-n", "8", "--out", "intact.safetensors")
    stale = tmp_path / "stale.safetensors"
    state = checkpoint.load_state(run / RunDir.STATE)
    old = {k: v + 0.5 for k, v in state["model"].items()}  # other weights, of an older generation
    checkpoint.write_tensors(stale, old, {"generation": str(state["step"] - 8)})
    shutil.copy(stale, run / RunDir.WEIGHTS)
    result = gentool("sample", "--run", run, "-n", "8", "--out", "after.safetensors")
    assert "using the step-16 weights in trainer.safetensors" in result.stderr
    assert load_file("after.safetensors")["images"].equal(load_file("intact.safetensors")["images"])


def test_stale_temporary_files_are_removed_on_the_next_start(run):
    (run / ".model.safetensors.tmp-99999").write_bytes(b"half written")
    (run / "samples" / ".epoch-003.png.tmp-99999").write_bytes(b"half written")
    gentool("fit", "--resume", run, "--epochs", "3")
    assert not list(run.rglob(f"*{checkpoint.TMP_MARK}*"))


def test_a_second_process_on_the_same_run_is_refused(run, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-m", "gentoolkit", "fit", "--resume", str(run), "--epochs", "400"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.time() + 60
        while not (run / RunDir.LOCK).exists() and time.time() < deadline:
            time.sleep(0.1)
        second = subprocess.run([sys.executable, "-m", "gentoolkit", "fit", "--resume", str(run), "--epochs", "5"],
                                capture_output=True, text=True, env=env)
        assert second.returncode == 1
        assert f"is in use by process {first.pid} on" in second.stderr and "Traceback" not in second.stderr
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(timeout=120)
    assert not (run / RunDir.LOCK).exists()  # released on the way out
    epochs = [row["epoch"] for row in RunDir(run).metrics()]
    assert epochs == list(range(1, len(epochs) + 1))  # one writer: no interleaved rows


def test_a_lock_whose_process_is_gone_is_taken_over(run):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (run / RunDir.LOCK).write_text(json.dumps({"pid": int(dead.stdout), "host": os.uname().nodename}))
    gentool("fit", "--resume", run, "--epochs", "3")
    assert [row["epoch"] for row in RunDir(run).metrics()] == [1, 2, 3]


# ------------------------------------------------------- wrong without a word


def test_resume_refuses_flags_it_cannot_apply(run):
    before = checksums(run)
    line = one_line_error(gentool("fit", "--resume", run, "--lr", "5", "--batch-size", "7", "--set", "latent_dim=3",
                                  "--run-dir", "elsewhere", ok=None), "cannot be given with it")
    assert all(flag in line for flag in ("--lr", "--batch-size", "--set", "--run-dir"))
    one_line_error(gentool("fit", "dcgan", "--resume", run, ok=None), "is a run of 'bernoulli-vae', not 'dcgan'")
    assert checksums(run) == before
    gentool("fit", "vae", "--resume", run, "--epochs", "3", "--device", "cpu", "--precision", "bf16", "--quiet")
    assert json.loads((run / RunDir.CONFIG).read_text())["training"]["precision"] == "bf16"


def test_a_run_stopped_before_its_first_checkpoint_starts_again(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one_line_error(gentool("fit", "vae", *TINY, "--lr", "1e30", "--run-dir", "r", ok=None), "training diverged")
    assert (tmp_path / "r" / RunDir.CONFIG).exists() and not (tmp_path / "r" / RunDir.WEIGHTS).exists()
    one_line_error(gentool("fit", "--resume", "r", ok=None), "Start it again with gentool fit ... --run-dir r")
    gentool("fit", "vae", *TINY, "--max-steps", "3", "--run-dir", "r")
    assert RunDir(tmp_path / "r").metrics()[-1]["step"] == 3


@pytest.mark.parametrize("args, fragment", [
    (["evaluate", "--run", "run", "--metric", ""], "--metric names no metric"),
    (["fit", "vae", *TINY, "--set", "trainer.grad_clip=-1"], "grad_clip must be 0 (off) or a positive norm"),
    (["sample", "--run", "run", "-n", "100000000", "--out", "x.png"], "-n 100000000 would need"),
    (["fit", "vae", *TINY, "--set", "hidden=100000000"], "with these options would need"),
    (["sample", "--run", "run", "--out", "."], "that is a folder"),
    (["sample", "--run", "run", "--batch-size", "0"], "--batch-size must be a positive integer"),
    (["fit", "vae", *TINY, "--run-dir", "run/config.json"], "that is a file, not a folder"),
])
def test_bad_requests_are_one_line_before_any_work(run, args, fragment):
    before = checksums(run)
    one_line_error(gentool(*args, ok=None), fragment)
    assert checksums(run) == before


@pytest.mark.parametrize("damage, fragment", [
    (lambda run: (run / RunDir.CONFIG).write_text("[1, 2]"), "not a gentoolkit run config"),
    (lambda run: checkpoint.save_state(run / RunDir.STATE, {"model": {}, "epoch": "two"}), "damaged training state"),
])
def test_damaged_run_files_are_one_line(run, damage, fragment):
    damage(run)
    one_line_error(gentool("fit", "--resume", run, "--epochs", "3", ok=None), fragment)


def test_show_reads_only_regular_files(run):
    (run / RunDir.METRICS).unlink()
    os.mkfifo(run / RunDir.METRICS)
    result = subprocess.run([sys.executable, "-m", "gentoolkit", "show", str(run)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1 and "is not a regular file" in result.stderr


def test_a_plugin_filter_is_named_when_a_name_is_unknown(tmp_path):
    result = subprocess.run([sys.executable, "-m", "gentoolkit", "fit", "vae"], capture_output=True, text=True,
                            cwd=tmp_path, env={**os.environ, "GENTOOL_PLUGINS": "vea"})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "GENTOOL_PLUGINS names 'vea', which is no installed plugin. Did you mean 'vae'?" in result.stderr
    assert "unknown model 'vae'" in result.stderr and "(GENTOOL_PLUGINS=vea loads only those plugins" in result.stderr


def test_a_run_directory_is_data_not_instructions(run, tmp_path):
    """A config.json naming someone else's data root: read from (and shown), never downloaded into."""
    config = json.loads((run / RunDir.CONFIG).read_text())
    config["dataset"].update(root=str(tmp_path / "theirs"), download=True)
    (run / RunDir.CONFIG).write_text(json.dumps(config))
    with pytest.warns(UserWarning, match=f"reading data set 'shapes' from {tmp_path / 'theirs'}, as .*config.json"):
        source = gt.load_run(run).data_source()
    assert source.download is False and not (tmp_path / "theirs").exists()


def test_long_sampling_shows_progress_and_stops_cleanly_on_ctrl_c(tmp_path):
    """A huge candidate budget: memory stays bounded, the work is shown, Ctrl-C ends it in one line."""
    shutil.copytree(Path(__file__).parent / "fixtures" / "runs-0.1.0" / "dcgan", tmp_path / "dcgan")
    process = subprocess.Popen([sys.executable, "-m", "gentoolkit", "sample", "--run", str(tmp_path / "dcgan"), "-n",
                                "8", "--sampler", "ranking", "--candidates", "100000000", "--out",
                                str(tmp_path / "best.png")], stderr=subprocess.PIPE, text=True,
                               # as from a terminal, even where the suite itself runs as a background job
                               # (which starts its children with SIGINT ignored)
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert process.stderr.readline().strip() == "ranking 100,000,000 candidates"
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=120) == 130
    finally:
        process.kill()  # a failed check must not leave it drawing candidates for hours
    rest = process.stderr.read()
    assert "interrupted" in rest and "Traceback" not in rest and not (tmp_path / "best.png").exists()
