"""Built-in plugin: the EnMAP hyperspectral sensor (and, where present, its L2A reader).

Registered through the ``hyperkd`` entry-point group like any third-party plugin. The
components are declared here and imported on first use (the L2A reader pulls in rasterio).
"""

from __future__ import annotations

from hyperkd.core.plugins import hookimpl
from hyperkd.core.registry import ComponentSpec


@hookimpl
def hyperkd_components() -> list[ComponentSpec]:
    """Declare the ``enmap`` sensors and the ``enmap-l2a`` product reader / dataset."""
    return [
        ComponentSpec("sensor", "enmap", "hyperkd_enmap.sensor:enmap"),
        ComponentSpec("sensor", "enmap-218", "hyperkd_enmap.sensor:enmap_218"),
        ComponentSpec("dataset", "enmap-l2a", "hyperkd_enmap.l2a:enmap_l2a"),
        ComponentSpec(
            "reader",
            "enmap-l2a",
            "hyperkd_enmap.l2a:FORMAT",
            description="EnMAP L2A product folders or zips (SPECTRAL_IMAGE + METADATA.XML)",
        ),
    ]
