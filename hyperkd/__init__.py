"""hyperkd: hyperspectral foundation models distilled from multispectral ones.

The public API a notebook user needs is importable from here; the CLI (``hyperkd ...``)
is a thin layer over the same functions.
"""

from __future__ import annotations

from hyperkd.errors import HyperKDError
from hyperkd.registry import KINDS, create, list_components, register, registry
from hyperkd.sensors import Band, Sensor, get_sensor

__version__ = "0.1.0"

__all__ = [
    "KINDS",
    "Band",
    "HyperKDError",
    "Sensor",
    "__version__",
    "create",
    "get_sensor",
    "list_components",
    "register",
    "registry",
]
