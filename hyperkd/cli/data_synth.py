"""``hyperkd data synth``: synthetic scenes for any registered sensor."""

from __future__ import annotations
