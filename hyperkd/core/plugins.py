"""Plugin discovery: one pluggy ``PluginManager``, entry-point group ``hyperkd``.

Discovery rules (the pytest/datasette model):

* every entry point in the ``hyperkd`` group is a plugin module; it is imported and
  registered with the manager under the entry point's name. That top-level module must be
  light (no torch): it *declares* its components (``hyperkd_components`` hook returning
  :class:`~hyperkd.core.registry.ComponentSpec` records) and the registry imports each
  component's module on first build, so ``hyperkd --help`` or ``create("masker", "random")``
  imports only what it uses;
* plugins shipped inside the ``hyperkd`` distribution itself (``plugins/`` in the source
  tree) are *built-in* and always load;
* ``HYPERKD_DISABLE_PLUGIN_AUTOLOAD=1`` skips every third-party entry point;
  ``HYPERKD_PLUGINS=a,b`` then loads just the named ones;
* a plugin that fails to import or to register is recorded (name + error), reported by
  ``hyperkd plugins list`` and skipped — it never takes the CLI down.
"""

from __future__ import annotations

import importlib.metadata as md
import logging
import os
import threading
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pluggy

from hyperkd.core import hookspecs
from hyperkd.core.errors import HyperKDError, PluginError, SensorError, UnknownComponentError
from hyperkd.core.registry import REGISTRIES, ComponentSpec, Entry, declare, provider

log = logging.getLogger(__name__)

GROUP = "hyperkd"
"""The entry-point group plugins register under."""
DISABLE_ENV = "HYPERKD_DISABLE_PLUGIN_AUTOLOAD"
ENABLE_ENV = "HYPERKD_PLUGINS"
BUILTIN_DIST = "hyperkd"


def _core(kind: str, target: str, *names: str) -> tuple[ComponentSpec, ...]:
    return tuple(ComponentSpec(kind, name, target) for name in names)


CORE_COMPONENTS: tuple[ComponentSpec, ...] = (
    ComponentSpec("masker", "random", "hyperkd.components.maskers:RandomMasker"),
    ComponentSpec("masker", "spatial-feature", "hyperkd.components.maskers:SpatialFeatureMasker"),
    ComponentSpec("aligner", "spectral-range", "hyperkd.components.aligners:spectral_range"),
    ComponentSpec("aligner", "srf", "hyperkd.components.aligners:srf"),
    ComponentSpec("aligner", "learned", "hyperkd.components.aligners:LearnedAligner"),
    ComponentSpec("loss", "mse", "hyperkd.components.losses:MSELoss"),
    ComponentSpec("loss", "ssim", "hyperkd.components.losses:SSIMLoss"),
    ComponentSpec("loss", "sam", "hyperkd.components.losses:SAMLoss"),
    ComponentSpec("loss", "kld", "hyperkd.components.losses:KLDLoss"),
    ComponentSpec("loss", "cosine", "hyperkd.components.losses:CosineLoss"),
    ComponentSpec("task", "segmentation", "hyperkd.evaluation.tasks:SegmentationTask"),
    ComponentSpec("task", "regression", "hyperkd.evaluation.tasks:RegressionTask"),
    ComponentSpec("reader", "raster", "hyperkd.data.raster:FORMAT", description="GeoTIFF/COG or ENVI files"),
    # registered by loops at import time (one factory per preset / size)
    *_core("task", "hyperkd.evaluation.tasks", "landcover", "croptype", "soc"),
    *_core("student", "hyperkd.models.mae", "mae-tiny", "mae-small", "mae-base", "mae-large"),
    *_core(
        "student", "hyperkd.models.anymae", "any-mae-tiny", "any-mae-small", "any-mae-base", "any-mae-large"
    ),
)
"""The core's own built-in components (provider ``hyperkd``), declared like a plugin's: the
modules (torch and all) are imported when a component is first built. Descriptions come from
the docstrings, so listing them imports the modules; a test checks this table against what the
modules register."""
CORE_PROVIDER = "hyperkd"

hookimpl = pluggy.HookimplMarker("hyperkd")
"""Decorator marking a plugin's hook implementations."""


@dataclass
class PluginInfo:
    """What is known about one discovered plugin."""

    name: str
    module: str
    distribution: str | None
    version: str | None
    builtin: bool
    status: str = "loaded"  # loaded | failed | disabled
    error: str | None = None
    components: list[dict[str, str]] = field(default_factory=list)
    lost: list[dict[str, str]] = field(default_factory=list)
    """Components it had declared or registered before it failed (named when one is asked for)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "module": self.module,
            "distribution": self.distribution,
            "version": self.version,
            "builtin": self.builtin,
            "status": self.status,
            "error": self.error,
            "components": self.components,
        }


class _State:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.loaded = False
        self.loading = False
        self.core_declared = False
        self.pm: pluggy.PluginManager | None = None
        self.infos: dict[str, PluginInfo] = {}
        # what each loaded plugin module had in the registries when it was rolled back, so a
        # forced rediscovery can restore it (import-time decorators do not run twice for a
        # module that is already imported, and declared entries keep what they resolved)
        self.registered: dict[str, tuple[ModuleType, list[Entry]]] = {}
        self.modules: dict[str, ModuleType] = {}
        self.warned: set[str] = set()  # sensors whose band-table warnings were logged


_state = _State()


def _new_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    return pm


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _entry_points() -> list[md.EntryPoint]:
    eps = md.entry_points(group=GROUP)
    seen: dict[str, md.EntryPoint] = {}
    for ep in eps:  # the same dist can be visible twice (editable + sys.path); keep first
        seen.setdefault(ep.name, ep)
    return sorted(seen.values(), key=lambda e: (not _is_builtin(e), e.name))


def _is_builtin(ep: md.EntryPoint) -> bool:
    dist = getattr(ep, "dist", None)
    return dist is not None and dist.metadata["Name"] == BUILTIN_DIST


def _components_of(name: str) -> list[dict[str, str]]:
    return [
        {"kind": e.kind, "name": e.name}
        for reg in REGISTRIES.values()
        for e in reg._entries.values()
        if e.provider == name
    ]


def _declare_all(records: Any, name: str) -> None:
    """Declare what one plugin's ``hyperkd_components`` returned (specs or mappings)."""
    if records is None:
        return
    if isinstance(records, (str, bytes, Mapping)) or not isinstance(records, Iterable):
        raise PluginError(
            f"plugin {name!r}: hyperkd_components() returned a {type(records).__name__}; return a list "
            "of hyperkd.ComponentSpec records"
        )
    for record in records:
        try:
            declare(record, provider=name)
        except (PluginError, UnknownComponentError) as exc:  # bad record or kind: name the plugin
            raise PluginError(f"plugin {name!r}: {exc}") from None


def _register_plugin(pm: pluggy.PluginManager, name: str, module: ModuleType) -> None:
    pm.register(module, name=name)
    _state.modules[name] = module
    cached = _state.registered.pop(name, None)
    if cached is not None and cached[0] is module:
        for e in cached[1]:
            REGISTRIES[e.kind].restore(e)
        return
    with provider(name):
        for impl in pm.hook.hyperkd_components.get_hookimpls():
            if impl.plugin_name == name:
                _declare_all(impl.function(), name)
        for impl in pm.hook.hyperkd_register.get_hookimpls():
            if impl.plugin_name == name:
                impl.function()
    for entry in [e for e in REGISTRIES["sensor"]._entries.values() if e.provider == name and e.loaded]:
        _checked_sensor(entry)  # registered eagerly: its band table is checked now


def _checked_sensor(entry: Entry) -> Any:
    """Build a sensor entry and check its band table; warnings once per sensor, errors raised
    naming the sensor (and its plugin when one provides it)."""
    from hyperkd.core.sensors import check_band_table

    try:
        sensor = entry.build()
        warnings = check_band_table(sensor, entry.name)
    except Exception as exc:
        msg = str(exc) if repr(entry.name) in str(exc) else f"sensor {entry.name!r}: {exc}"
        if entry.provider in _state.infos:
            raise PluginError(f"plugin {entry.provider!r}: {msg}") from exc
        if isinstance(exc, HyperKDError):
            raise SensorError(msg) from exc
        raise
    if entry.name not in _state.warned:
        _state.warned.add(entry.name)
        for w in warnings:
            log.warning("%s%s", f"plugin {entry.provider!r}: " if entry.provider in _state.infos else "", w)
    return sensor


def build_sensor(name: str) -> Any:
    """Registered sensor ``name``, built and checked (used by :func:`hyperkd.core.sensors.get_sensor`).

    A sensor that fails to build or whose band table is unusable marks the plugin that provides
    it as failed (reported by ``hyperkd plugins list``; its components are withdrawn, every other
    sensor keeps working). A sensor whose plugin failed is named with that plugin and its error
    instead of "unknown sensor".
    """
    reg = REGISTRIES["sensor"]
    if name not in reg:
        for info in failed_plugins():
            if {"kind": "sensor", "name": name} in info.lost:
                raise PluginError(
                    f"sensor {name!r} comes from plugin {info.name!r}, which failed: {info.error}. Fix or "
                    "reinstall that plugin; `hyperkd plugins list` shows its status"
                )
        try:
            reg.get(name)
        except UnknownComponentError as exc:
            broken = ", ".join(f"{i.name} ({i.error})" for i in failed_plugins())
            if broken:
                raise UnknownComponentError(f"{exc} Plugins that failed to load: {broken}.") from None
            raise
    entry = reg.get(name)
    try:
        return _checked_sensor(entry)
    except PluginError as exc:
        _fail_loaded(entry.provider, exc)
        raise


def _fail_loaded(name: str, exc: Exception) -> None:
    """Mark loaded plugin ``name`` failed after discovery (a lazily built component broke)."""
    with _state.lock:
        info = _state.infos.get(name)
        if info is None or info.status != "loaded":
            return
        info.lost = [{"kind": e.kind, "name": e.name} for e in _rollback(name)]
        info.status = "failed"
        info.error = f"{type(exc).__name__}: {exc}"
        info.components = []
        _state.modules.pop(name, None)
        if _state.pm is not None and _state.pm.get_plugin(name) is not None:
            _state.pm.unregister(name=name)


def _rollback(name: str) -> list[Entry]:
    """Remove every entry plugin ``name`` provided; returns them."""
    return [
        reg.remove(entry.name)
        for reg in REGISTRIES.values()
        for entry in [e for e in reg._entries.values() if e.provider == name]
    ]


def _declare_core() -> None:
    if _state.core_declared:
        return
    for spec in CORE_COMPONENTS:
        REGISTRIES[spec.kind].declare(spec, provider=CORE_PROVIDER)
    _state.core_declared = True


def load_plugins(*, force: bool = False) -> pluggy.PluginManager:
    """Discover and load plugins once per process; returns the plugin manager.

    ``force=True`` forgets what was loaded (registrations included) and discovers again —
    used by tests that install plugins at run time.
    """
    with _state.lock:
        if _state.loading:  # a plugin's registration triggered a lookup: do not recurse
            assert _state.pm is not None
            return _state.pm
        if _state.loaded and not force:
            assert _state.pm is not None
            return _state.pm
        if force:
            for name, info in _state.infos.items():
                removed = _rollback(name)
                if info.status == "loaded" and name in _state.modules:
                    _state.registered[name] = (_state.modules[name], removed)
        _state.loading = True
        _state.pm = pm = _new_manager()
        _state.infos = {}
        _state.modules = {}
        try:
            _declare_core()
            autoload = not _truthy(os.environ.get(DISABLE_ENV))
            wanted = {s.strip() for s in os.environ.get(ENABLE_ENV, "").split(",") if s.strip()}
            for ep in _entry_points():
                builtin = _is_builtin(ep)
                dist = getattr(ep, "dist", None)
                info = PluginInfo(
                    name=ep.name,
                    module=ep.value,
                    distribution=dist.metadata["Name"] if dist else None,
                    version=dist.version if dist else None,
                    builtin=builtin,
                )
                _state.infos[ep.name] = info
                if not (builtin or autoload or ep.name in wanted):
                    info.status = "disabled"
                    continue
                try:
                    module = ep.load()
                    _register_plugin(pm, ep.name, module)
                except Exception as exc:
                    info.lost = [{"kind": e.kind, "name": e.name} for e in _rollback(ep.name)]
                    _state.modules.pop(ep.name, None)
                    if pm.get_plugin(ep.name) is not None:
                        pm.unregister(name=ep.name)
                    info.status = "failed"
                    info.error = f"{type(exc).__name__}: {exc}"
                    info.components = []
                    if _truthy(os.environ.get("HYPERKD_DEBUG")):
                        traceback.print_exc()
                    continue
                info.components = _components_of(ep.name)
        finally:
            _state.loading = False
            _state.loaded = True
        return pm


def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager (plugins loaded on first use)."""
    return load_plugins()


def plugin_infos() -> list[PluginInfo]:
    """Every discovered plugin with its status, error and components."""
    load_plugins()
    return list(_state.infos.values())


def failed_plugins() -> list[PluginInfo]:
    """Plugins that failed to load (reported by the CLI as warnings)."""
    return [i for i in plugin_infos() if i.status == "failed"]


def require_plugin_for(kind: str, name: str) -> None:
    """Raise a clear error naming what is missing when ``name`` is not registered."""
    reg = REGISTRIES[kind]
    if name not in reg:
        broken = [i.name for i in failed_plugins()]
        extra = f" Plugins that failed to load: {', '.join(broken)}." if broken else ""
        raise HyperKDError(
            f"no installed plugin provides {kind} {name!r}.{extra} "
            "Install the plugin that provides it, then check `hyperkd plugins list`."
        )
