"""``hyperkd data ...``: prepare chip stores from products, synthesise scenes, inspect stores.

The sub-commands live in their own modules (``data_prepare``, ``data_synth``) and attach
themselves to :data:`data_app`.
"""

import typer

data_app = typer.Typer(help="Chip stores: prepare from products, synthesise, inspect.", no_args_is_help=True)

# Sub-command modules register onto data_app when imported.
from hyperkd.cli import data_prepare, data_synth  # noqa: E402,F401
