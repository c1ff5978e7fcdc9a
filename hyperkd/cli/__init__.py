"""The ``hyperkd`` console script (Typer).

Every command is a thin wrapper over a public Python function. User errors
(:class:`~hyperkd.core.errors.HyperKDError`) print one line and exit 1; ``--debug`` (or
``HYPERKD_DEBUG=1``) shows the full traceback instead.
"""

from __future__ import annotations

from hyperkd.cli.app import main, run

# Not re-exported as ``app``: that name would shadow the module ``hyperkd.cli.app``
# (``import hyperkd.cli.app`` would then give the Typer object).
__all__ = ["main", "run"]
