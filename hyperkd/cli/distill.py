"""``hyperkd distill``: HyperKD distillation from the command line (a thin layer over
:func:`hyperkd.training.distill.distill`)."""

from pathlib import Path
from typing import Annotated

import typer

from hyperkd.cli.app import app
from hyperkd.cli.train import (
    AcceleratorOpt,
    DataOpt,
    DevicesOpt,
    NumNodesOpt,
    OutOpt,
    PrecisionOpt,
    RecipeOpt,
    ResumeOpt,
    SetOpt,
    StrategyOpt,
    StudentOpt,
    _report,
    trainer_fields,
)


@app.command("distill")
def distill_cmd(
    teacher: Annotated[
        str | None, typer.Option("--teacher", help="Registered teacher (e.g. prithvi).")
    ] = None,
    student: StudentOpt = None,
    data: DataOpt = None,
    teacher_weights: Annotated[
        str | None,
        typer.Option(
            "--teacher-weights",
            help="Teacher checkpoint: a .pt/.safetensors file, a folder, a Hub repo org/name (optionally "
            "org/name/file.pt), or 'none' for random init.",
        ),
    ] = None,
    recipe: RecipeOpt = "hyperkd",
    out: OutOpt = Path("runs/distill"),
    overrides: SetOpt = None,
    resume: ResumeOpt = False,
    devices: DevicesOpt = None,
    accelerator: AcceleratorOpt = None,
    strategy: StrategyOpt = None,
    precision: PrecisionOpt = None,
    num_nodes: NumNodesOpt = None,
) -> None:
    """Distil a frozen multispectral teacher into a hyperspectral MAE student (HyperKD)."""
    from hyperkd.training.distill import distill

    result = distill(
        recipe,
        out,
        teacher=teacher,
        teacher_weights=teacher_weights,
        student=student,
        data=data,
        overrides=overrides or [],
        resume=resume,
        **trainer_fields(devices, accelerator, strategy, precision, num_nodes),
    )
    _report(result)
