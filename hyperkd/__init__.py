"""hyperkd: hyperspectral foundation models distilled from multispectral ones.

The public API a notebook user needs is importable from here; the CLI (``hyperkd ...``) is a thin
layer over the same functions. Importing ``hyperkd`` is cheap (no torch): the workflow functions
(``pretrain``, ``distill``, ``finetune``, ...) import their machinery on first use.

Where things live (docs/concepts.md has the map): ``hyperkd.core`` (registry, plugins, sensors,
errors, io, contracts), ``hyperkd.data`` (readers, chip store, loaders, labels),
``hyperkd.synth`` (synthetic scenes), ``hyperkd.models`` (students, heads, the model factory),
``hyperkd.components`` (aligners, maskers, losses), ``hyperkd.training`` (LightningModules,
callbacks, runs), ``hyperkd.evaluation`` (downstream tasks, fine-tuning, comparisons),
``hyperkd.hub`` (the sharing format) and ``hyperkd.viz`` (figures).
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from hyperkd import _aliases
from hyperkd.core.errors import HyperKDError
from hyperkd.core.plugins import hookimpl
from hyperkd.core.registry import KINDS, ComponentSpec, create, list_components, register, registry
from hyperkd.core.sensors import Band, Sensor, get_sensor

__version__ = "0.1.0"

_aliases.install()

# Notebook API: name -> "module:attribute", imported on first access (they pull in torch).
_LAZY: dict[str, str] = {
    "from_pretrained": "hyperkd.hub:from_pretrained",
    "create_model": "hyperkd.models.factory:create_model",
    "pretrain": "hyperkd.training.runner:pretrain",
    "distill": "hyperkd.training.distill:distill",
    "finetune": "hyperkd.evaluation.finetune:finetune",
    "evaluate": "hyperkd.evaluation.finetune:evaluate",
    "predict": "hyperkd.evaluation.predict:predict",
    "prepare": "hyperkd.data.prepare:prepare",
    "synthesize": "hyperkd.synth:synthesize",
}

__all__ = [
    "KINDS",
    "Band",
    "ComponentSpec",
    "HyperKDError",
    "Sensor",
    "__version__",
    "create",
    "get_sensor",
    "hookimpl",
    "list_components",
    "register",
    "registry",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    """Lazy exports: the workflow functions import their module (and torch) on first use."""
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'hyperkd' has no attribute {name!r}")
    module, attr = target.split(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


class _Package(types.ModuleType):
    """``hyperkd``'s module type: a workflow function is never replaced by a module.

    After importing ``hyperkd.distill`` (the deprecated alias of ``hyperkd.training.distill``)
    the import system binds that module as ``hyperkd.distill``; this keeps the function.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
