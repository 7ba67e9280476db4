"""The registry in one process: who gets a name several plugins register, failures, pins, isolation."""

from __future__ import annotations

import types
import warnings

import click
import pytest

from gentoolkit import GentoolError, Model, hookimpl
from gentoolkit.info import describe
from gentoolkit.registry import PluginInfo, PluginWarning, Toolkit, build_toolkit, set_toolkit
from gentoolkit.testing import invoke_gentool


def model(name: str) -> type:
    """A model class called ``name`` (registered and listed, never built)."""
    return type(name.title(), (Model,), {"name": name, "__doc__": f"The {name} model."})


def plugin(**hooks) -> types.SimpleNamespace:
    """A plugin object with these hook implementations, e.g. ``register_models=lambda register: ...``."""
    return types.SimpleNamespace(**{name: hookimpl(fn) for name, fn in hooks.items()})


def models_plugin(*registrations: tuple[str, tuple[str, ...]]) -> types.SimpleNamespace:
    """A plugin registering one model per ``(name, aliases)``."""
    classes = [(model(name), aliases) for name, aliases in registrations]

    def register_models(register):
        for cls, aliases in classes:
            register(cls, aliases=aliases)

    return plugin(register_models=register_models)


def toolkit_of(*plugins: tuple[str, types.SimpleNamespace]) -> tuple[Toolkit, list[str]]:
    """A toolkit of third-party plugins ``(name, plugin)`` added in this order, and the warnings it gave."""
    toolkit = Toolkit()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for name, module in plugins:
            toolkit.add_plugin(module, PluginInfo(name, f"gentoolkit-{name}", "1.0", name))
    return toolkit, [str(w.message) for w in caught]


def owners(toolkit: Toolkit, kind: str = "model") -> dict[str, str]:
    """Each usable name of a kind and the plugin whose component it reaches."""
    registry = toolkit.registries[kind]
    return {name: registry.entry(name).plugin for name in registry.names()}


REALNVP = models_plugin(("realnvp", ("flow",)))
FLOW = models_plugin(("flow", ()))


@pytest.mark.parametrize("order", [("a", "b"), ("b", "a")])
def test_an_alias_that_is_another_components_name_costs_only_the_alias(order):
    plugins = {"a": REALNVP, "b": FLOW}
    toolkit, (warning,) = toolkit_of(*((name, plugins[name]) for name in order))
    assert owners(toolkit) == {"realnvp": "a", "flow": "b"}  # whichever loaded first
    assert toolkit.models.entry("realnvp").aliases == ()  # lists show only the names that work
    assert toolkit.plugins["a"].registered == {"model": ["realnvp"]}
    assert warning.startswith("model 'flow' is registered by ")
    assert "plugin 'a' (gentoolkit-a, as an alias of 'realnvp')" in warning and "plugin 'b' (gentoolkit-b)" in warning
    assert "plugin 'b' keeps it as its model's own name. Choose with GENTOOL_PIN=flow=PLUGIN (one of a, b)" in warning
    assert [c.outcome_for("a") for c in toolkit.plugins["a"].clashes] == ["model 'flow': lost to plugin 'b'"]


def test_an_alias_two_plugins_register_goes_to_neither():
    toolkit, (warning,) = toolkit_of(("a", models_plugin(("realnvp", ("flow",)))),
                                     ("b", models_plugin(("glow", ("flow",)))))
    assert owners(toolkit) == {"realnvp": "a", "glow": "b"}
    assert "it is contested, so no plugin gets it" in warning and "left out" not in warning
    with pytest.raises(GentoolError, match=r"model 'flow' is registered by .*contested.*GENTOOL_PIN=flow=PLUGIN"):
        toolkit.models.get("flow")
    with pytest.raises(GentoolError, match="contested"):  # not "unknown"
        describe(toolkit, "flow")


def test_a_name_two_third_party_plugins_register_goes_to_neither_and_both_are_listed():
    toolkit, (warning,) = toolkit_of(("a", models_plugin(("twin", ()))), ("b", models_plugin(("twin", ()))))
    assert owners(toolkit) == {}
    assert "the models of plugins 'a' and 'b' are left out" in warning
    assert toolkit.plugins["a"].registered == toolkit.plugins["b"].registered == {}
    assert [c.outcome_for("b") for c in toolkit.plugins["b"].clashes] == ["model 'twin': contested, nobody has it"]


def test_a_pin_settles_a_clash_without_a_warning(monkeypatch):
    monkeypatch.setenv("GENTOOL_PIN", "twin=b, flow=a")
    toolkit, caught = toolkit_of(("a", models_plugin(("twin", ()), ("realnvp", ("flow",)))),
                                 ("b", models_plugin(("twin", ()), ("flow", ()))))
    assert caught == []
    # a pin can take another component's own name: that component is then left out
    assert owners(toolkit) == {"twin": "b", "realnvp": "a", "flow": "a"}
    assert toolkit.plugins["b"].clashes[0].pinned


def test_a_pin_that_names_nothing_warns_and_a_malformed_one_is_an_error(monkeypatch):
    monkeypatch.setenv("GENTOOL_PIN", "vae=nosuchplugin")
    with pytest.warns(PluginWarning, match="GENTOOL_PIN=vae=nosuchplugin: plugin 'nosuchplugin' registers nothing"):
        build_toolkit(only=["vae"])
    monkeypatch.setenv("GENTOOL_PIN", "vae")
    with pytest.raises(GentoolError, match="GENTOOL_PIN: 'vae' is not NAME=PLUGIN"):
        build_toolkit(only=())


def test_built_ins_keep_their_names_and_aliases_even_against_a_pin(monkeypatch):
    monkeypatch.setenv("GENTOOL_PIN", "vae=mine")
    with pytest.warns(PluginWarning, match="plugin 'mine' registers nothing"):  # not yet: it is added below
        toolkit = build_toolkit(only=["vae"])
    mine = models_plugin(("vae", ()), ("bernoulli-vae", ()), ("my-vae", ("vae-mine",)))
    with pytest.warns(PluginWarning) as caught:
        toolkit.add_plugin(mine, PluginInfo("mine", "gentoolkit-mine", "1.0", "mine"))
    assert owners(toolkit)["vae"] == owners(toolkit)["bernoulli-vae"] == "vae"
    assert owners(toolkit)["my-vae"] == owners(toolkit)["vae-mine"] == "mine"
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 2 and all("the built-in one (plugin 'vae') keeps it, and the model of plugin 'mine' "
                                      "is left out. Built-in names cannot be pinned" in m for m in messages)


def raise_missing_key(register):
    raise KeyError("missing-key")


def test_a_plugin_that_fails_in_one_hook_registers_nothing():
    half = plugin(register_models=lambda register: register(model("half")), register_samplers=raise_missing_key)
    toolkit, (warning,) = toolkit_of(("half", half))
    assert warning == ("plugin 'half' from gentoolkit-half failed and was skipped: KeyError: 'missing-key' "
                       "(gentool --debug or GENTOOL_DEBUG=1 shows the traceback)")
    assert "half" not in toolkit.models and toolkit.plugins["half"].registered == {}
    assert toolkit.plugins["half"].traceback.startswith("Traceback (most recent call last)")


def test_debug_puts_the_traceback_in_the_warning(monkeypatch):
    monkeypatch.setenv("GENTOOL_DEBUG", "1")
    toolkit, (warning,) = toolkit_of(("broken", plugin(register_samplers=raise_missing_key)))
    first, _, rest = warning.partition("\n")
    assert first == "plugin 'broken' from gentoolkit-broken failed and was skipped: KeyError: 'missing-key'"
    assert rest == toolkit.plugins["broken"].traceback and "in raise_missing_key" in rest


# ---------------------------------------------------------------- commands


def test_plugin_commands_are_registered_and_never_replace_gentools_own():
    @click.command("hello")
    def hello():
        """Say hello."""

    def register_commands(cli):
        cli.add_command(hello)

        @cli.command("fit")
        def fit():
            """Not gentool's fit."""

    toolkit = build_toolkit(only=())
    with pytest.warns(PluginWarning, match="command 'fit' is registered by plugin 'cmd'.*the built-in one"):
        toolkit.add_plugin(plugin(register_commands=register_commands), PluginInfo("cmd", "gentoolkit-cmd", "1", "c"))
    assert toolkit.commands.get("hello") is hello
    assert toolkit.commands.entry("fit").plugin == "gentoolkit"
    assert toolkit.plugins["cmd"].registered == {"command": ["hello"]}


def test_a_command_two_plugins_add_is_a_one_line_error_saying_how_to_choose():
    def hello_plugin() -> types.SimpleNamespace:
        def register_commands(cli):
            @cli.command("hello")
            def hello():
                """Say hello."""

        return plugin(register_commands=register_commands)

    toolkit = build_toolkit(only=())
    with pytest.warns(PluginWarning, match="command 'hello'"):
        for name in ("a", "b"):
            toolkit.add_plugin(hello_plugin(), PluginInfo(name, name, "1", name))
    previous = set_toolkit(toolkit)
    try:
        result = invoke_gentool("hello")
    finally:
        set_toolkit(previous)
    assert result.exit_code == 1 and result.stderr.startswith("Error: command 'hello' is registered by plugin 'a'")
    assert "GENTOOL_PIN=hello=PLUGIN (one of a, b)" in result.stderr and "Traceback" not in result.stderr


def test_a_command_hook_that_adds_no_command_fails():
    toolkit, (warning,) = toolkit_of(("odd", plugin(register_commands=lambda cli: cli.commands.update(odd=print))))
    assert "expected a Click command or group" in warning
    assert toolkit.plugins["odd"].error.startswith("TypeError") and "odd" not in toolkit.commands


# ----------------------------------------------------------------- testing


def test_only_gives_exactly_the_named_plugins_whatever_the_environment(gentool_plugins, monkeypatch):
    monkeypatch.setenv("GENTOOL_PLUGINS", "dcgan")
    monkeypatch.setenv("GENTOOL_DISABLE_PLUGINS", "datasets")
    toolkit = gentool_plugins(models_plugin(("mine", ())), only=["datasets"])
    assert set(toolkit.plugins) == {"gentoolkit", "datasets", "test-plugin-0"}
    assert owners(toolkit) == {"mine": "test-plugin-0"} and "shapes" in toolkit.datasets
    assert set(gentool_plugins().plugins) == {"gentoolkit", "dcgan"}  # without only, the environment decides
