"""``hyperkd distill``: HyperKD distillation from the command line (a thin layer over
:func:`hyperkd.distill.distill`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hyperkd.cli.app import app
from hyperkd.cli.train import SetOpt, _devices, _report


@app.command("distill")
def distill_cmd(
    teacher: Annotated[str | None, typer.Option("--teacher", help="Registered teacher (e.g. prithvi).")] = None,
    student: Annotated[str | None, typer.Option("--student", help="Sensor name, <sensor>-mae-<size>, or a saved student.")] = None,
    data: Annotated[str | None, typer.Option("--data", help="Chip-store folder, or 'synthetic'.")] = None,
    teacher_weights: Annotated[str | None, typer.Option(
        "--teacher-weights", help="Teacher checkpoint: a .pt/.safetensors file, a folder, a Hub repo org/name (optionally "
        "org/name/file.pt), or 'none' for random init.")] = None,
    recipe: Annotated[str, typer.Option("--recipe", help="Recipe name or .yaml file.")] = "hyperkd",
    out: Annotated[Path, typer.Option("--out", help="Run folder.")] = Path("runs/distill"),
    overrides: SetOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")] = False,
    devices: Annotated[str | None, typer.Option("--devices", help="Lightning devices (e.g. 1, 4, auto).")] = None,
    accelerator: Annotated[str | None, typer.Option("--accelerator", help="cpu, gpu, mps, auto.")] = None,
    strategy: Annotated[str | None, typer.Option("--strategy", help="auto, ddp, fsdp, ...")] = None,
    precision: Annotated[str | None, typer.Option("--precision", help="32-true, bf16-mixed, 16-mixed.")] = None,
    num_nodes: Annotated[int | None, typer.Option("--num-nodes")] = None,
) -> None:
    """Distil a frozen multispectral teacher into a hyperspectral MAE student (HyperKD)."""
    from hyperkd.distill import distill

    result = distill(
        recipe, out, teacher=teacher, teacher_weights=teacher_weights, student=student, data=data,
        overrides=overrides or [], resume=resume, trainer__devices=_devices(devices),
        trainer__accelerator=accelerator, trainer__strategy=strategy, trainer__precision=precision,
        trainer__num_nodes=num_nodes,
    )
    _report(result)
