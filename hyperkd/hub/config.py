"""``config.json``: the folder format's versions, reading and checking a config, and model types.

A config is checked *before* any weights are read: a newer folder format or a
``min_hyperkd_version`` above the installed one, an unknown ``model_type`` or a sensor no
installed plugin provides raise a :class:`~hyperkd.core.errors.HyperKDError` naming the version
or plugin to install. Nothing from the folder or repo is imported or run.

Model types are a small registry: ``class MyModel(nn.Module, HyperKDHubMixin,
model_type="my-type")`` registers the class at definition; :func:`model_type_class` maps a
config's ``model_type`` to that class. Built-in types are imported on demand
(:data:`BUILTIN_MODEL_TYPES`); plugin types register when their plugin loads.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hyperkd.core.errors import DuplicateComponentError, HyperKDError
from hyperkd.hub.sources import CONFIG_NAME, Source, fetch_file, parse_source

if TYPE_CHECKING:
    from hyperkd.core.sensors import Sensor
    from hyperkd.hub.mixin import HyperKDHubMixin

FORMAT_VERSION = 1
"""Version of the folder format this hyperkd writes and the newest it reads."""
MIN_READER_VERSION = "0.1.0"
"""The oldest hyperkd that reads what this hyperkd writes (``min_hyperkd_version``)."""

BUILTIN_MODEL_TYPES: dict[str, str] = {
    "hyperspectral-mae": "hyperkd.models.mae",
    "hyperkd-pixel": "hyperkd.models.pixel",
    "any-sensor-mae": "hyperkd.models.anymae",
}
"""Core model types -> the module whose import registers them (imported on first use)."""

HUB_FIELDS = frozenset(
    {
        "model_type",
        "architecture",
        "model_args",
        "pretrained_cfg",
        "hyperkd_version",
        "hyperkd_format",
        "min_hyperkd_version",
        "requires",
        "recipe",
        "training",
    }
)
"""config.json fields hyperkd adds around a model's own constructor arguments (``architecture``,
``model_args`` and ``pretrained_cfg`` are the fields timm's Hub configs have)."""

LEGACY_STUDENT_KEYS = frozenset({"sensor", "embed_dim", "patch_size", "decoder_embed_dim", "img_size"})
"""Constructor fields of a student saved before the folder format existed (plain mixin config)."""


def installed_version() -> str:
    """The installed hyperkd version (written into, and compared with, configs)."""
    from hyperkd import __version__

    return __version__


def _version_gt(a: str, b: str) -> bool:
    from packaging.version import InvalidVersion, Version

    try:
        return Version(a) > Version(b)
    except InvalidVersion:
        return False


# -- reading and checking -----------------------------------------------------------------------
def read_config(
    spec: str | os.PathLike[str] | Source,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool | None = None,
) -> dict[str, Any]:
    """Read and check ``config.json`` of a folder or repo (see :func:`check_config`)."""
    source = parse_source(spec, revision)
    path = fetch_file(
        source, CONFIG_NAME, token=token, cache_dir=cache_dir, local_files_only=local_files_only
    )
    if path is None:
        raise HyperKDError(f"{source.describe()} has no {CONFIG_NAME}; it is not a model saved by hyperkd")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise HyperKDError(f"{source.describe()}: {CONFIG_NAME} is not valid JSON ({exc})") from None
    config = normalize_config(config)
    check_config(config, where=source.describe())
    return config


def normalize_config(config: Any) -> Any:
    """Read a pre-format student config (only constructor arguments, as hyperkd 0.1.0 wrote before
    :mod:`hyperkd.hub`) as folder format 0 of ``hyperspectral-mae``; other configs pass unchanged."""
    if isinstance(config, Mapping) and "hyperkd_format" not in config and set(config) >= LEGACY_STUDENT_KEYS:
        return {"model_type": "hyperspectral-mae", "hyperkd_format": 0, "hyperkd_version": "0.1.0", **config}
    return config


def check_config(config: Any, *, where: str = "this model") -> type[HyperKDHubMixin]:
    """Refuse a config this installation cannot load safely; return the class that builds it.

    Checks, in order: it is a hyperkd config; its folder format and ``min_hyperkd_version``
    are not newer than this hyperkd; an installed plugin provides its ``model_type``; and
    one provides every sensor it ``requires``. Nothing from the repo is imported or run.
    """
    config = normalize_config(config)
    if not isinstance(config, Mapping) or "hyperkd_format" not in config:
        raise HyperKDError(f"{where}: {CONFIG_NAME} is not a hyperkd model config (no hyperkd_format)")
    if config.get("family") == "prithvi-eo" and "model_type" not in config:
        raise HyperKDError(
            f"{where} is a converted Prithvi-EO teacher checkpoint, not a student: use it as "
            "--teacher-weights (or weights= of a Prithvi teacher)"
        )
    installed = installed_version()
    writer = str(config.get("hyperkd_version", "unknown"))
    need = str(config.get("min_hyperkd_version") or writer)
    fmt = config.get("hyperkd_format")
    if not isinstance(fmt, int) or fmt > FORMAT_VERSION or _version_gt(need, installed):
        raise HyperKDError(
            f"{where} was saved by hyperkd {writer} (folder format {fmt}) and needs hyperkd >= {need}; "
            f"this is hyperkd {installed}, which reads folder format <= {FORMAT_VERSION}. Upgrade: "
            f"pip install -U 'hyperkd>={need}'"
        )
    requires = {r.get("kind"): r for r in config.get("requires") or [] if isinstance(r, Mapping)}
    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        raise HyperKDError(f"{where}: {CONFIG_NAME} has no model_type")
    cls = model_type_class(model_type, requirement=requires.get("model_type"), where=where)
    sensor = requires.get("sensor")
    if sensor is None and isinstance(config.get("sensor"), Mapping) and "name" in config["sensor"]:
        sensor = {"kind": "sensor", "name": config["sensor"]["name"]}  # format 0: no plugin recorded
    if sensor is not None:
        from hyperkd.core.registry import registry

        if sensor.get("name") not in registry("sensor"):
            raise HyperKDError(
                f"{where} was trained for sensor {sensor.get('name')!r}, which no installed plugin provides; "
                f"{_requirement_text(sensor)} and check `hyperkd plugins list`"
            )
    return cls


def _requirement_text(req: Mapping[str, Any]) -> str:
    """``the hyperkd plugin 'p' (pip install 'dist>=v')``, or a hint for user-registered components."""
    plugin = req.get("plugin")
    if plugin is None:
        return f"install the plugin that provides {req.get('kind', 'component')} {req.get('name')!r}"
    if plugin in ("user", "unknown"):
        return (
            f"register the {req.get('kind', 'component')} {req.get('name')!r} yourself (it came from "
            "user code, not from a plugin, when the model was saved)"
        )
    dist = req.get("distribution")
    version = req.get("version")
    pkg = (
        f" (pip install '{dist}>={version}')"
        if dist and version
        else (f" (pip install {dist})" if dist else "")
    )
    return f"install the hyperkd plugin {plugin!r}{pkg}"


def pretrained_cfg(sensor: Sensor, img_size: int | None = None) -> dict[str, Any]:
    """timm's ``pretrained_cfg`` for a model of ``sensor``'s bands at ``img_size`` px.

    ``input_size`` is ``[bands, H, W]``; ``mean`` / ``std`` are per band in reflectance units,
    the statistics the model standardises its input with *itself* (``standardizes_input``: feed
    it reflectance, not standardised values); ``band_names``, ``wavelengths_nm`` (centres) and
    ``fwhm_nm`` say which band each input channel is."""
    c = sensor.num_bands
    return {
        "input_size": [c, img_size, img_size] if img_size else [c, None, None],
        "fixed_input_size": img_size is not None,
        "mean": sensor.means or [0.0] * c,  # (a sensor without statistics: the model uses 0 and 1)
        "std": sensor.stds or [1.0] * c,
        "standardizes_input": True,
        "input_units": "surface reflectance (0-1)",
        "sensor": sensor.name,
        "band_names": sensor.band_names,
        "wavelengths_nm": sensor.centers_nm,
        "fwhm_nm": sensor.fwhms_nm,
        "gsd_m": sensor.gsd_m,
        "num_classes": 0,
    }


# -- model types --------------------------------------------------------------------------------
MODEL_TYPES: dict[str, type[HyperKDHubMixin]] = {}
"""``model_type`` -> the installed class that builds it (filled by class definitions)."""


def register_model_type(name: str, cls: type[HyperKDHubMixin]) -> None:
    """Map ``model_type`` ``name`` to ``cls`` (done by ``HyperKDHubMixin`` subclasses with ``model_type=``)."""
    old = MODEL_TYPES.get(name)
    if old is not None and f"{old.__module__}.{old.__qualname__}" != f"{cls.__module__}.{cls.__qualname__}":
        raise DuplicateComponentError(
            f"model type {name!r} is already provided by {old.__module__}.{old.__qualname__}; "
            f"{cls.__module__}.{cls.__qualname__} tried to register it again"
        )
    MODEL_TYPES[name] = cls


def model_type_class(
    name: str, *, requirement: Mapping[str, Any] | None = None, where: str = "this model"
) -> type[HyperKDHubMixin]:
    """The installed class for ``model_type`` ``name``; an unknown one names the plugin to install."""
    if name not in MODEL_TYPES and name in BUILTIN_MODEL_TYPES:
        importlib.import_module(BUILTIN_MODEL_TYPES[name])
    if name not in MODEL_TYPES:
        from hyperkd.core.plugins import load_plugins

        load_plugins()
    if name not in MODEL_TYPES:
        known = ", ".join(sorted({*MODEL_TYPES, *BUILTIN_MODEL_TYPES}))
        need = _requirement_text(requirement) if requirement else "install the plugin that provides it"
        raise HyperKDError(
            f"{where} is a {name!r} model, a model type no installed plugin provides (known: {known}); "
            f"{need} and check `hyperkd plugins list`"
        )
    return MODEL_TYPES[name]


def provider_of(obj: Any) -> dict[str, Any]:
    """Plugin name, distribution and version that provide ``obj`` (a class)."""
    from hyperkd.core.plugins import plugin_infos
    from hyperkd.core.registry import _infer_provider

    name = _infer_provider(obj)
    return plugin_record(name, plugin_infos())


def plugin_record(name: str, infos: list[Any]) -> dict[str, Any]:
    """``{"plugin", "distribution", "version"}`` of plugin ``name`` among ``infos`` (for ``requires``)."""
    if name == "hyperkd":
        return {"plugin": "hyperkd", "distribution": "hyperkd", "version": installed_version()}
    for info in infos:
        if info.name == name:
            return {"plugin": name, "distribution": info.distribution, "version": info.version}
    return {"plugin": name, "distribution": None, "version": None}
