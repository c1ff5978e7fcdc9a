"""Test-wide settings: never touch the network, plot without a screen, small thread pools."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HYPERKD_DISABLE_PROGRESS", "1")

import pytest


@pytest.fixture
def plugin_env():
    """A MonkeyPatch for tests that install plugins or change plugin settings.

    On teardown it undoes the patches *first*, then rediscovers plugins, so later tests
    see the normal set of plugins again.
    """
    from hyperkd.core.plugins import load_plugins

    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()
    load_plugins(force=True)
