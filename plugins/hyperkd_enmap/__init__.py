"""Built-in plugin: the EnMAP hyperspectral sensor (and, where present, its L2A reader).

Registered through the ``hyperkd`` entry-point group like any third-party plugin.
"""

from __future__ import annotations

from hyperkd.plugins import hookimpl


@hookimpl
def hyperkd_register() -> None:
    """Register the ``enmap`` sensors."""
    from hyperkd_enmap import sensor  # noqa: F401 - registers on import
