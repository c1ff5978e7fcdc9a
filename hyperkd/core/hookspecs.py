"""The hooks a hyperkd plugin can implement — all of them, in one place.

A plugin is a module named by an entry point in the ``hyperkd`` group::

    # pyproject.toml of a third-party package
    [project.entry-points.hyperkd]
    prisma = "hyperkd_prisma"

and implements any of these hooks with :data:`hyperkd.core.plugins.hookimpl`. The built-in
Prithvi and EnMAP plugins use exactly this mechanism.
"""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("hyperkd")


@hookspec
def hyperkd_register() -> None:
    """Register components (sensors, teachers, students, ...).

    Called once per plugin, with registrations attributed to the plugin. Use the
    decorators of :mod:`hyperkd.core.registry` (or import the modules that use them) here.
    """


@hookspec
def hyperkd_recipe_dirs() -> list[str]:  # type: ignore[empty-body]
    """Folders holding recipe YAML files this plugin ships (``hyperkd recipes list``)."""


@hookspec
def hyperkd_cli(app: Any) -> None:
    """Add commands to the Typer ``app`` of the ``hyperkd`` console script."""
