"""Example hyperkd plugin: the ASI PRISMA hyperspectral sensor.

It registers only a sensor. Because hyperkd builds students, aligners and synthetic data
from a sensor's band table, that is enough for ``hyperkd data synth --sensor prisma`` and
``--student prisma`` to work with no more code.

This module is what the ``hyperkd`` entry point names, so hyperkd imports it on every plugin
discovery (``hyperkd --help`` included). It stays light: it only *declares* the sensor; the
code that builds it (``hyperkd_prisma.sensor``, which needs numpy) is imported the first time
the sensor is used.
"""

from __future__ import annotations

from hyperkd import ComponentSpec, hookimpl


@hookimpl
def hyperkd_components() -> list[ComponentSpec]:
    """Declare the ``prisma`` sensor (built by ``hyperkd_prisma.sensor.prisma``)."""
    # no description given: listings read the docstring of prisma() (numpy only, cheap)
    return [ComponentSpec("sensor", "prisma", "hyperkd_prisma.sensor:prisma")]
