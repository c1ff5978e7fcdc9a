"""Old flat module paths, kept importable for third-party plugins written against hyperkd 0.1.

hyperkd 0.2 moved its modules into rooms by pipeline stage (``hyperkd.core``, ``hyperkd.data``,
``hyperkd.components``, ...; see docs/concepts.md). Plugins and notebooks that still say
``from hyperkd.registry import register`` keep working: a meta-path finder maps each old name to
its new module (the very same module object, so registries are shared) and warns once with a
``DeprecationWarning`` naming the new path. Nothing here is imported eagerly.

Three old modules share their name with a notebook function on ``hyperkd`` itself
(``hyperkd.distill``, ``hyperkd.finetune``; ``hyperkd.train`` held ``pretrain``):
``from hyperkd.distill import distill`` still works, and ``hyperkd.distill`` stays the function
(``hyperkd``'s module type refuses to let the import system bind the alias module over it).
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import warnings
from types import ModuleType
from typing import Any

# The plugin-facing core modules are light (no torch) and imported by ``hyperkd`` itself; they are
# bound under their old names eagerly, without a warning: they are the stable plugin API of 0.1.
# (Eager binding also keeps ``hyperkd.registry`` the *function*: a lazily imported submodule would
# be set as an attribute of ``hyperkd`` and shadow it.)
STABLE: dict[str, str] = {
    "hyperkd.registry": "hyperkd.core.registry",
    "hyperkd.plugins": "hyperkd.core.plugins",
    "hyperkd.hookspecs": "hyperkd.core.hookspecs",
    "hyperkd.errors": "hyperkd.core.errors",
    "hyperkd.io": "hyperkd.core.io",
    "hyperkd.sensors": "hyperkd.core.sensors",
}

# Heavier modules: aliased on first import, with a DeprecationWarning naming the new path.
OLD_TO_NEW: dict[str, str] = {
    "hyperkd.interfaces": "hyperkd.core.interfaces",
    "hyperkd.aligners": "hyperkd.components.aligners",
    "hyperkd.maskers": "hyperkd.components.maskers",
    "hyperkd.losses": "hyperkd.components.losses",
    "hyperkd.metrics": "hyperkd.components.metrics",
    "hyperkd.tasks": "hyperkd.evaluation.tasks",
    "hyperkd.compare": "hyperkd.evaluation.compare",
    "hyperkd.checkpoint": "hyperkd.training.checkpoint",
    "hyperkd.figures": "hyperkd.viz.figures",
    "hyperkd.task_figures": "hyperkd.viz.task_figures",
    "hyperkd.data.synth": "hyperkd.synth",
    "hyperkd.data.spectral_library": "hyperkd.synth.spectral_library",
    "hyperkd.data.separability": "hyperkd.synth.separability",
    "hyperkd.distill": "hyperkd.training.distill",
    "hyperkd.finetune": "hyperkd.evaluation.finetune",
    "hyperkd.train": "hyperkd.training.runner",
    "hyperkd.engine": "hyperkd.training.pretrain",
    "hyperkd.teacher_pretrain": "hyperkd.training.teacher",
    "hyperkd.quickstart": "hyperkd.evaluation.quickstart",
    "hyperkd.models.pos_embed": "hyperkd.models.layers",
}


class _AliasLoader:
    # duck-typed (importlib.abc costs ~15 ms of start-up, which every CLI call pays)
    def __init__(self, new: str) -> None:
        self.new = new

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(
            f"{spec.name} moved to {self.new}; import it from there (the old path will be removed)",
            DeprecationWarning,
            stacklevel=2,
        )
        return importlib.import_module(self.new)

    def exec_module(self, module: ModuleType) -> None:
        """The target module is already executed; the alias only re-binds its name."""


class _AliasFinder:
    def find_spec(
        self, fullname: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        new = OLD_TO_NEW.get(fullname)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(new))  # type: ignore[arg-type]


def install() -> None:
    """Bind the stable old names and put the alias finder on ``sys.meta_path`` (idempotent)."""
    for old, new in STABLE.items():
        sys.modules.setdefault(old, importlib.import_module(new))
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.append(_AliasFinder())
