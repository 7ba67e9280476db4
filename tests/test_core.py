"""The core without the built-in plugins: configs, registry, checkpoints and the loop."""

from __future__ import annotations

import errno
import json
import math
import os
import signal
import subprocess
import sys
import time
import types
from dataclasses import dataclass
from typing import Literal

import pytest
import torch
import toy_plugin

import gentoolkit.api as gt
from gentoolkit import GentoolError, ImageSpec, checkpoint, hookimpl
from gentoolkit.config import apply_overrides, from_dict, to_dict
from gentoolkit.registry import PluginInfo, PluginWarning, Toolkit
from gentoolkit.rundir import RunDir
from gentoolkit.testing import toolkit_with
from gentoolkit.training import Callback, Interrupted


@dataclass
class Options:
    size: int = 3
    rate: float = 0.5
    flag: bool = False
    kind: Literal["a", "b"] = "a"
    dims: tuple[int, ...] = (1, 2)
    maybe: float | None = None


# ------------------------------------------------------------------ config


def test_overrides_parse_each_type():
    cfg = apply_overrides(Options(), [("size", "7"), ("rate", "1e-3"), ("flag", "yes"), ("kind", "b"),
                                      ("dims", "4,5,6"), ("maybe", "none")], "test")
    assert cfg == Options(size=7, rate=1e-3, flag=True, kind="b", dims=(4, 5, 6), maybe=None)


@pytest.mark.parametrize("key,value,message", [
    ("sise", "3", "Did you mean 'size'"),
    ("size", "three", "expected int"),
    ("flag", "maybe", "expected true or false"),
    ("kind", "c", "expected one of a, b"),
])
def test_overrides_reject_bad_input(key, value, message):
    with pytest.raises(GentoolError, match=message):
        apply_overrides(Options(), [(key, value)], "test")


def test_config_round_trips_through_json():
    cfg = Options(dims=(8, 9), maybe=2.0)
    assert from_dict(Options, json.loads(json.dumps(to_dict(cfg)))) == cfg


# ---------------------------------------------------------------- registry


def test_aliases_resolve_and_unknown_names_suggest(toy):
    assert toy.models.get("px") is toy_plugin.PixelBernoulli
    with pytest.raises(GentoolError, match="unknown model 'pixles'. Did you mean 'pixels'"):
        toy.models.get("pixles")


def test_plugin_raising_in_a_hook_is_isolated():
    broken = types.SimpleNamespace(register_models=hookimpl(lambda register: 1 / 0))
    toolkit = Toolkit()
    with pytest.warns(PluginWarning, match="plugin 'broken'.*ZeroDivisionError"):
        toolkit.add_plugin(broken, PluginInfo("broken", "broken-dist", "1.0", "broken"))
    toolkit.add_plugin(toy_plugin, PluginInfo("toy", "toy-dist", "1.0", "toy_plugin"))
    assert toolkit.plugins["broken"].error.startswith("ZeroDivisionError")
    assert "pixels" in toolkit.models


def test_plugin_registering_a_non_component_is_isolated():
    wrong = types.SimpleNamespace(register_models=hookimpl(lambda register: register(int)))
    toolkit = Toolkit()
    with pytest.warns(PluginWarning, match="expected a subclass of Model"):
        toolkit.add_plugin(wrong, PluginInfo("wrong", "wrong-dist", "1.0", "wrong"))
    assert not list(toolkit.models)


# ------------------------------------------------------------- checkpoints


def test_flatten_state_round_trips_optimizer_state():
    param = torch.nn.Parameter(torch.randn(3))
    opt = torch.optim.Adam([param])
    param.grad = torch.ones(3)
    opt.step()
    skeleton, tensors = checkpoint.flatten_state({"opt": opt.state_dict(), "n": 3})
    restored = checkpoint.unflatten_state(json.loads(json.dumps(skeleton)), tensors)
    assert restored["n"] == 3
    assert torch.equal(restored["opt"]["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    torch.optim.Adam([param]).load_state_dict(restored["opt"])


def test_atomic_write_leaves_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "x.json"
    checkpoint.write_json(path, {"a": 1})

    def fail(tmp):
        tmp.write_text("partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(GentoolError, match=r"could not write .*x.json: No space left on device; the previous x.json "
                                           r"is kept"):
        checkpoint.atomic_write(path, fail)
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


# -------------------------------------------------------------------- loop


def curve(rows):
    """Metrics rows without the timings, which differ between any two runs."""
    return [{k: v for k, v in r.items() if k not in ("seconds", "images_per_second")} for r in rows]


def test_fit_learns_the_closed_form_entropy(toy, tmp_path):
    # Each stripe pixel is on with probability 1/2, so the best NLL is 64 ln 2 nats.
    run = gt.fit("pixels", "stripes", runs_dir=tmp_path, epochs=3)
    last = run.metrics[-1]
    assert last["epoch"] == 3 and last["step"] == 3 * 8
    assert last["train_nll"] == pytest.approx(64 * math.log(2), rel=0.01)
    assert set(last) >= {"epoch", "train_loss", "test_nll", "seconds"}
    assert sorted(p.name for p in (run.path / "samples").iterdir()) == [
        "epoch-001.png", "epoch-002.png", "epoch-003.png"]
    config = json.loads((run.path / "config.json").read_text())
    assert config["model"]["name"] == "pixels" and config["dataset"]["name"] == "stripes"
    assert config["training"]["lr"] == toy_plugin.PixelBernoulli.recipe.lr


def test_resume_continues_the_same_curve(toy, tmp_path):
    straight = gt.fit("pixels", "stripes", run_dir=tmp_path / "a", epochs=4, lr=0.05)
    gt.fit("pixels", "stripes", run_dir=tmp_path / "b", epochs=2, lr=0.05)
    resumed = gt.resume(tmp_path / "b", epochs=4)
    assert curve(resumed.metrics) == curve(straight.metrics)
    assert torch.equal(resumed.model.logits, straight.model.logits)


def test_same_seed_gives_the_same_run_and_samples(toy, tmp_path):
    a = gt.fit("pixels", "stripes", run_dir=tmp_path / "a", epochs=1, seed=3)
    b = gt.fit("pixels", "stripes", run_dir=tmp_path / "b", epochs=1, seed=3)
    assert torch.equal(a.model.logits, b.model.logits)
    assert torch.equal(a.sample(16, seed=5).images, gt.load_run(b.path).sample(16, seed=5).images)
    assert not torch.equal(a.sample(16, seed=5).images, a.sample(16, seed=6).images)


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(toy, tmp_path):
    with pytest.raises(GentoolError, match="training diverged: loss=inf.* at step 1"):
        gt.fit("pixels", "stripes", run_dir=tmp_path, epochs=1, overrides=["objective.scale=inf"])
    assert not (tmp_path / RunDir.WEIGHTS).exists()


def test_a_deferred_non_finite_check_names_the_first_bad_step(toy, tmp_path):
    """On an accelerator the flag is read every CHECK_EVERY steps, not every step (a sync each)."""

    class AsOnAGPU(Callback):
        def on_fit_start(self, loop):
            loop.check_every_step = False

    with pytest.raises(GentoolError, match="training diverged: .* at step 1 "):
        gt.fit("pixels", "stripes", run_dir=tmp_path, epochs=1, batch_size=4, overrides=["objective.scale=inf"],
               callbacks=[AsOnAGPU()])
    assert not (tmp_path / RunDir.WEIGHTS).exists()


def test_max_steps_stops_early(toy, tmp_path):
    run = gt.fit("pixels", "stripes", run_dir=tmp_path, epochs=5, max_steps=3)
    assert run.metrics == [{**run.metrics[0], "epoch": 1, "step": 3, "partial": True}]  # an epoch not finished


def test_a_max_steps_stop_resumes_bit_for_bit(tmp_path):
    """--max-steps stops mid-epoch like Ctrl-C: resuming twice ends exactly where one straight run does
    (a VAE: its loss draws noise from the global stream, which evaluation must not disturb)."""
    fit = {"dataset": "shapes", "epochs": 2, "batch_size": 128, "device": "cpu",
           "overrides": ["hidden=16", "latent_dim=4", "data.train_size=1280", "data.test_size=256"]}
    straight = gt.fit("vae", run_dir=tmp_path / "a", **fit)
    gt.fit("vae", run_dir=tmp_path / "b", max_steps=7, **fit)
    gt.resume(tmp_path / "b", max_steps=13)
    resumed = gt.resume(tmp_path / "b", max_steps=20)
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    timing = ("seconds", "images_per_second")
    assert [{k: v for k, v in row.items() if k not in timing} for row in resumed.metrics] == \
           [{k: v for k, v in row.items() if k not in timing} for row in straight.metrics]


def test_truncated_or_foreign_weights_are_clear_errors(toy, tmp_path):
    run = gt.fit("pixels", "stripes", run_dir=tmp_path / "run", epochs=1)
    weights = run.path / RunDir.WEIGHTS
    model = gt.load_run(run.path).model
    other = toy_plugin.PixelBernoulli(toy_plugin.PixelBernoulli.Config(), ImageSpec(1, 4, 4))
    with pytest.raises(GentoolError, match=r"'logits' is \[1, 8, 8\] in the file but \[1, 4, 4\]"):
        checkpoint.load_weights(other, weights)
    weights.write_bytes(weights.read_bytes()[:40])
    with pytest.raises(GentoolError, match="truncated or damaged"):
        checkpoint.load_weights(model, weights)


def test_plugins_can_be_limited_by_environment(monkeypatch):
    monkeypatch.setenv("GENTOOL_PLUGINS", "")
    with toolkit_with() as toolkit:
        assert set(toolkit.plugins) == {"gentoolkit"}
    monkeypatch.delenv("GENTOOL_PLUGINS")
    monkeypatch.setenv("GENTOOL_DISABLE_PLUGINS", "vae")
    with toolkit_with() as toolkit:
        assert "vae" not in toolkit.plugins and "dcgan" in toolkit.plugins


class InterruptAt(Callback):
    """Sends this process a signal after a given step, like a user pressing Ctrl-C."""

    def __init__(self, step: int, signum: int = signal.SIGINT):
        self.step, self.signum = step, signum

    def on_step(self, loop, metrics):
        if loop.state.step == self.step:
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_mid_epoch_saves_and_resumes_exactly(toy, tmp_path, signum):
    straight = gt.fit("pixels", "stripes", run_dir=tmp_path / "a", epochs=2, lr=0.05)
    with pytest.raises(Interrupted) as info:
        gt.fit("pixels", "stripes", run_dir=tmp_path / "b", epochs=2, lr=0.05,
               callbacks=[InterruptAt(5, signum)])
    assert info.value.signum == signum
    resumed = gt.resume(tmp_path / "b")
    assert curve(resumed.metrics) == curve(straight.metrics)
    assert torch.equal(resumed.model.logits, straight.model.logits)


def test_cosine_schedule_decays_the_learning_rate_to_zero(toy, tmp_path):
    seen = []

    class Spy(Callback):
        def on_step(self, loop, metrics):
            seen.append(loop.trainer.optimizer.param_groups[0]["lr"])

    gt.fit("pixels", "stripes", run_dir=tmp_path, epochs=2, lr=0.1, lr_schedule="cosine", callbacks=[Spy()])
    assert seen[0] == pytest.approx(0.1) and seen[-1] < 0.01
    assert all(a >= b for a, b in zip(seen, seen[1:], strict=False))


def test_patience_stops_early_and_keep_best_keeps_the_best(toy, tmp_path):
    # A huge learning rate makes the test loss get worse after the first epochs.
    run = gt.fit("pixels", "stripes", run_dir=tmp_path, epochs=30, lr=3.0, patience=2, keep_best=True)
    losses = [r["test_loss"] for r in run.metrics]
    best = losses.index(min(losses))
    assert len(losses) == best + 3 < 30
    info = json.loads((tmp_path / "best.json").read_text())
    assert info["epoch"] == best + 1 and info["test_loss"] == min(losses)
    best_model = gt.load_run(tmp_path, best=True).model
    assert not torch.equal(best_model.logits, gt.load_run(tmp_path).model.logits)


class GridWatcher(Callback):
    """Counts the grid sampler's calls, and asks the loop for each epoch's grid as a logger does."""

    def on_fit_start(self, loop):
        self.calls, self.grids, sample = 0, [], loop.grid_sampler.sample

        def counted(*args, **kwargs):
            self.calls += 1
            return sample(*args, **kwargs)

        loop.grid_sampler.sample = counted

    def on_epoch_end(self, loop, row):
        self.grids.append(loop.sample_grid())


def test_an_epochs_grid_is_drawn_once_for_every_callback_that_wants_it(toy, tmp_path):
    watcher = GridWatcher()
    gt.fit("pixels", "stripes", run_dir=tmp_path, epochs=2, callbacks=[watcher])
    assert watcher.calls == 2  # SampleGrids and the watcher share each epoch's draw
    assert len(watcher.grids) == 2 and all(grid.shape[0] == 64 for grid in watcher.grids)


def test_evaluate_computes_registered_metrics(toy, tmp_path):
    run = gt.fit("pixels", "stripes", run_dir=tmp_path, epochs=3)
    result = gt.load_run(tmp_path).evaluate(["pixel-nll"])
    assert result["nll"] == pytest.approx(run.metrics[-1]["test_nll"], rel=1e-5)
    with pytest.raises(GentoolError, match="unknown metric 'pixel-nl'"):
        gt.load_run(tmp_path).evaluate(["pixel-nl"])


def test_on_nan_skip_counts_and_skips_the_update(toy, tmp_path):
    run = gt.fit("pixels", "stripes", run_dir=tmp_path, epochs=1, on_nan="skip",
                 overrides=["objective.scale=inf"])
    assert run.metrics[-1]["skipped_steps"] == 8
    assert torch.equal(run.model.logits, torch.zeros(1, 8, 8))  # no update was applied


def test_skipped_steps_count_over_the_whole_run_across_resumes(toy, tmp_path):
    gt.fit("pixels", "stripes", run_dir=tmp_path, epochs=1, max_steps=3, on_nan="skip",
           overrides=["objective.scale=inf"])
    gt.resume(tmp_path, max_steps=8)  # finishes the first epoch, stopped after 3 of its 8 steps
    gt.resume(tmp_path, epochs=2, max_steps=16)
    rows = gt.load_run(tmp_path).metrics
    assert [(row["step"], row["skipped_steps"]) for row in rows] == [(8, 8), (16, 16)]  # no batch done twice


@pytest.mark.slow
def test_sigkill_at_any_moment_leaves_a_resumable_run(toy_installed, tmp_path):
    # Every epoch of the toy run writes a checkpoint, so kills land mid-write often.
    for i, delay in enumerate([1.5, 1.9, 2.3, 2.7]):
        run_dir = tmp_path / f"run{i}"
        proc = subprocess.Popen([sys.executable, "-m", "gentoolkit", "fit", "pixels", "--dataset", "stripes",
                                 "--epochs", "100000", "--run-dir", str(run_dir), "--quiet"], env=toy_installed)
        time.sleep(delay)
        proc.kill()
        proc.wait()
        if not (run_dir / RunDir.STATE).exists():
            continue  # killed before the first checkpoint: nothing to lose yet
        state = checkpoint.load_state(run_dir / RunDir.STATE)
        result = subprocess.run([sys.executable, "-m", "gentoolkit", "fit", "--resume", str(run_dir),
                                 "--epochs", str(state["epoch"] + 1), "--quiet"], env=toy_installed,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        epochs = [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert epochs == list(range(1, state["epoch"] + 2))


@pytest.mark.slow
@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_cli_exits_128_plus_signal_and_says_how_to_resume(toy_installed, tmp_path, signum, code):
    proc = subprocess.Popen([sys.executable, "-m", "gentoolkit", "fit", "pixels", "--dataset", "stripes",
                             "--epochs", "100000", "--run-dir", str(tmp_path / "r"), "--quiet"],
                            env=toy_installed, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (tmp_path / "r" / RunDir.STATE).exists() and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code
    assert f"gentool fit --resume {tmp_path / 'r'}" in stderr and "Traceback" not in stderr


def test_trainer_adam_is_fused_where_it_can_be_and_updates_as_adam_does():
    from gentoolkit import Trainer

    torch.manual_seed(0)
    weights = [torch.randn(5, 3), torch.randn(3)]
    fused = [torch.nn.Parameter(w.clone()) for w in weights]
    plain = [torch.nn.Parameter(w.clone()) for w in weights]
    optimizer = Trainer.adam(fused, 0.1, betas=(0.5, 0.9), weight_decay=0.01)
    reference = torch.optim.Adam(plain, lr=0.1, betas=(0.5, 0.9), weight_decay=0.01)
    assert optimizer.param_groups[0]["fused"] and not reference.param_groups[0]["fused"]
    for step in range(3):
        for params, opt in ((fused, optimizer), (plain, reference)):
            opt.zero_grad()
            sum(((p - step) ** 2).sum() for p in params).backward()
            opt.step()
    for one, two in zip(fused, plain, strict=True):
        torch.testing.assert_close(one, two, rtol=1e-6, atol=1e-6)

    saved = reference.state_dict()  # a run written before Adam was fused resumes fused
    resumed = Trainer.adam(plain, 0.1, betas=(0.5, 0.9), weight_decay=0.01)
    resumed.load_state_dict(saved)
    assert resumed.param_groups[0]["fused"] and resumed.state_dict()["state"][0]["step"] == 3
    resumed.step()
