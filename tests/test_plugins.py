"""Plugin discovery through real entry points (installed distributions on sys.path)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hyperkd.core.plugins import load_plugins, plugin_infos
from hyperkd.core.registry import registry

ROOT = Path(__file__).resolve().parents[1]
HYPERKD = str(Path(sys.executable).with_name("hyperkd"))


def make_dist(site: Path, dist: str, ep_name: str, module: str, source: str) -> None:
    """Install a one-module distribution into ``site`` by hand: dist-info + entry_points.txt.

    This is what pip leaves behind, so importlib.metadata discovers it exactly as it
    discovers a pip-installed plugin.
    """
    (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text(f"[hyperkd]\n{ep_name} = {module}\n")


def test_builtin_plugins_found_through_entry_points():
    infos = {i.name: i for i in plugin_infos()}
    for name in ("prithvi", "enmap"):
        assert infos[name].status == "loaded", infos[name].error
        assert infos[name].builtin
        assert infos[name].distribution == "hyperkd"
    assert {"kind": "sensor", "name": "enmap"} in infos["enmap"].components
    assert {"kind": "sensor", "name": "hls"} in infos["prithvi"].components
    assert registry("sensor").get("enmap").provider == "enmap"


def test_broken_plugins_are_reported_and_skipped(tmp_path, plugin_env):
    make_dist(
        tmp_path, "hyperkd-broken", "broken", "hkd_broken", "raise ImportError('no module named foo')\n"
    )
    make_dist(
        tmp_path,
        "hyperkd-dup",
        "dup",
        "hkd_dup",
        """
        from hyperkd.core.plugins import hookimpl
        from hyperkd.core.registry import register
        from hyperkd.core.sensors import Band, Sensor

        @hookimpl
        def hyperkd_register():
            register("sensor", "dup-ok")(lambda: None)
            register("sensor", "enmap")(lambda: None)  # collides with the built-in
        """,
    )
    plugin_env.syspath_prepend(str(tmp_path))
    load_plugins(force=True)
    infos = {i.name: i for i in plugin_infos()}
    assert infos["broken"].status == "failed"
    assert "ImportError: no module named foo" in infos["broken"].error
    assert infos["dup"].status == "failed"
    assert "'enmap' is already registered by plugin 'enmap'" in infos["dup"].error
    assert "'dup'" in infos["dup"].error
    # the failed plugin's partial registrations were rolled back; the built-ins still work
    assert "dup-ok" not in registry("sensor")
    assert registry("sensor").get("enmap").provider == "enmap"
    assert infos["enmap"].status == "loaded"


def test_autoload_can_be_turned_off(tmp_path, plugin_env):
    make_dist(
        tmp_path,
        "hyperkd-tiny",
        "tiny",
        "hkd_tiny",
        """
        from hyperkd.core.plugins import hookimpl
        from hyperkd.core.registry import register
        from hyperkd.core.sensors import Band, Sensor

        @hookimpl
        def hyperkd_register():
            register("sensor", "tiny-sensor")(
                lambda: Sensor(name="tiny-sensor", bands=(Band("a", 500, 10),), gsd_m=10)
            )
        """,
    )
    plugin_env.syspath_prepend(str(tmp_path))
    plugin_env.setenv("HYPERKD_DISABLE_PLUGIN_AUTOLOAD", "1")
    load_plugins(force=True)
    infos = {i.name: i for i in plugin_infos()}
    assert infos["tiny"].status == "disabled"
    assert infos["enmap"].status == "loaded"  # built-ins always load
    assert "tiny-sensor" not in registry("sensor")
    plugin_env.setenv("HYPERKD_PLUGINS", "tiny")
    load_plugins(force=True)
    assert "tiny-sensor" in registry("sensor")


@pytest.fixture(scope="module")
def prisma_site(tmp_path_factory) -> Path:
    """The example plugin, installed for real by pip into a private site folder."""
    site = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "--target",
            str(site),
            str(ROOT / "examples/hyperkd-prisma"),
        ],
        check=True,
    )
    return site


def _cli(args: list[str], site: Path, **env_extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), **env_extra}
    return subprocess.run([HYPERKD, *args], capture_output=True, text=True, env=env, timeout=120)


def test_example_plugin_installed_with_pip_is_discovered(prisma_site):
    assert list(prisma_site.glob("hyperkd_prisma-0.1.0.dist-info/entry_points.txt"))
    out = _cli(["plugins", "list", "--json"], prisma_site)
    assert out.returncode == 0, out.stderr
    plugins = {p["name"]: p for p in json.loads(out.stdout)}
    assert plugins["prisma"]["status"] == "loaded"
    assert plugins["prisma"]["distribution"] == "hyperkd-prisma"
    assert plugins["prisma"]["builtin"] is False
    assert plugins["prisma"]["components"] == [{"kind": "sensor", "name": "prisma"}]
    out = _cli(["sensors", "show", "prisma", "--json"], prisma_site)
    assert out.returncode == 0, out.stderr
    table = json.loads(out.stdout)
    assert table["num_bands"] == 239
    centers = [b["center_nm"] for b in table["bands"]]
    assert centers == sorted(centers) and centers[0] == 400.0 and centers[-1] == 2505.0
    # autoload off hides the third-party sensor, keeps the built-ins
    off = _cli(["sensors", "list", "--json"], prisma_site, HYPERKD_DISABLE_PLUGIN_AUTOLOAD="1")
    names = {s["name"] for s in json.loads(off.stdout)}
    assert "prisma" not in names and {"enmap", "hls"} <= names


def test_plugin_module_imported_before_discovery_keeps_its_provider():
    """Import-time decorators in a plugin package are credited to that plugin, not 'user'."""
    from hyperkd.core.registry import Registry

    def fake() -> None:
        """A component defined in the EnMAP plugin's package."""

    fake.__module__ = "hyperkd_enmap.sensor"
    reg = Registry("sensor")
    assert reg.add("x", fake).provider == "enmap"
    fake.__module__ = "somewhere_else"
    assert reg.add("y", fake).provider == "user"


def test_plugin_components_are_declared_up_front_and_imported_on_first_use(tmp_path, plugin_env):
    make_dist(
        tmp_path,
        "hyperkd-lazy",
        "lazy",
        "hkd_lazy",
        """
        from hyperkd import ComponentSpec, hookimpl

        @hookimpl
        def hyperkd_components():
            return [ComponentSpec("sensor", "lazy-sensor", "hkd_lazy_impl:lazy_sensor")]
        """,
    )
    (tmp_path / "hkd_lazy_impl.py").write_text(
        textwrap.dedent(
            """
        from hyperkd import Band, Sensor, register

        @register("sensor", "lazy-sensor")
        def lazy_sensor():
            \"\"\"A sensor whose module is imported on first use.\"\"\"
            return Sensor(name="lazy-sensor", bands=(Band("a", 500, 10),), gsd_m=10)
        """
        )
    )
    make_dist(
        tmp_path,
        "hyperkd-badrecord",
        "badrecord",
        "hkd_badrecord",
        """
        from hyperkd import hookimpl

        @hookimpl
        def hyperkd_components():
            return [{"kind": "sensor", "name": "no-target"}]
        """,
    )
    plugin_env.syspath_prepend(str(tmp_path))
    plugin_env.delitem(sys.modules, "hkd_lazy_impl", raising=False)
    load_plugins(force=True)
    infos = {i.name: i for i in plugin_infos()}
    assert infos["lazy"].status == "loaded"
    assert infos["lazy"].components == [{"kind": "sensor", "name": "lazy-sensor"}]
    assert "hkd_lazy_impl" not in sys.modules  # declared, listed, not imported
    assert infos["badrecord"].status == "failed"
    assert infos["badrecord"].error.startswith("PluginError: plugin 'badrecord': component record")
    assert "target" in infos["badrecord"].error
    from hyperkd.core.sensors import get_sensor

    assert get_sensor("lazy-sensor").num_bands == 1
    assert "hkd_lazy_impl" in sys.modules
    entry = registry("sensor").get("lazy-sensor")
    assert entry.provider == "lazy" and entry.description == "A sensor whose module is imported on first use."
    # a rediscovery keeps what the import registered (its decorator will not fire again)
    load_plugins(force=True)
    assert registry("sensor").get("lazy-sensor") is entry and get_sensor("lazy-sensor").num_bands == 1


def test_every_builtin_component_is_declared_and_its_declaration_resolves():
    """The core's CORE_COMPONENTS and the built-in plugins' declarations match their modules:
    each declared entry builds from its target, and importing the modules registers nothing
    undeclared (which lookups before the import could not see)."""
    from hyperkd.core.plugins import CORE_COMPONENTS, CORE_PROVIDER
    from hyperkd.core.registry import list_components

    load_plugins()
    declared = {(s.kind, s.name) for s in CORE_COMPONENTS}
    for entry in list_components():
        if entry.provider in (CORE_PROVIDER, "prithvi", "enmap"):
            assert entry.target is not None, f"{entry} registered but not declared"
            entry.resolve()
    for entry in list_components():  # resolving imported the modules: nothing new appeared
        if entry.provider in (CORE_PROVIDER, "prithvi", "enmap"):
            assert entry.target is not None, f"{entry} registered on import but not declared"
    core = {(e.kind, e.name) for e in list_components() if e.provider == CORE_PROVIDER}
    assert core == declared
