"""The registry: one way to register, one way to build, clear errors."""

from __future__ import annotations

import pytest

from hyperkd.core.errors import DuplicateComponentError, PluginError, UnknownComponentError
from hyperkd.core.registry import (
    KINDS,
    ComponentSpec,
    Registry,
    create,
    declare,
    list_components,
    provider,
    register,
    registry,
)


def test_every_kind_has_a_registry():
    assert set(KINDS) == {
        "sensor",
        "teacher",
        "student",
        "aligner",
        "masker",
        "loss",
        "task",
        "dataset",
        "reader",
    }
    for kind in KINDS:
        assert registry(kind).kind == kind


def test_register_and_create_with_kwargs_and_alias():
    reg = registry("masker")

    @register("masker", "test-every-other", aliases=["test-eo"])
    def every_other(ratio: float = 0.5) -> dict:
        """Masks every other patch (test fixture)."""
        return {"ratio": ratio}

    try:
        assert create("masker", "test-every-other", ratio=0.25) == {"ratio": 0.25}
        assert create("masker", "test-eo") == {"ratio": 0.5}
        entry = reg.get("test-eo")
        assert entry.name == "test-every-other"
        assert entry.description == "Masks every other patch (test fixture)."
        assert entry.provider == "user"
        assert "test-every-other" in [e.name for e in list_components("masker")]
    finally:
        reg.remove("test-every-other")
    assert "test-eo" not in reg


def test_duplicate_name_names_both_providers():
    reg = Registry("loss")
    with provider("plugin-a"):
        reg.add("mse", lambda: None, description="a")
    with provider("plugin-b"), pytest.raises(DuplicateComponentError) as info:
        reg.add("mse", lambda: None, description="b")
    msg = str(info.value)
    assert "plugin-a" in msg and "plugin-b" in msg and "'mse'" in msg
    # an alias colliding with a name is a duplicate too
    with pytest.raises(DuplicateComponentError):
        reg.add("mse2", lambda: None, aliases=["mse"])


def test_unknown_name_lists_close_matches():
    with pytest.raises(UnknownComponentError) as info:
        create("sensor", "enmapp")
    msg = str(info.value)
    assert "unknown sensor 'enmapp'" in msg
    assert "Did you mean 'enmap'" in msg
    assert "hyperkd list sensor" in msg


def test_unknown_kind_suggests():
    with pytest.raises(UnknownComponentError, match="Did you mean 'teacher'"):
        registry("teachers")


def test_plain_data_entries_take_no_kwargs():
    reg = Registry("dataset")
    reg.add("constant", {"a": 1}, description="a dict")
    assert reg._lookup("constant").build() == {"a": 1}
    with pytest.raises(TypeError, match="takes no parameters"):
        reg._lookup("constant").build(x=1)


LAZY_MODULE = '''
from hyperkd import register

@register("loss", "test-lazy", aliases=["test-lazy-alias"], extra=2)
def make(scale: float = 1.0) -> dict:
    """A lazily declared loss (test fixture)."""
    return {"scale": scale}
'''


@pytest.fixture
def lazy_module(tmp_path, monkeypatch):
    """A module on sys.path that registers loss ``test-lazy`` when imported; cleaned up after."""
    import sys

    (tmp_path / "hkd_lazy_mod.py").write_text(LAZY_MODULE)
    (tmp_path / "hkd_lazy_none.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "hkd_lazy_mod"
    for name in ("test-lazy", "test-nothing", "test-missing", "test-noattr"):
        if registry("loss")._lookup(name) is not None:
            registry("loss").remove(name)
    for mod in ("hkd_lazy_mod", "hkd_lazy_none"):
        sys.modules.pop(mod, None)


def test_declared_component_is_imported_on_first_build_and_its_decorator_fills_it(lazy_module):
    import sys

    entry = declare(
        ComponentSpec("loss", "test-lazy", "hkd_lazy_mod:make", metadata={"declared": 1}),
        provider="lazy-plugin",
    )
    assert not entry.loaded and "hkd_lazy_mod" not in sys.modules
    assert "test-lazy" in registry("loss")
    assert "test-lazy" in [e.name for e in list_components("loss")]
    assert "hkd_lazy_mod" not in sys.modules  # knowing and listing names imports nothing
    assert create("loss", "test-lazy", scale=2.0) == {"scale": 2.0}
    assert "hkd_lazy_mod" in sys.modules and entry.loaded
    # the decorator filled the declared entry: same provider, docstring, merged aliases and metadata
    assert registry("loss").get("test-lazy-alias") is entry
    assert entry.provider == "lazy-plugin"
    assert entry.description == "A lazily declared loss (test fixture)."
    assert entry.metadata == {"declared": 1, "extra": 2}


def test_declared_description_is_listed_without_importing(lazy_module):
    import sys

    entry = declare(
        ComponentSpec("loss", "test-lazy", "hkd_lazy_mod", description="declared text"),
        provider="lazy-plugin",
    )
    assert entry.to_dict()["description"] == "declared text"
    assert "hkd_lazy_mod" not in sys.modules
    assert create("loss", "test-lazy") == {"scale": 1.0}  # module-only target: the decorator fills it
    assert entry.description == "declared text"


def test_declarations_that_cannot_be_built_say_why(lazy_module):
    with pytest.raises(PluginError, match=r"is not 'package\.module' or 'package\.module:attr'"):
        ComponentSpec("loss", "test-bad", "not a target")
    declare(ComponentSpec("loss", "test-nothing", "hkd_lazy_none"), provider="p")
    declare(ComponentSpec("loss", "test-missing", "hkd_no_such_module_xyz:f"), provider="p")
    declare(ComponentSpec("loss", "test-noattr", "hkd_lazy_none:nope"), provider="p")
    with pytest.raises(PluginError, match=r"importing hkd_lazy_none registered no loss named 'test-nothing'"):
        create("loss", "test-nothing")
    with pytest.raises(
        PluginError, match=r"plugin 'p'.*importing hkd_no_such_module_xyz failed with ModuleNotFoundError"
    ):
        create("loss", "test-missing")
    with pytest.raises(PluginError, match="module hkd_lazy_none has no attribute 'nope'"):
        create("loss", "test-noattr")


def test_declared_names_are_still_refused_to_other_plugins():
    reg = Registry("loss")
    reg.declare(ComponentSpec("loss", "lazy", "somewhere.else:thing", aliases=("lz",)), provider="plugin-a")
    with provider("plugin-b"), pytest.raises(DuplicateComponentError) as info:
        reg.add("lazy", lambda: None)
    assert "plugin-a" in str(info.value) and "plugin-b" in str(info.value)
    with pytest.raises(DuplicateComponentError, match="'lz' is already registered by plugin 'plugin-a'"):
        reg.declare(ComponentSpec("loss", "other", "x.y", aliases=("lz",)), provider="plugin-c")
    assert not reg._lookup("lazy").loaded


def test_declaring_what_the_same_plugin_already_registered_merges():
    """A module imported before discovery registered the name; the declaration adds to it."""
    reg = Registry("loss")

    def thing() -> None:
        """Registered before its plugin declared it."""

    with provider("plugin-a"):
        first = reg.add("early", thing)
    entry = reg.declare(
        ComponentSpec("loss", "early", "mod:thing", description="declared", aliases=("e",)),
        provider="plugin-a",
    )
    assert entry is first and entry.obj is thing
    assert entry.description == "declared" and reg._lookup("e") is entry
