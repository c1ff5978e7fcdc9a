"""``hyperkd pretrain`` and ``hyperkd recipes ...``."""

import json
from pathlib import Path
from typing import Annotated

import typer

from hyperkd.cli.app import app, console, print_json

recipes_app = typer.Typer(help="Built-in and plugin recipes.", no_args_is_help=True)
app.add_typer(recipes_app, name="recipes")

SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a recipe field: key.path=value (repeatable)."),
]


@recipes_app.command("list")
def recipes_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List recipes (name, file, description)."""
    from hyperkd import recipes

    rows = []
    for name, path in recipes.available().items():
        r = recipes.load_recipe(path)
        rows.append(
            {
                "name": name,
                "path": str(path),
                "mode": r.get("mode", ""),
                "description": r.get("description", ""),
            }
        )
    if as_json:
        print_json(rows)
        return
    for r in rows:
        console.print(f"[bold]{r['name']}[/] ({r['mode']}): {r['description']}", highlight=False)


@recipes_app.command("show")
def recipes_show(
    name: Annotated[str, typer.Argument(help="Recipe name or .yaml path.")],
    overrides: SetOpt = None,
) -> None:
    """Print a recipe fully resolved (inheritance and --set applied) as YAML."""
    from hyperkd import recipes

    typer.echo(recipes.dump(recipes.resolve(name, overrides or [])), nl=False)


StudentOpt = Annotated[
    str | None,
    typer.Option(
        "--student",
        help="Sensor name, <sensor>-mae-<size>, a saved student or run folder, or a Hub repo id "
        "(prefix local-dir: or hf-hub: to say which).",
    ),
]
DataOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--data",
        help="Chip-store folder, or 'synthetic'. Repeat it to train on several stores in one run (each batch "
        "from one store; stores of different band tables need an any-mae-<size> student).",
    ),
]
RecipeOpt = Annotated[
    str | None,
    typer.Option(
        "--recipe",
        help="Recipe name or .yaml file (default: mae for pretrain, hyperkd for distill; with --resume: "
        "the run's recipe.yaml, which holds the --data and --set values it was started with).",
    ),
]
OutOpt = Annotated[Path, typer.Option("--out", help="Run folder.")]
ResumeOpt = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Continue the run in --out from its newest checkpoint, with its saved recipe; only trainer "
        "limits (max_epochs, max_steps, devices...) may change.",
    ),
]
DevicesOpt = Annotated[str | None, typer.Option("--devices", help="Lightning devices (e.g. 1, 4, auto).")]
AcceleratorOpt = Annotated[str | None, typer.Option("--accelerator", help="cpu, gpu, mps, auto.")]
StrategyOpt = Annotated[str | None, typer.Option("--strategy", help="auto, ddp, fsdp, ...")]
PrecisionOpt = Annotated[str | None, typer.Option("--precision", help="32-true, bf16-mixed, 16-mixed.")]
NumNodesOpt = Annotated[int | None, typer.Option("--num-nodes")]
ValDataOpt = Annotated[
    str | None,
    typer.Option(
        "--val-data", help="Validate on every chip of this chip store (bands checked by wavelength)."
    ),
]
ValFractionOpt = Annotated[
    float | None,
    typer.Option(
        "--val-fraction", help="Share of --data's chips held out for validation (recipe default 0.125)."
    ),
]
_LIST_HELP = (
    "a text file (one chip index or source file per line) or a CSV whose first column holds them; "
    "no random split is drawn for it"
)
TrainListOpt = Annotated[
    str | None, typer.Option("--train-list", help=f"Train on exactly these chips of --data: {_LIST_HELP}.")
]
ValListOpt = Annotated[
    str | None, typer.Option("--val-list", help=f"Validate on exactly these chips of --data: {_LIST_HELP}.")
]
TestListOpt = Annotated[
    str | None,
    typer.Option(
        "--test-list", help=f"Keep these chips of --data out of training and validation: {_LIST_HELP}."
    ),
]


def split_fields(
    val_data: str | None,
    val_fraction: float | None,
    train_list: str | None,
    val_list: str | None,
    test_list: str | None,
) -> dict[str, object]:
    """The split flags shared by pretrain and distill, as dotted recipe fields (``__`` for ``.``)."""
    return {
        "data__val_store": val_data,
        "data__val_fraction": val_fraction,
        "data__train_list": train_list,
        "data__val_list": val_list,
        "data__test_list": test_list,
    }


def trainer_fields(
    devices: str | None,
    accelerator: str | None,
    strategy: str | None,
    precision: str | None,
    num_nodes: int | None,
) -> dict[str, object]:
    """The Lightning flags shared by pretrain and distill, as dotted recipe fields (``__`` for ``.``)."""
    return {
        "trainer__devices": _devices(devices),
        "trainer__accelerator": accelerator,
        "trainer__strategy": strategy,
        "trainer__precision": precision,
        "trainer__num_nodes": num_nodes,
    }


@app.command("pretrain")
def pretrain_cmd(
    student: StudentOpt = None,
    data: DataOpt = None,
    recipe: RecipeOpt = None,
    out: OutOpt = Path("runs/pretrain"),
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
    """MAE-pretrain a student from scratch (the no-KD baseline)."""
    from hyperkd.training.runner import pretrain, store_field

    result = pretrain(
        recipe,
        out,
        overrides=overrides or [],
        resume=resume,
        student__name=student,
        data__store=store_field(data),
        **trainer_fields(devices, accelerator, strategy, precision, num_nodes),
        **split_fields(val_data, val_fraction, train_list, val_list, test_list),
    )
    _report(result)


def _devices(value: str | None) -> int | str | None:
    if value is None:
        return None
    return int(value) if value.isdigit() else value


def _report(result) -> None:
    if result is None:
        return
    m = result.metrics
    keys = [k for k in ("val/loss", "val/mse", "val/psnr", "val/ssim", "val/sam_deg") if k in m]
    console.print(
        f"[green]done[/] {result.run_dir} (step {result.global_step}): "
        + ", ".join(f"{k.split('/')[1]}={m[k]:.4g}" for k in keys),
        highlight=False,
    )
    console.print(f"student: {result.student_dir}", highlight=False)
    info = result.run_dir / "distill.json"
    bands = json.loads(info.read_text()).get("aligner_bands") if info.is_file() else None
    if bands and bands.get("missing_bands"):
        console.print(
            f"aligner: teacher band(s) {', '.join(bands['missing_bands'])} covered by no student band, "
            f"aligner.missing={bands['missing']}",
            highlight=False,
        )


@app.command("quickstart")
def quickstart_cmd(
    out: Annotated[Path, typer.Option("--out", help="Report folder (replaced).")] = Path("demo"),
    seeds: Annotated[str, typer.Option("--seeds", help="Comma-separated seeds.")] = "0,1,2",
    teacher: Annotated[
        str,
        typer.Option(
            "--teacher",
            help="Registered teacher (default: the packaged prithvi-tiny-synth), e.g. prithvi; "
            "'tiny' trains one here in seconds.",
        ),
    ] = "prithvi-tiny-synth",
    teacher_weights: Annotated[
        str | None, typer.Option("--teacher-weights", help="Weights for --teacher (file, folder or repo).")
    ] = None,
    student_epochs: Annotated[int | None, typer.Option("--student-epochs")] = None,
    finetune_epochs: Annotated[int | None, typer.Option("--finetune-epochs")] = None,
    docs: Annotated[
        Path | None, typer.Option("--docs", help="Also regenerate this docs page (docs/quickstart.md).")
    ] = None,
    from_report: Annotated[
        Path | None,
        typer.Option(
            "--from-report",
            help="With --docs: regenerate the page from this finished quickstart folder, no rerun.",
        ),
    ] = None,
) -> None:
    """The whole story on synthetic data, nothing downloaded (what `make demo` runs)."""
    from dataclasses import replace

    from hyperkd.evaluation.quickstart import QuickstartConfig, docs_from_report, quickstart

    if from_report is not None:
        if docs is None:
            raise typer.BadParameter("--from-report needs --docs PAGE")
        console.print(f"wrote {docs_from_report(from_report, docs)}", highlight=False)
        return

    cfg = QuickstartConfig(
        seeds=tuple(int(s) for s in seeds.split(",") if s.strip()),
        teacher=teacher,
        teacher_weights=teacher_weights,
    )
    if student_epochs is not None:
        cfg = replace(cfg, student_epochs=student_epochs)
    if finetune_epochs is not None:
        cfg = replace(cfg, finetune_epochs=finetune_epochs)
    quickstart(out, cfg, docs=docs, log=lambda s: console.print(s, highlight=False, markup=False))


@app.command("compare")
def compare_cmd(
    files: Annotated[
        list[Path],
        typer.Argument(help="Result records (JSON: {row, seed, metrics}) or quickstart report.json files."),
    ],
    reference: Annotated[
        str, typer.Option("--reference", help="Row the others are compared with.")
    ] = "no-KD",
    metrics: Annotated[
        str | None, typer.Option("--metrics", help="Comma-separated metric names (default: all).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """One table over runs and seeds: mean ± std, and which differences exceed the seed spread."""
    import json as _json

    from hyperkd.evaluation.compare import compare, load_records

    records = []
    for rec in load_records(files):
        records.extend(rec["records"] if isinstance(rec, dict) and "records" in rec else [rec])
    table = compare(
        records, reference=reference, metrics=[m.strip() for m in metrics.split(",")] if metrics else None
    )
    if as_json:
        typer.echo(_json.dumps(table.to_dict(), indent=2))
    else:
        typer.echo(table.markdown())
