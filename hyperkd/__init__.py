"""hyperkd: hyperspectral foundation models distilled from multispectral ones.

The public API a notebook user needs is importable from here; the CLI (``hyperkd ...``)
is a thin layer over the same functions.
"""

from __future__ import annotations

from typing import Any

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
    "from_pretrained",
    "get_sensor",
    "list_components",
    "register",
    "registry",
]


def __getattr__(name: str) -> Any:
    """Lazy exports: ``hyperkd.from_pretrained`` imports the Hub code (and torch) on first use."""
    if name == "from_pretrained":
        from hyperkd.hub import from_pretrained

        return from_pretrained
    raise AttributeError(f"module 'hyperkd' has no attribute {name!r}")
