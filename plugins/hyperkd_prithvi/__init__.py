"""Built-in plugin: NASA/IBM Prithvi-EO teachers and the HLS sensor they were trained on.

Registered through the ``hyperkd`` entry-point group like any third-party plugin.
"""

from __future__ import annotations

from hyperkd.plugins import hookimpl


@hookimpl
def hyperkd_register() -> None:
    """Register the ``hls`` sensor (and, where present, the Prithvi teachers)."""
    from hyperkd_prithvi import sensor  # noqa: F401 - registers on import
