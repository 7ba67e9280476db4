"""gentool info: a component's plugin, capabilities or needs, and its options read from its Config."""

from __future__ import annotations

import json
import types
from dataclasses import dataclass, field, make_dataclass
from typing import Literal

import pytest

import gentoolkit
from gentoolkit import GentoolError, Model, hookimpl
from gentoolkit.info import describe, field_comments, options
from gentoolkit.registry import get_toolkit
from gentoolkit.testing import invoke_gentool


@dataclass
class Base:
    size: int = 3  # how many
    # which one: a, the first;
    # b, the second
    kind: Literal["a", "b"] = "a"


@dataclass
class Extended(Base):
    size: int = 4  # how many, now four
    dims: tuple[int, ...] = (1, 2)
    maybe: float | None = None  # no default value # stays one comment
    names: list[str] = field(default_factory=lambda: ["x"])  # built by a factory


def test_options_read_types_defaults_and_comments_beside_or_above_each_field():
    rows = {o.name: (o.type, o.default, o.meaning) for o in options(Extended)}
    assert rows == {
        "size": ("int", 4, "how many, now four"),  # the subclass's comment wins
        "kind": ("a | b", "a", "which one: a, the first; b, the second"),  # inherited, from the lines above
        "dims": ("tuple[int, ...]", [1, 2], ""),
        "maybe": ("float | None", None, "no default value # stays one comment"),
        "names": ("list[str]", ["x"], "built by a factory"),
    }


def test_a_config_without_source_still_lists_its_fields():
    made = make_dataclass("Made", [("width", int, field(default=8))])
    assert field_comments(made) == {}
    assert [(o.name, o.type, o.default, o.meaning) for o in options(made)] == [("width", "int", 8, "")]


def test_info_by_alias_shows_the_model_its_capabilities_and_every_option(toy, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    result = invoke_gentool("info", "vae")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"model bernoulli-vae, also vae: plugin 'vae' from gentoolkit {gentoolkit.__version__}"
    assert ("capabilities: LatentModel, LatentEncoder, StandardNormalPrior, Likelihood, VariationalModel, "
            "BitsPerDim") in lines
    cells = {row[0]: row for row in ([c.strip() for c in line.split("│")[1:-1]] for line in lines) if row}
    assert cells["latent_dim"] == ["latent_dim", "int", "20", "size of the latent code z"]
    assert cells["arch"][1:3] == ["mlp | conv", "mlp"]
    assert cells["hidden"][1:3] == ["tuple[int, ...]", "400"]
    assert "set with: gentool fit bernoulli-vae --set KEY=VALUE" in result.stdout


def test_info_json_of_a_sampler_lists_what_it_needs():
    result = invoke_gentool("info", "ranking", "--json")
    (info,) = json.loads(result.stdout)
    assert (info["kind"], info["plugin"], info["requires"]) == ("sampler", "ranking", ["LatentModel",
                                                                                         "DiscriminatorScored"])
    assert info["options"][0] == {"name": "candidates", "type": "int", "default": 512,
                                  "meaning": "images drawn; the n best of them are kept"}
    assert info["set_with"].startswith("gentool sample MODEL --sampler ranking --KEY VALUE")


def test_a_name_of_two_kinds_shows_both_unless_kind_picks_one(toy):
    both = json.loads(invoke_gentool("info", "pixel-nll", "--json").stdout)
    assert [(c["kind"], c["plugin"]) for c in both] == [("objective", "toy_plugin"), ("metric", "toy_plugin")]
    assert both[0]["options"][0]["meaning"] == "multiplies the loss; inf makes it blow up (for tests)"
    shown = invoke_gentool("info", "pixel-nll")
    assert "'pixel-nll' is an objective and a metric; --kind picks one." in shown.stderr
    assert "objective pixel-nll" in shown.stdout and "metric pixel-nll" in shown.stdout
    (metric,) = json.loads(invoke_gentool("info", "pixel-nll", "--kind", "metric", "--json").stdout)
    assert metric["kind"] == "metric" and metric["options"] == []


def test_unknown_names_suggest_the_closest_in_one_line():
    result = invoke_gentool("info", "gausian-vae")
    assert result.exit_code == 1
    assert result.stderr == "Error: unknown component 'gausian-vae'. Did you mean 'gaussian-vae'?\n"
    with pytest.raises(GentoolError, match="unknown kind 'modle'. Did you mean 'model'"):
        describe(get_toolkit(), "vae", kind="modle")


def test_the_lists_point_to_info(toy):
    assert "gentool info NAME shows a model's options" in invoke_gentool("list-models").stdout
    assert "gentool info NAME shows a component's options" in invoke_gentool("plugins").stdout


def test_a_bare_model_without_docstring_options_or_defaults_is_described(gentool_plugins):
    bare = type("Bare", (Model,), {"name": "bare"})
    toolkit = gentool_plugins(types.SimpleNamespace(register_models=hookimpl(lambda register: register(bare))),
                              only=[])
    (info,) = describe(toolkit, "bare")
    assert (info.description, info.options, info.capabilities) == ("", [], [])
    assert info.defaults == {"objective": None, "trainer": "adam", "sampler": "prior", "lr": 1e-3,
                             "batch_size": 128, "epochs": 10}
