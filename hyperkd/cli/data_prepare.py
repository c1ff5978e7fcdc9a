"""``hyperkd data prepare``: tile products into a chip store.

A thin wrapper over :func:`hyperkd.data.prepare.prepare`; everything it does, a notebook
can do with that function.
"""

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from hyperkd.cli.data import data_app


@data_app.command("prepare")
def prepare_cmd(
    inputs: Annotated[
        list[Path],
        typer.Argument(
            help="Products (EnMAP L2A folders or zips, GeoTIFFs, ENVI .hdr cubes) or folders holding them.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Chip store folder to create.", show_default=False)
    ],
    sensor: Annotated[
        str | None,
        typer.Option(
            help="Sensor of the inputs (default: from the files: L2A products, or GeoTIFF/ENVI wavelengths "
            "matched to a registered sensor); GeoTIFF/ENVI bands must then match its bands.",
            show_default=False,
        ),
    ] = None,
    size: Annotated[
        int, typer.Option(help="Chip size in pixels (224 as in the paper; 64 or 96 for CPU work).")
    ] = 224,
    stride: Annotated[
        int | None, typer.Option(help="Step between chips in pixels (default: --size, i.e. no overlap).")
    ] = None,
    max_nodata: Annotated[
        float, typer.Option(help="Drop chips with more than this share of no-data pixels.")
    ] = 0.1,
    max_cloud: Annotated[
        float, typer.Option(help="Drop chips with more than this share of cloudy data pixels.")
    ] = 0.1,
    selection: Annotated[
        str,
        typer.Option(
            help="Bands: default (sensor's), all, a selection name, or names/ranges like B1-B126,B142-B160."
        ),
    ] = "default",
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue an interrupted run; finished products are skipped.")
    ] = False,
    shard_size: Annotated[
        int | None, typer.Option(help="Chips per shard file (default: about 256 MB per shard).")
    ] = None,
    reader: Annotated[
        str | None,
        typer.Option(
            help="Product reader (raster, enmap-l2a, ...; default: chosen from the inputs).",
            show_default=False,
        ),
    ] = None,
    reflectance_scale_factor: Annotated[
        float | None,
        typer.Option(
            help="GeoTIFF/ENVI: stored value / this = reflectance (default: from the metadata, else detected).",
            show_default=False,
        ),
    ] = None,
    allow_no_crs: Annotated[
        bool,
        typer.Option(
            "--allow-no-crs",
            help="Prepare products without a CRS on their pixel grid (refused by default: their chips "
            "cannot be matched to label rasters).",
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the store's per-product summary as JSON.")
    ] = False,
) -> None:
    """Tile products into a chip store: windows, no-data/cloud filtering, per-band statistics.

    Every input is checked before anything is written. Interrupted, the same command with --resume continues.
    """
    from hyperkd.data.prepare import dropped_summary, prepare, short_product_name, store_products

    err = Console(stderr=True)
    try:
        store = prepare(
            inputs,
            out,
            sensor=sensor,
            size=size,
            stride=stride,
            max_nodata=max_nodata,
            max_cloud=max_cloud,
            selection=selection,
            resume=resume,
            shard_size=shard_size,
            reader=reader,
            reader_options={"reflectance_scale_factor": reflectance_scale_factor}
            if reflectance_scale_factor is not None
            else None,
            progress=not as_json,
            allow_no_crs=allow_no_crs,
        )
    except KeyboardInterrupt:
        err.print(f"interrupted: finished products are safe in {out}; rerun the same command with --resume")
        raise typer.Exit(130) from None
    products = store_products(store)
    dropped = (store.manifest.get("attrs") or {}).get("dropped_bands") or {}
    if as_json:
        doc = {"store": str(store.root), "chips": len(store), "dropped_bands": dropped, "products": products}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
        return
    table = Table(title="products")
    for col in ("product", "bands", "chips", "dropped: no data", "dropped: cloud", "nodata"):
        table.add_column(col)
    for name, p in products.items():
        table.add_row(
            short_product_name(name),
            str(p.get("num_bands")),
            str(p.get("chips")),
            str(p.get("dropped_nodata")),
            str(p.get("dropped_cloud")),
            f"{p.get('nodata')} ({p.get('nodata_source')})",
        )
    console = Console()
    console.print(table)
    scales = sorted({str(p["reflectance_scale"]) for p in products.values() if p.get("reflectance_scale")})
    if scales:
        console.print(f"reflectance scale: {', '.join(scales)}", highlight=False)
    if dropped:
        console.print(dropped_summary(dropped), highlight=False)
    console.print(store.summary(), highlight=False)
