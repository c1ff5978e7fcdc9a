"""One switch for every progress bar (hyperkd.core.progress)."""

from __future__ import annotations

import pytest

from hyperkd.core.progress import DISABLE_ENV, progress_enabled, rich_progress


@pytest.mark.parametrize(
    ("value", "on"), [(None, True), ("", True), ("0", True), ("1", False), ("yes", False)]
)
def test_environment_switch(monkeypatch, value, on):
    if value is None:
        monkeypatch.delenv(DISABLE_ENV, raising=False)
    else:
        monkeypatch.setenv(DISABLE_ENV, value)
    assert progress_enabled() is on
    assert progress_enabled(True) is on
    assert progress_enabled(False) is False


def test_every_long_loop_asks_the_same_switch(monkeypatch):
    """prepare, synth and training read the switch through hyperkd.core.progress (one copy)."""
    import hyperkd.data.prepare as prepare
    import hyperkd.training.runner as runner

    calls = []
    monkeypatch.setattr("hyperkd.core.progress.os.environ", {DISABLE_ENV: "1"})
    for mod in (prepare, runner):
        assert mod.progress_enabled is progress_enabled, mod.__name__
        calls.append(mod.progress_enabled())
    assert calls == [False, False]


def test_rich_progress_layout():
    bar = rich_progress("[bold]{task.description}", "chips")
    names = [type(c).__name__ for c in bar.columns]
    assert names == ["TextColumn", "BarColumn", "MofNCompleteColumn", "TextColumn", "TimeRemainingColumn"]
    assert bar.console.stderr
