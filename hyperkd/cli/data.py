"""``hyperkd data ...``: prepare chip stores from products, synthesise scenes, inspect and export stores.

The sub-commands live in their own modules (``data_prepare``, ``data_synth``) and attach
themselves to :data:`data_app`.
"""

from pathlib import Path
from typing import Annotated

import typer

data_app = typer.Typer(help="Chip stores: prepare from products, synthesise, inspect.", no_args_is_help=True)

# Sub-command modules register onto data_app when imported.
from hyperkd.cli import data_prepare, data_synth  # noqa: E402,F401


@data_app.command("export")
def export_cmd(
    store: Annotated[Path, typer.Argument(help="Chip store folder.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Export folder to create.", show_default=False)],
    fmt: Annotated[
        str,
        typer.Option("--format", help="Streaming format: webdataset (tar shards; needs hyperkd[stream])."),
    ] = "webdataset",
    shards: Annotated[
        int | None,
        typer.Option(
            help="Number of shards (default ~256 MB each); a multiple of GPUs x workers reads each chip once."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the chip-to-shard deal.")] = 0,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out.")] = False,
) -> None:
    """Export a chip store for streaming to many GPUs/nodes (WebDataset tar shards + an index)."""
    from hyperkd.core.errors import DataError
    from hyperkd.data.streaming import export_webdataset

    if fmt != "webdataset":
        raise DataError(f"--format {fmt!r} is not supported; use --format webdataset")
    index = export_webdataset(store, out, shards=shards, seed=seed, overwrite=overwrite)
    typer.echo(f"{index['num_chips']} chips in {len(index['shards'])} WebDataset shard(s) at {out}")
