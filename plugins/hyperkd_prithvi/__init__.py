"""Built-in plugin: NASA/IBM Prithvi-EO teachers and the HLS sensor they were trained on.

Registered through the ``hyperkd`` entry-point group like any third-party plugin. This module
is imported on every plugin discovery (``hyperkd --help`` included), so it imports nothing
heavy: ``hyperkd_components`` declares the ``hls`` sensor and the ``prithvi-*`` teachers,
whose modules (torch, the model code) are imported when one is first built;
``hyperkd_cli`` adds ``hyperkd teachers ...`` and ``hyperkd convert prithvi ...``.
"""

from __future__ import annotations

from typing import Any

from hyperkd.core.plugins import hookimpl
from hyperkd.core.registry import ComponentSpec

TEACHERS: dict[str, tuple[str, ...]] = {
    "prithvi-eo-1.0-100m": ("prithvi",),
    "prithvi-eo-2.0-300m": (),
    "prithvi-eo-2.0-300m-tl": (),
    "prithvi-eo-2.0-600m": (),
    "prithvi-eo-2.0-600m-tl": (),
    "prithvi-eo-tiny": (),
    "prithvi-tiny-synth": (),
}
"""Teacher names and their aliases. ``hyperkd_prithvi.teacher`` registers one factory per
name of its ``VARIANTS`` on import (descriptions come from there); a test checks the two agree."""


@hookimpl
def hyperkd_components() -> list[ComponentSpec]:
    """Declare the ``hls`` sensor and the Prithvi-EO teachers (imported on first use)."""
    return [
        ComponentSpec("sensor", "hls", "hyperkd_prithvi.sensor:hls"),
        *(
            ComponentSpec(
                "teacher", name, "hyperkd_prithvi.teacher", aliases=aliases, metadata={"family": "prithvi-eo"}
            )
            for name, aliases in TEACHERS.items()
        ),
    ]


@hookimpl
def hyperkd_cli(app: Any) -> None:
    """Add the ``teachers`` and ``convert`` command groups."""
    from hyperkd_prithvi.cli import install

    install(app)
