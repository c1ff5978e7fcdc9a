"""Built-in plugin: the EnMAP hyperspectral sensor (and, where present, its L2A reader).

Registered through the ``hyperkd`` entry-point group like any third-party plugin.
"""

from __future__ import annotations

from hyperkd.core.plugins import hookimpl


@hookimpl
def hyperkd_register() -> None:
    """Register the ``enmap`` sensors and the ``enmap-l2a`` product reader / dataset."""
    from hyperkd_enmap import l2a, sensor  # noqa: F401 - registers on import
