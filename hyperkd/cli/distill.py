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
    TestListOpt,
    TrainListOpt,
    ValDataOpt,
    ValFractionOpt,
    ValListOpt,
    _report,
    split_fields,
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
    recipe: RecipeOpt = None,
    out: OutOpt = Path("runs/distill"),
    overrides: SetOpt = None,
    resume: ResumeOpt = False,
    devices: DevicesOpt = None,
    accelerator: AcceleratorOpt = None,
    strategy: StrategyOpt = None,
    precision: PrecisionOpt = None,
    num_nodes: NumNodesOpt = None,
    val_data: ValDataOpt = None,
    val_fraction: ValFractionOpt = None,
    train_list: TrainListOpt = None,
    val_list: ValListOpt = None,
    test_list: TestListOpt = None,
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
        **split_fields(val_data, val_fraction, train_list, val_list, test_list),
    )
    _report(result)
