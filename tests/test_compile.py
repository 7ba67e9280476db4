"""``--compile``: torch.compile'd networks train like uncompiled ones, and fall back with a warning."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

import gentoolkit.api as gt
from gentoolkit import ImageSpec, training
from gentoolkit.cli import cli
from gentoolkit.registry import get_toolkit

# A VAE small enough to compile quickly: 4 steps of 32 shapes, then the held-out loss on 32.
TINY = dict(device="cpu", epochs=1, batch_size=32, overrides=["hidden=32", "latent_dim=4", "data.train_size=128",
                                                               "data.test_size=32"])


def test_compile_networks_compiles_the_model_and_each_child_and_makes_room_for_their_versions():
    # set and restored by hand: monkeypatch's undo leaves torch's config module without the key
    before = torch._dynamo.config.recompile_limit
    try:
        dcgan = get_toolkit().models.get("dcgan")
        model = dcgan(dcgan.Config(), ImageSpec(1, 28, 28))
        assert training.compile_networks(model)
        assert all(m._compiled_call_impl is not None for m in (model, model.netg, model.netd))
        # netg and netd each run in several versions (train/eval, frozen or not): past the limit, dynamo
        # would run them uncompiled without a word
        assert torch._dynamo.config.recompile_limit == before + 3 * training.COMPILED_VERSIONS
    finally:
        torch._dynamo.config.recompile_limit = before


@pytest.mark.slow
def test_compiled_fit_matches_uncompiled_and_its_checkpoint_loads_uncompiled(tmp_path):
    plain = gt.fit("vae", "shapes", run_dir=tmp_path / "plain", **TINY)
    compiled = gt.fit("vae", "shapes", run_dir=tmp_path / "compiled", compile=True, **TINY)
    assert compiled.config.training.compile is True
    assert compiled.model.encoder._compiled_call_impl is not None  # it really ran compiled
    # Fused kernels round differently, so the same seed gives close, not identical, losses.
    for key in ("train_loss", "test_loss"):
        assert compiled.metrics[-1][key] == pytest.approx(plain.metrics[-1][key], rel=1e-4)
    reloaded = gt.load_run(compiled.path).model  # a fresh, uncompiled model: the names must match
    assert reloaded.encoder._compiled_call_impl is None
    saved = compiled.model.state_dict()
    assert list(reloaded.state_dict()) == list(saved) == list(plain.model.state_dict())
    for name, value in reloaded.state_dict().items():
        assert torch.equal(value, saved[name])
        torch.testing.assert_close(value, plain.model.state_dict()[name], rtol=1e-4, atol=1e-5)


def no_compiler():
    raise RuntimeError("no g++")


def test_compile_without_a_compiler_warns_once_and_trains_uncompiled(tmp_path, monkeypatch):
    monkeypatch.setattr("torch._inductor.cpp_builder.get_cpp_compiler", no_compiler)
    assert "needs a C++ compiler" in training.compile_unavailable(torch.device("cpu"))
    with pytest.warns(UserWarning, match=r"^--compile ignored: .*C\+\+ compiler.*; training uncompiled\.$") as seen:
        run = gt.fit("vae", "shapes", run_dir=tmp_path, compile=True, **TINY)
    assert len(seen) == 1
    assert run.model.encoder._compiled_call_impl is None
    assert run.metrics[-1]["step"] == 4


def test_cli_compile_without_a_compiler_is_one_warning_line(tmp_path, monkeypatch):
    monkeypatch.setattr("torch._inductor.cpp_builder.get_cpp_compiler", no_compiler)
    result = CliRunner().invoke(cli, ["fit", "vae", "--dataset", "shapes", "--device", "cpu", "--compile",
                                      "--max-steps", "2", "--batch-size", "32", "--set", "data.train_size=64",
                                      "--set", "data.test_size=16", "--quiet", "--run-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["warning: --compile ignored: torch.compile needs a C++ compiler (g++ or "
                                          "clang++) for the CPU, and none was found; training uncompiled."]
    assert json.loads((tmp_path / "config.json").read_text())["training"]["compile"] is True
