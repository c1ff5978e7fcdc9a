"""Progress bars: one switch for all of them, and one look.

Every long loop in hyperkd (training, ``data prepare``, ``data synth``) may draw a rich
progress bar on stderr. They all ask :func:`progress_enabled`, so a single environment
variable silences every one of them: ``HYPERKD_DISABLE_PROGRESS=1`` (CI logs, notebooks that
capture stderr, nested runs). An empty value or ``0`` leaves them on.
"""

from __future__ import annotations

import os
from typing import Any

#: Set to anything but ``""`` or ``"0"`` to turn every hyperkd progress bar off.
DISABLE_ENV = "HYPERKD_DISABLE_PROGRESS"


def progress_enabled(requested: bool = True) -> bool:
    """Whether to draw a progress bar: the caller asked for one and the environment allows it."""
    return bool(requested) and os.environ.get(DISABLE_ENV, "") in ("", "0")


def rich_progress(*columns: Any) -> Any:
    """A rich ``Progress`` on stderr: ``columns`` (texts/columns) before a bar, ``N/M`` and the ETA.

    Strings become ``TextColumn`` s (rich markup; ``{task.description}`` and ``{task.fields[...]}``
    work), so every hyperkd bar has the same layout. Imported lazily: rich is only loaded when a bar
    is actually drawn.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    head = [TextColumn(c) if isinstance(c, str) else c for c in columns[:1]]
    tail = [TextColumn(c) if isinstance(c, str) else c for c in columns[1:]]
    return Progress(
        *head,
        BarColumn(),
        MofNCompleteColumn(),
        *tail,
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )
