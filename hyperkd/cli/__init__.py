"""The ``hyperkd`` console script (Typer).

Every command is a thin wrapper over a public Python function. User errors
(:class:`~hyperkd.core.errors.HyperKDError`) print one line and exit 1; ``--debug`` (or
``HYPERKD_DEBUG=1``) shows the full traceback instead.
"""

from __future__ import annotations

from hyperkd.cli.app import app, main

__all__ = ["app", "main"]
