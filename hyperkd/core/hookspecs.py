"""The hooks a hyperkd plugin can implement — all of them, in one place.

A plugin is a module named by an entry point in the ``hyperkd`` group::

    # pyproject.toml of a third-party package
    [project.entry-points.hyperkd]
    prisma = "hyperkd_prisma"

and implements any of these hooks with :data:`hyperkd.core.plugins.hookimpl`. The built-in
Prithvi and EnMAP plugins use exactly this mechanism.

The plugin module is imported whenever plugins are discovered (``hyperkd --help`` included),
so it should stay light: declare components with ``hyperkd_components`` and keep torch and
other heavy imports in the modules those declarations point to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from hyperkd.core.registry import ComponentSpec

hookspec = pluggy.HookspecMarker("hyperkd")


@hookspec
def hyperkd_components() -> Iterable[ComponentSpec | Mapping[str, Any]]:  # type: ignore[empty-body]
    """Declare components without importing their code (the preferred way).

    Return :class:`~hyperkd.core.registry.ComponentSpec` records (kind, name,
    ``"module:attr"`` target, optional description, aliases, metadata). Names are known at
    once; a target module is imported the first time its component is built, and its
    ``@register`` decorators, if any, fill the declared entries rather than clash with them.
    """


@hookspec
def hyperkd_register() -> None:
    """Register components eagerly (sensors, teachers, students, ...).

    Called once per plugin, with registrations attributed to the plugin. Use the
    decorators of :mod:`hyperkd.core.registry` (or import the modules that use them) here.
    Whatever this imports is imported on every discovery, ``hyperkd --help`` included; prefer
    :func:`hyperkd_components` for anything that needs torch.
    """


@hookspec
def hyperkd_recipe_dirs() -> list[str]:  # type: ignore[empty-body]
    """Folders holding recipe YAML files this plugin ships (``hyperkd recipes list``)."""


@hookspec
def hyperkd_cli(app: Any) -> None:
    """Add commands to the Typer ``app`` of the ``hyperkd`` console script."""
