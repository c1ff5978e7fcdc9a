"""One model factory: every way hyperkd names a student (or teacher) is resolved here.

:func:`resolve_spec` turns what a user wrote (``--student``, a recipe's ``student.name`` or
``init_from``, ``finetune(student=...)``, ``build_student(...)``) into a :class:`ModelSpec`;
:func:`create_model` (``hyperkd.create_model``) builds or loads it. The forms, in the order
they are tried:

1. ``hf-hub:ORG/NAME[@REV]`` is a Hugging Face repo and ``local-dir:PATH`` a local folder,
   whatever else exists (the explicit prefixes, as in timm);
2. an existing model folder (``config.json`` + ``model.safetensors``) or run folder (a folder a
   pretrain/distill run wrote: its exported student is ``RUN/student/``);
3. a registered component of the kind (``mae-small``; a teacher such as ``prithvi``);
4. ``<sensor>-mae-<size>`` (``enmap-mae-small``) or a sensor name (``enmap``: its tiny student);
5. ``org/name[@revision]``: a Hub repo. When that lookup fails, the error says that no local
   folder of that name exists either and names the prefixes.

An existing path that holds no model is an error (not a Hub lookup), and so is anything else.
Architectures (3, 4) are built untrained; folders and repos (1, 2, 5) are loaded through
:func:`hyperkd.hub.from_pretrained` (safetensors only, the class chosen by ``config.json``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hyperkd import hub
from hyperkd.core.errors import HyperKDError, UnknownComponentError, WeightsError
from hyperkd.core.sensors import Sensor

ARCHITECTURE_FORMS = ("registry", "sensor-size", "sensor")
TRAINED_FORMS = ("folder", "hub")
LOAD_OPTIONS = frozenset(
    {"revision", "token", "cache_dir", "local_files_only", "force_download", "map_location"}
)
"""Keyword arguments :func:`create_model` passes to :func:`hyperkd.hub.from_pretrained` for a trained model."""


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model spec.

    ``form`` is ``"registry"`` (``name`` is the registry entry), ``"sensor-size"`` /
    ``"sensor"`` (build registry entry ``name`` for ``sensor``), ``"folder"`` or ``"hub"``
    (``source`` says where the trained model lives).
    """

    spec: str
    kind: str
    form: str
    name: str | None = None
    sensor: str | None = None
    source: hub.Source | None = None

    @property
    def trained(self) -> bool:
        """Whether the spec names trained weights (a folder, run folder or Hub repo)."""
        return self.form in TRAINED_FORMS

    def sensor_name(self) -> str | None:
        """The sensor the model is for: from the spec itself, or (trained) from its ``config.json``;
        ``None`` for a registered component that takes any sensor (``mae-small``)."""
        if self.source is not None:
            return str(hub.read_config(self.source)["sensor"]["name"])
        return self.sensor


def _split_sized(text: str) -> tuple[str, str] | None:
    """``("enmap", "small")`` for ``enmap-mae-small`` when ``small`` is a student size."""
    from hyperkd.models.mae import SIZES

    if "-mae-" not in text:
        return None
    sensor, size = text.rsplit("-mae-", 1)
    return (sensor, size) if size in SIZES and sensor else None


def resolve_spec(
    spec: str | os.PathLike[str] | Sensor | ModelSpec,
    *,
    kind: str = "student",
    sensor: Sensor | str | None = None,
) -> ModelSpec:
    """What ``spec`` names (see the module docstring for the forms and their order).

    ``sensor``: the sensor the caller builds for (a chip store's); its name counts as a known
    sensor even when no plugin registers it. Raises a one-line
    :class:`~hyperkd.core.errors.HyperKDError` for anything that is none of the forms.
    """
    from hyperkd.core.registry import registry

    if isinstance(spec, ModelSpec):
        return spec
    if isinstance(spec, Sensor):
        return ModelSpec(spec.name, kind, "sensor", name="mae-tiny", sensor=spec.name)
    text = os.fspath(spec).strip()
    if text.startswith((hub.HF_PREFIX, hub.LOCAL_PREFIX, "hf://")):
        source = hub.parse_source(text)
        if source.folder is not None and not hub.has_model(source.folder):
            raise _no_model(text, kind)
        return ModelSpec(text, kind, "folder" if source.folder is not None else "hub", source=source)
    if hub.has_model(text):
        return ModelSpec(text, kind, "folder", source=hub.parse_source(text))
    if text in registry(kind):
        return ModelSpec(text, kind, "registry", name=text)
    sensors = set(registry("sensor").names())
    if sensor is not None:
        sensors.add(sensor.name if isinstance(sensor, Sensor) else sensor)
    if kind == "student":
        sized = _split_sized(text)
        if sized is not None and sized[0] in sensors:
            return ModelSpec(text, kind, "sensor-size", name=f"mae-{sized[1]}", sensor=sized[0])
        if text in sensors:
            return ModelSpec(text, kind, "sensor", name="mae-tiny", sensor=text)
    if os.path.exists(os.path.expanduser(text)):
        raise _no_model(text, kind)
    if hub.is_repo_id(text):
        return ModelSpec(text, kind, "hub", source=hub.parse_source(text))
    raise UnknownComponentError(_unknown_message(text, kind, sensors))


def _no_model(text: str, kind: str) -> WeightsError:
    return WeightsError(
        f"{text} holds no {kind} (no config.json, no student/config.json); pass a run folder of "
        "`hyperkd pretrain`/`distill` or a saved model folder"
    )


def _unknown_message(text: str, kind: str, sensors: set[str]) -> str:
    from hyperkd.core.registry import registry
    from hyperkd.models.mae import SIZES

    sized = _split_sized(text) if kind == "student" else None
    if sized is not None:
        return (
            f"unknown {kind} {text!r}: no installed plugin provides sensor {sized[0]!r} "
            f"(sensors: {', '.join(sorted(sensors))}; `hyperkd plugins list` shows the plugins)"
        )
    forms = f"a registered {kind} ({', '.join(registry(kind).names()) or 'none installed'})"
    if kind == "student":
        forms = (
            f"a sensor name ({', '.join(sorted(sensors))}), '<sensor>-mae-<size>' with size in "
            f"{sorted(SIZES)}, {forms}"
        )
    return (
        f"unknown {kind} {text!r}: use {forms}, a saved model or run folder, or a Hugging Face repo id "
        f"(org/name[@revision]); {hub.LOCAL_PREFIX}PATH or {hub.HF_PREFIX}ORG/NAME say which"
    )


def create_model(
    spec: str | os.PathLike[str] | Sensor | ModelSpec,
    *,
    kind: str = "student",
    sensor: Sensor | str | Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> Any:
    """Build or load the model ``spec`` names (``hyperkd.create_model``).

    Architectures are built untrained: ``kwargs`` override their fields (``img_size=224``,
    ``embedding="plain"``) and ``sensor`` (a :class:`Sensor`, e.g. a chip store's with its
    statistics, a name, or a band-table dict as config.json's ``sensor``) is the band table a
    student is built for; it must be the sensor the spec names, if it names one. A saved
    config.json's timm-style fields rebuild its architecture untrained:
    ``create_model(cfg["architecture"], sensor=cfg["sensor"], **cfg["model_args"])``.
    Trained models are loaded with
    :func:`hyperkd.hub.from_pretrained` in eval mode; ``kwargs`` may only be its loading options
    (``revision``, ``token``, ``map_location``...), since the saved config fixes the architecture.
    """
    from hyperkd.core.registry import create

    if isinstance(sensor, Mapping):
        sensor = Sensor.from_dict(sensor)
    resolved = resolve_spec(spec, kind=kind, sensor=sensor)
    if resolved.trained:
        extra = sorted(set(kwargs) - LOAD_OPTIONS)
        if extra or sensor is not None:
            fields = ", ".join([*extra, *(["sensor"] if sensor is not None else [])])
            raise HyperKDError(
                f"{resolved.spec!r} is a trained model; its config.json fixes the architecture, so "
                f"{fields} cannot be set (they apply to architecture names such as enmap-mae-small)"
            )
        assert resolved.source is not None
        return hub.from_pretrained(resolved.source, **kwargs)
    assert resolved.name is not None
    given = sensor.name if isinstance(sensor, Sensor) else sensor
    if resolved.sensor is not None and given is not None and given != resolved.sensor:
        raise HyperKDError(
            f"{kind} {resolved.spec!r} is for sensor {resolved.sensor!r}, but sensor={given!r} was given"
        )
    if isinstance(spec, Sensor) and sensor is None:
        sensor = spec
    if sensor is not None or resolved.sensor is not None:
        kwargs["sensor"] = sensor if sensor is not None else resolved.sensor
    return create(kind, resolved.name, **kwargs)


__all__ = ["ModelSpec", "create_model", "resolve_spec"]
