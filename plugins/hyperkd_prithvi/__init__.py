"""Built-in plugin: NASA/IBM Prithvi-EO teachers and the HLS sensor they were trained on.

Registered through the ``hyperkd`` entry-point group like any third-party plugin:
``hyperkd_register`` registers the ``hls`` sensor and the ``prithvi-eo-*`` teachers;
``hyperkd_cli`` adds ``hyperkd teachers ...`` and ``hyperkd convert prithvi ...``.
"""

from __future__ import annotations

from typing import Any

from hyperkd.core.plugins import hookimpl


@hookimpl
def hyperkd_register() -> None:
    """Register the ``hls`` sensor and the Prithvi-EO teachers."""
    from hyperkd_prithvi import sensor  # noqa: F401 - registers on import
    from hyperkd_prithvi.teacher import register_teachers

    register_teachers()


@hookimpl
def hyperkd_cli(app: Any) -> None:
    """Add the ``teachers`` and ``convert`` command groups."""
    from hyperkd_prithvi.cli import install

    install(app)
