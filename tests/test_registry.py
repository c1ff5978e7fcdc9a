"""The registry: one way to register, one way to build, clear errors."""

from __future__ import annotations

import pytest

from hyperkd.core.errors import DuplicateComponentError, UnknownComponentError
from hyperkd.core.registry import KINDS, Registry, create, list_components, provider, register, registry


def test_every_kind_has_a_registry():
    assert set(KINDS) == {"sensor", "teacher", "student", "aligner", "masker", "loss", "task", "dataset"}
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
