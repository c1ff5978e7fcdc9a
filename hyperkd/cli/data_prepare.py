"""``hyperkd data prepare``: tile products into a chip store."""

from __future__ import annotations
