"""Third-party plugins found the way users install them: a dist-info with an entry point, seen by a new process.

Each test puts distributions in a folder of its own and runs ``python -m
gentoolkit`` with that folder on PYTHONPATH, so ``importlib.metadata`` finds
them exactly as it finds a package pip put in site-packages, and the test
environment itself is never changed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "gentoolkit-wgan"
SWITCHES = ("GENTOOL_PLUGINS", "GENTOOL_DISABLE_PLUGINS", "GENTOOL_TRACE", "GENTOOL_DEBUG", "COLUMNS")


def gentool(*args: object, site: Path, ok: bool = True, **env: str) -> subprocess.CompletedProcess:
    """Run ``gentool ARGS`` in a new process that also sees the distributions in ``site``."""
    environ = {k: v for k, v in os.environ.items() if k not in SWITCHES}  # the caller's switches must not leak in
    environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    environ["OMP_NUM_THREADS"] = "1"  # tiny models; more threads only fight over busy cores
    environ["XDG_CACHE_HOME"] = str(site.parent / "cache")  # the name index of these plugins stays here
    result = subprocess.run([sys.executable, "-m", "gentoolkit", *map(str, args)], env={**environ, **env},
                            cwd=site.parent, capture_output=True, text=True, timeout=300)
    if ok:
        assert result.returncode == 0, result.stderr
    return result


def warnings_in(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning:")]


def table_row(table: str, name: str) -> list[str]:
    """The cells of the first line of the row whose first cell is ``name``, in a table Rich printed."""
    for line in table.splitlines():
        cells = [c.strip() for c in re.split(r"[│|]", line)[1:-1]]
        if cells and cells[0] == name:
            return cells
    raise AssertionError(f"no row '{name}' in:\n{table}")


def fake_distribution(site: Path, name: str, entry_points: dict[str, str], modules: dict[str, str]) -> None:
    """A distribution as pip leaves it in site-packages: its modules and a dist-info naming its entry points."""
    dist_info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(
        "[gentoolkit]\n" + "".join(f"{ep} = {module}\n" for ep, module in entry_points.items()))
    for module, source in modules.items():
        (site / f"{module}.py").write_text(source)


def plugin_source(kind: str, base: str, name: str, doc: str) -> str:
    """A plugin module registering one ``base`` subclass called ``name`` (never built, only listed)."""
    return (f"from gentoolkit import {base}, hookimpl\n\n\n"
            f"class Component({base}):\n    \"\"\"{doc}\"\"\"\n\n    name = \"{name}\"\n\n\n"
            f"@hookimpl\ndef register_{kind}s(register):\n    register(Component)\n")


# ---------------------------------------------------- a real package, pip-installed


@pytest.fixture(scope="module")
def wgan_site(tmp_path_factory) -> Path:
    """examples/gentoolkit-wgan installed by pip (offline, no dependencies) into a folder of its own."""
    tmp = tmp_path_factory.mktemp("wgan")
    # pip builds in the source folder; building a copy keeps build/ and *.egg-info out of the repository.
    source = shutil.copytree(EXAMPLE, tmp / "source", ignore=shutil.ignore_patterns("build", "*.egg-info",
                                                                                     "__pycache__"))
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                             "--no-index", "--quiet", "--target", str(tmp / "site"), str(source)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return tmp / "site"


def test_list_models_shows_the_installed_model_and_its_plugin(wgan_site):
    result = gentool("list-models", site=wgan_site)
    assert table_row(result.stdout, "wgan-gp")[2:4] == ["gan", "wgan"]  # family, plugin
    assert not warnings_in(result.stderr)


def test_plugins_json_shows_the_distribution_and_what_it_registers(wgan_site):
    rows = {row["name"]: row for row in json.loads(gentool("plugins", "--json", site=wgan_site).stdout)}
    assert rows["wgan"] == {
        "name": "wgan", "distribution": "gentoolkit-wgan", "version": "0.1.0", "module": "gentoolkit_wgan",
        "builtin": False, "hooks": ["register_commands", "register_models", "register_objectives", "register_trainers"],
        "registers": {"model": ["wgan-gp"], "objective": ["wasserstein-gp"], "trainer": ["wgan-gp"],
                      "command": ["wgan-critic"]},
        "error": None, "traceback": None, "clashes": [],
    }


def test_the_plugins_command_is_listed_with_gentools_own(wgan_site):
    result = gentool("--help", site=wgan_site)
    assert re.search(r"^  wgan-critic +Score IMAGES", result.stdout, re.MULTILINE)
    assert re.search(r"^  fit +Train MODEL", result.stdout, re.MULTILINE)


@pytest.mark.slow
def test_fit_and_sample_the_installed_model(wgan_site, tmp_path):
    run = tmp_path / "run"
    small = ["--set", "ngf=16", "--set", "ndf=16", "--set", "data.train_size=640", "--set", "data.test_size=64"]
    gentool("fit", "wgan-gp", "--dataset", "shapes", "--max-steps", 20, "--batch-size", 32, "--run-dir", run,
            "--quiet", *small, site=wgan_site)
    config = json.loads((run / "config.json").read_text())
    assert {k: config["model"][k] for k in ("name", "plugin", "distribution", "version")} == {
        "name": "wgan-gp", "plugin": "wgan", "distribution": "gentoolkit-wgan", "version": "0.1.0"}
    assert (config["objective"]["name"], config["trainer"]["name"]) == ("wasserstein-gp", "wgan-gp")
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 20

    gentool("sample", "wgan-gp", "--run", run, "-n", 16, "--out", tmp_path / "x.png", site=wgan_site)
    assert (tmp_path / "x.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    gentool("sample", "wgan-gp", "--run", run, "-n", 16, "--out", tmp_path / "best.png",
            "--sampler", "ranking", "--candidates", 64, site=wgan_site)
    scores = json.loads((tmp_path / "best.scores.json").read_text())["scores"]
    assert len(scores) == 16 and scores == sorted(scores, reverse=True)

    critic = gentool("wgan-critic", run, tmp_path / "x.png", tmp_path / "best.png", "--json", site=wgan_site)
    assert {row["path"] for row in json.loads(critic.stdout)} == {str(tmp_path / "x.png"), str(tmp_path / "best.png")}


# ------------------------------------------------------ broken and clashing plugins


def test_a_plugin_that_fails_to_import_is_one_warning(tmp_path):
    site = tmp_path / "site"
    fake_distribution(site, "gentoolkit-broken", {"broken": "gentoolkit_broken"},
                      {"gentoolkit_broken": "import gentoolkit_missing_dependency\n"})
    fake_distribution(site, "gentoolkit-fine", {"fine": "gentoolkit_fine"},
                      {"gentoolkit_fine": plugin_source("model", "Model", "fine-model", "Still loads.")})

    result = gentool("list-models", site=site)
    assert result.stderr.strip().splitlines() == warnings_in(result.stderr)  # no traceback, nothing else
    (warning,) = warnings_in(result.stderr)
    assert "'broken' from gentoolkit-broken" in warning
    assert "ModuleNotFoundError: No module named 'gentoolkit_missing_dependency'" in warning
    assert table_row(result.stdout, "fine-model")[3] == "fine"

    rows = {row["name"]: row for row in json.loads(gentool("plugins", "--json", site=site).stdout)}
    assert rows["broken"]["distribution"] == "gentoolkit-broken" and rows["broken"]["registers"] == {}
    assert rows["broken"]["error"] == "ModuleNotFoundError: No module named 'gentoolkit_missing_dependency'"
    assert rows["fine"]["error"] is None

    disabled = gentool("list-models", site=site, GENTOOL_DISABLE_PLUGINS="broken")
    assert disabled.stderr == ""
    assert table_row(disabled.stdout, "fine-model")[3] == "fine"


def test_a_name_two_plugins_register_goes_to_neither_and_a_built_in_keeps_its_own(tmp_path):
    site = tmp_path / "site"
    # Entry-point names sort the other way round from the distributions: no order may pick a winner.
    fake_distribution(site, "gentoolkit-twin-b", {"aa": "gentoolkit_twin_b"},
                      {"gentoolkit_twin_b": plugin_source("model", "Model", "twin", "The twin from b.")})
    fake_distribution(site, "gentoolkit-twin-a", {"zz": "gentoolkit_twin_a"},
                      {"gentoolkit_twin_a": plugin_source("model", "Model", "twin", "The twin from a.")})
    # A distribution named before 'gentoolkit' still loses to the core's own 'prior' sampler.
    fake_distribution(site, "aardvark-samplers", {"aardvark": "aardvark_samplers"},
                      {"aardvark_samplers": plugin_source("sampler", "Sampler", "prior", "Not the prior.")})

    result = gentool("list-models", site=site)
    twin, prior = sorted(warnings_in(result.stderr), key=lambda line: "twin" not in line)
    assert "model 'twin' is registered by plugin 'aa' (gentoolkit-twin-b) and plugin 'zz' (gentoolkit-twin-a)" in twin
    assert "it is contested, so no plugin gets it" in twin and "GENTOOL_PIN=twin=PLUGIN (one of aa, zz)" in twin
    assert "sampler 'prior' is registered by plugin 'aardvark' (aardvark-samplers) and plugin 'gentoolkit'" in prior
    assert "the built-in one (plugin 'gentoolkit') keeps it" in prior and "cannot be pinned" in prior
    assert "twin" not in result.stdout

    rows = {row["name"]: row for row in json.loads(gentool("plugins", "--json", site=site).stdout)}
    assert rows["aa"]["registers"] == {} and [c["winner"] for c in rows["aa"]["clashes"]] == [None]
    assert [(c["kind"], c["name"], c["plugins"]) for c in rows["zz"]["clashes"]] == [("model", "twin", ["aa", "zz"])]
    table = gentool("plugins", site=site, COLUMNS="200").stdout
    assert table_row(table, "aa")[4] == "clash: model 'twin': contested, nobody has it"
    assert table_row(table, "aardvark")[4] == "clash: sampler 'prior': lost to plugin 'gentoolkit'"

    contested = gentool("fit", "twin", "--dataset", "shapes", site=site, ok=False)
    assert contested.returncode == 1 and "Traceback" not in contested.stderr
    assert contested.stderr.splitlines()[-1].startswith("Error: model 'twin' is registered by plugin 'aa'")
    assert "GENTOOL_PIN=twin=PLUGIN" in contested.stderr.splitlines()[-1]

    pinned = gentool("list-models", site=site, GENTOOL_PIN="twin=aa")
    assert table_row(pinned.stdout, "twin")[3:] == ["aa", "The twin from b."]
    assert [w for w in warnings_in(pinned.stderr) if "twin" in w] == []


def test_an_alias_clash_costs_only_the_alias_and_old_runs_still_load(tmp_path):
    """The issue's case: realnvp's alias is the name of a model from a distribution sorted before it
    (the issue's alias was 'flow', which the built-in glow now holds, so here it is 'coupling')."""
    site = tmp_path / "site"
    toy = Path(__file__).with_name("toy_plugin.py").read_text()
    fake_distribution(site, "gentoolkit-toy", {"toy": "toy_plugin"}, {"toy_plugin": toy})
    fake_distribution(site, "gentoolkit-realnvp", {"realnvp": "gentoolkit_realnvp"}, {"gentoolkit_realnvp": (
        "from gentoolkit import hookimpl\nfrom toy_plugin import PixelBernoulli\n\n\n"
        "class RealNVP(PixelBernoulli):\n    \"\"\"A stand-in flow.\"\"\"\n\n    name = \"realnvp\"\n\n\n"
        "@hookimpl\ndef register_models(register):\n    register(RealNVP, aliases=(\"coupling\",))\n")})
    run = tmp_path / "run"
    gentool("fit", "coupling", "--dataset", "stripes", "--run-dir", run, "--quiet", site=site)
    assert json.loads((run / "config.json").read_text())["model"]["name"] == "realnvp"  # runs store the own name

    fake_distribution(site, "gentoolkit-a-flow", {"a-flow": "gentoolkit_a_flow"},
                      {"gentoolkit_a_flow": plugin_source("model", "Model", "coupling", "A flow of its own.")})
    listed = gentool("list-models", site=site)
    assert table_row(listed.stdout, "realnvp")[1:4] == ["", "test", "realnvp"]  # no alias any more
    assert table_row(listed.stdout, "coupling")[3] == "a-flow"
    (warning,) = warnings_in(listed.stderr)
    assert ("model 'coupling' is registered by plugin 'a-flow' (gentoolkit-a-flow) and plugin 'realnvp' "
            "(gentoolkit-realnvp, as an alias of 'realnvp')") in warning
    assert "plugin 'a-flow' keeps it as its model's own name" in warning and "GENTOOL_PIN=coupling=PLUGIN" in warning

    gentool("sample", "--run", run, "-n", 4, "--out", tmp_path / "x.png", site=site)
    assert (tmp_path / "x.png").read_bytes()[:4] == b"\x89PNG"


def test_debug_shows_the_traceback_of_a_plugin_that_failed(tmp_path):
    site = tmp_path / "site"
    fake_distribution(site, "gentoolkit-x", {"x": "gentoolkit_x"}, {"gentoolkit_x": (
        "from gentoolkit import hookimpl\n\nSETTINGS = {}\n\n\n"
        "@hookimpl\ndef register_models(register):\n    SETTINGS['missing-key']\n")})

    quiet = gentool("plugins", site=site, COLUMNS="200")
    (warning,) = warnings_in(quiet.stderr)
    assert warning.endswith("KeyError: 'missing-key' (gentool --debug or GENTOOL_DEBUG=1 shows the traceback)")
    assert "Traceback" not in quiet.stderr
    assert table_row(quiet.stdout, "x")[4] == "failed: KeyError: 'missing-key'"
    assert "gentool --debug plugins shows why a plugin failed" in quiet.stdout

    for debug in ({"args": ["--debug"]}, {"env": {"GENTOOL_DEBUG": "1"}}):
        loud = gentool(*debug.get("args", []), "list-models", site=site, **debug.get("env", {}))
        assert "warning: plugin 'x' from gentoolkit-x failed and was skipped: KeyError: 'missing-key'\n" in loud.stderr
        assert "Traceback (most recent call last)" in loud.stderr
        assert f'File "{site / "gentoolkit_x.py"}", line 8, in register_models' in loud.stderr
        assert table_row(loud.stdout, "bernoulli-vae")[3] == "vae"


COMMAND_PLUGIN = """import click

from gentoolkit import GentoolError, hookimpl


@hookimpl
def register_commands(cli):
    @cli.command()
    @click.option("--name", default="world")
    def hello(name):
        \"\"\"Greet someone.\"\"\"
        if name == "nobody":
            raise GentoolError("nobody to greet.")
        click.echo(f"hello {name}")
"""


def test_a_plugin_adds_a_command_and_a_broken_one_is_isolated(tmp_path):
    site = tmp_path / "site"
    fake_distribution(site, "gentoolkit-hello", {"hello": "gentoolkit_hello"}, {"gentoolkit_hello": COMMAND_PLUGIN})
    broken = "from gentoolkit import hookimpl\n\n\n@hookimpl\ndef register_commands(cli):\n    raise RuntimeError('no')"
    fake_distribution(site, "gentoolkit-broken-cli", {"broken-cli": "gentoolkit_broken_cli"},
                      {"gentoolkit_broken_cli": broken})

    result = gentool("hello", "--name", "Ada", site=site)
    assert result.stdout == "hello Ada\n"
    (warning,) = warnings_in(result.stderr)
    assert "plugin 'broken-cli' from gentoolkit-broken-cli failed and was skipped: RuntimeError: no" in warning

    error = gentool("--debug", "hello", "--name", "nobody", site=site, ok=False)
    assert error.returncode == 1 and error.stderr.splitlines()[-1] == "Error: nobody to greet."
    assert "RuntimeError: no\nTraceback (most recent call last)" in error.stderr  # --debug came before loading
    assert re.search(r"^  hello +Greet someone\.$", gentool("--help", site=site).stdout, re.MULTILINE)
    rows = {row["name"]: row for row in json.loads(gentool("plugins", "--json", site=site).stdout)}
    assert rows["hello"]["registers"] == {"command": ["hello"]}
    assert rows["broken-cli"]["error"] == "RuntimeError: no" and rows["broken-cli"]["registers"] == {}
    assert table_row(gentool("list-models", site=site).stdout, "dcgan")[3] == "dcgan"
