"""``hyperkd predict``: a thin wrapper of :func:`hyperkd.evaluation.predict.predict`."""

from pathlib import Path
from typing import Annotated

import typer

from hyperkd.cli.app import app, console, print_json


@app.command("predict")
def predict_cmd(
    model: Annotated[
        str,
        typer.Argument(help="Fine-tuned model: a `hyperkd finetune` run folder, its model/, or a Hub repo."),
    ],
    scenes: Annotated[
        list[Path], typer.Argument(help="Scenes (L2A products, GeoTIFF/ENVI files) or folders of them.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for <scene>.tif (COG) and <scene>.png.")],
    reader: Annotated[
        str | None, typer.Option("--reader", help="Product reader (default: the one that accepts the scene).")
    ] = None,
    probabilities: Annotated[
        bool,
        typer.Option("--probabilities", help="Also write <scene>_probabilities.tif, one band per class."),
    ] = False,
    overlap: Annotated[
        int | None, typer.Option("--overlap", help="Pixels shared by neighbouring windows (default: chip/4).")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Windows per forward pass.")] = 16,
    block: Annotated[
        int,
        typer.Option("--block", help="Output block side in px (bounds memory; results do not depend on it)."),
    ] = 256,
    device: Annotated[
        str | None, typer.Option("--device", help="cpu, cuda, ... (default: cuda if present).")
    ] = None,
    quicklook: Annotated[bool, typer.Option("--quicklook/--no-quicklook", help="Write <scene>.png.")] = True,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing maps in --out.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was written as JSON.")] = False,
) -> None:
    """Map whole scenes with a fine-tuned model: sliding windows, blended, written as COGs on the scene's grid."""
    from hyperkd.evaluation.predict import predict

    maps = predict(
        model,
        scenes,
        out,
        reader=reader,
        overlap=overlap,
        batch_size=batch_size,
        block=block,
        probabilities=probabilities,
        quicklook=quicklook,
        device=device,
        overwrite=overwrite,
    )
    if as_json:
        print_json({"maps": [m.to_dict() for m in maps]})
        return
    for m in maps:
        extra = f", probabilities {m.probabilities}" if m.probabilities else ""
        console.print(
            f"[green]mapped[/] {m.source} -> {m.path} ({m.width}x{m.height} px, {m.windows} windows, "
            f"{m.nodata_pixels} nodata px{extra})",
            highlight=False,
        )
