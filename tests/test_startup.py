"""A light start: --version, --help and shell completion import neither torch nor any plugin.

Each command runs in a new process through a wrapper that reports, at exit, which heavy
modules were imported; no test measures an absolute time (benchmarks/cli_startup.py
compares the start with importing torch).
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import pytest

import gentoolkit

# Runs gentool's main() as the console script does, then prints the heavy modules it imported.
WRAPPER = """
import atexit, sys
heavy = sys.argv.pop(1).split(",")
atexit.register(lambda: print("imported:", ",".join(m for m in heavy if m in sys.modules), file=sys.stderr))
sys.argv[0] = "gentool"
from gentoolkit.cli import main
main()
"""
PLUGIN_MODULES = sorted({ep.value.split(":")[0] for ep in importlib.metadata.entry_points(group="gentoolkit")})
HEAVY = ["torch", "torchvision", "gentoolkit.registry", "gentoolkit.standard", "gentoolkit.api", *PLUGIN_MODULES]


@pytest.fixture(scope="module")
def environ(tmp_path_factory) -> dict[str, str]:
    """The toy plugin installed through an entry point, and a name index already built (as any
    command that loads the plugins leaves it)."""
    tmp = tmp_path_factory.mktemp("startup")
    dist = tmp / "site" / "gentoolkit_toy-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: gentoolkit-toy\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[gentoolkit]\ntoy = toy_plugin\n")
    paths = [str(tmp / "site"), str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p), "XDG_CACHE_HOME": str(tmp / "cache"),
           "OMP_NUM_THREADS": "1"}
    for switch in ("GENTOOL_PLUGINS", "GENTOOL_DISABLE_PLUGINS", "GENTOOL_PIN", "COLUMNS"):
        env.pop(switch, None)
    subprocess.run([sys.executable, "-m", "gentoolkit", "list-models"], env=env, check=True, capture_output=True)
    return env


def gentool(env: dict[str, str], *args: str, **extra: str) -> tuple[str, list[str]]:
    """Run ``gentool ARGS`` through the wrapper; its stdout and the heavy modules it imported."""
    result = subprocess.run([sys.executable, "-c", WRAPPER, ",".join(HEAVY + ["toy_plugin"]), *args],
                            env={**env, **extra}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    (report,) = [line for line in result.stderr.splitlines() if line.startswith("imported:")]
    return result.stdout, [m for m in report.removeprefix("imported:").strip().split(",") if m]


def complete(env: dict[str, str], words: str, shell: str = "bash") -> tuple[str, list[str]]:
    """What Click's completion answers for the command line ``words`` (the cursor after its last word).
    Bash and zsh pass the index of the word being completed, fish passes the word itself."""
    partial = "" if words.endswith(" ") else words.split()[-1]
    cword = partial if shell == "fish" else str(len(words.split()) - (1 if partial else 0))
    return gentool(env, _GENTOOL_COMPLETE=f"{shell}_complete", COMP_WORDS=words, COMP_CWORD=cword)


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["fit", "--help"], ["sample", "--help"],
                                  ["evaluate", "--help"], ["show", "--help"], ["info", "--help"]])
def test_light_commands_import_neither_torch_nor_plugins(environ, args):
    out, heavy = gentool(environ, *args)
    assert heavy == []
    assert out.startswith("gentool, version") if args == ["--version"] else out.startswith("Usage: gentool")


def test_help_lists_the_commands_from_the_index(environ):
    out, _ = gentool(environ, "--help")
    assert "  fit " in out and "  list-models " in out


@pytest.mark.parametrize("words,expected", [
    ("gentool fit ", {"pixels", "px", "bernoulli-vae", "vae", "dcgan"}),
    ("gentool fit pixels --dataset st", {"stripes"}),
    ("gentool sample --sampler pr", {"prior"}),
    ("gentool evaluate px --metric pixel-nll,fi", {"pixel-nll,fid"}),
    ("gentool fit px --callback tens", {"tensorboard"}),
    ("gentool info pix", {"pixels", "pixel-nll"}),
    ("gentool list-m", {"list-metrics", "list-models"}),
])
def test_completion_offers_installed_names_without_loading_them(environ, words, expected):
    out, heavy = complete(environ, words)
    offered = {line.partition(",")[2] for line in out.splitlines()}
    assert expected <= offered and heavy == []


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_completion_shows_descriptions_in_zsh_and_fish(environ, shell):
    out, heavy = complete(environ, "gentool fit --dataset stri", shell)
    assert "stripes" in out and "Random horizontal and vertical stripes" in out and heavy == []


def test_a_stale_index_is_rebuilt_without_loading_plugins_in_the_shell(environ, tmp_path):
    out, heavy = complete({**environ, "XDG_CACHE_HOME": str(tmp_path)}, "gentool fit pi")
    assert "plain,pixels" in out.splitlines() and heavy == []
    assert list((tmp_path / "gentoolkit").glob("index-*.json"))


def test_completion_after_a_name_gentool_does_not_know_loads_no_plugin_to_look_for_it(environ):
    _, heavy = complete(environ, "gentool no-such-command ")
    assert heavy == []


def test_the_package_imports_lightly_and_every_public_name_resolves():
    result = subprocess.run([sys.executable, "-c", "import sys, gentoolkit; print('torch' in sys.modules)"],
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
    assert all(getattr(gentoolkit, name) is not None for name in gentoolkit.__all__)
    assert set(gentoolkit.__all__) <= set(dir(gentoolkit))
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        gentoolkit.Nope  # noqa: B018


def test_the_cli_knows_the_registrys_kinds_without_importing_it():
    from gentoolkit.index import KINDS
    from gentoolkit.registry import KINDS as BASES

    assert KINDS == tuple(BASES)


def test_the_startup_benchmark_prints_the_ratio():
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "cli_startup.py"
    result = subprocess.run([sys.executable, str(script), "--repeats", "1"], capture_output=True, text=True,
                            timeout=300, check=True)
    assert "gentool --version" in result.stdout and 'python -c "import torch"' in result.stdout
    assert "ratio: " in result.stdout and "x of importing torch (goal: at most 0.25x)" in result.stdout
