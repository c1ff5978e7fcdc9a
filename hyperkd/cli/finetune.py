"""``hyperkd finetune`` and ``hyperkd evaluate``: thin wrappers of :mod:`hyperkd.evaluation.finetune`."""

from pathlib import Path
from typing import Annotated, Any

import typer

from hyperkd.cli.app import app, console, print_json
from hyperkd.evaluation.compare import headline  # torch-free: keeps `hyperkd --help` light

LabelNodata = Annotated[
    float | None,
    typer.Option(
        "--label-nodata",
        help="Label value meaning 'no label' (ignored by the loss and metrics); default: the raster's nodata.",
    ),
]
LabelField = Annotated[
    str | None, typer.Option("--label-field", help="Attribute of vector labels holding the class or value.")
]
Legend = Annotated[
    Path | None, typer.Option("--legend", help="CSV of class names: code,name[,colour] per line.")
]


def _fmt(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in headline(metrics).items())


def _per_class(metrics: dict[str, Any]) -> None:
    """Per-class IoU / F1 / support lines (classification only)."""
    for name, c in (metrics.get("per_class") or {}).items():
        iou = "-" if c["iou"] is None else f"{c['iou']:.3f}"
        f1 = "-" if c["f1"] is None else f"{c['f1']:.3f}"
        console.print(
            f"  {name:<28} IoU {iou:>5}  F1 {f1:>5}  pixels {c['support']}", highlight=False, markup=False
        )


@app.command("finetune")
def finetune_cmd(
    task: Annotated[
        str, typer.Option("--task", help="landcover, croptype, soc (or segmentation / regression).")
    ],
    student: Annotated[
        str,
        typer.Option(
            "--student",
            help="Run folder, saved student, HF repo id, "
            "architecture name (with --init random), or 'raw' (pixel spectra).",
        ),
    ],
    data: Annotated[
        Path, typer.Option("--data", help="Chip-store folder to train (and, without --eval-data, test) on.")
    ],
    labels: Annotated[
        Path | None,
        typer.Option(
            "--labels",
            help="Labels aligned onto the chips: a raster, a folder of raster tiles, or a vector file "
            "(GeoPackage, Shapefile, GeoJSON; points and polygons). Else the store's own label layer.",
        ),
    ] = None,
    label: Annotated[
        str | None, typer.Option("--label", help="Label layer to use instead of the task's default.")
    ] = None,
    label_nodata: LabelNodata = None,
    label_field: LabelField = None,
    legend: Legend = None,
    protocol: Annotated[
        str,
        typer.Option(
            "--protocol",
            help="fused (spectra + encoder features at pixel resolution), fused-full (encoder trained "
            "too), upernet (multi-level decoder), frozen (the paper's CNN head on tokens), linear, full.",
        ),
    ] = "fused",
    loss: Annotated[
        str,
        typer.Option(
            "--loss",
            help="auto (weighted for segmentation, MSE for regression), ce, weighted (class weights "
            "1/sqrt(frequency) of the training labels, clipped at 10) or focal (gamma 2).",
        ),
    ] = "auto",
    fusion: Annotated[
        str,
        typer.Option(
            "--fusion",
            help="How the fused heads join encoder features to the spectra: residual (a zero-initialised "
            "correction of the raw-spectra head) or concat.",
        ),
    ] = "residual",
    init: Annotated[
        str, typer.Option("--init", help="pretrained, or random: the untrained-encoder control.")
    ] = "pretrained",
    train_chips: Annotated[
        int | None, typer.Option("--train-chips", help="Label-scarce: train on N chips only.")
    ] = None,
    label_fraction: Annotated[
        float | None,
        typer.Option(
            "--label-fraction",
            help="Label-scarce: train on this fraction (0-1] of the labelled training pixels, a subset "
            "fixed by --split-seed and nested across fractions; validation and test labels stay whole.",
        ),
    ] = None,
    train_crop: Annotated[
        int | None,
        typer.Option(
            "--train-crop",
            help="Train the fused head on random N x N px crops of the chips (plus the 2 px of context "
            "its outputs need, so they equal the whole chip's): a step costs about (N+4)^2/size^2 of "
            "one on whole chips. Default: whole chips.",
        ),
    ] = None,
    train_list: Annotated[
        Path | None,
        typer.Option(
            "--train-list",
            help="Train on exactly these chips of --data: a text file (chip index or source file per "
            "line) or a CSV whose first column holds them (e.g. EnMAP-Box's train_files.csv).",
        ),
    ] = None,
    val_list: Annotated[
        Path | None,
        typer.Option("--val-list", help="Validate on exactly these chips of --data (as --train-list)."),
    ] = None,
    test_list: Annotated[
        Path | None,
        typer.Option("--test-list", help="Test on exactly these chips of --data (as --train-list)."),
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option("--epochs", help="Default: at least 20 epochs and at least 120 optimiser steps."),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 8,
    lr: Annotated[
        float,
        typer.Option("--lr", help="Head learning rate (encoder: x0.1 with --protocol full / fused-full)."),
    ] = 1e-3,
    seed: Annotated[
        int, typer.Option("--seed", help="Initialisation, batch order, --train-chips subset.")
    ] = 0,
    split_seed: Annotated[int, typer.Option("--split-seed", help="Train/val/test split of the chips.")] = 0,
    eval_data: Annotated[
        Path | None, typer.Option("--eval-data", help="Test on this store instead of a held-out split.")
    ] = None,
    eval_labels: Annotated[
        Path | None, typer.Option("--eval-labels", help="Labels for --eval-data (default: --labels).")
    ] = None,
    val_data: Annotated[
        Path | None,
        typer.Option("--val-data", help="Validate on this store instead of a split of --data."),
    ] = None,
    val_labels: Annotated[
        Path | None, typer.Option("--val-labels", help="Labels for --val-data (default: --labels).")
    ] = None,
    val_fraction: Annotated[
        float, typer.Option("--val-fraction", help="Share of --data's chips held out for validation.")
    ] = 0.1,
    test_fraction: Annotated[
        float,
        typer.Option(
            "--test-fraction", help="Share of --data's chips held out for testing (no --eval-data)."
        ),
    ] = 0.2,
    out: Annotated[Path, typer.Option("--out", help="Run folder.")] = Path("runs/finetune"),
    accelerator: Annotated[str | None, typer.Option("--accelerator", help="cpu, gpu, mps, auto.")] = None,
    precision: Annotated[str | None, typer.Option("--precision", help="32-true, bf16-mixed, ...")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing run in --out.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the test metrics as JSON.")] = False,
) -> None:
    """Fine-tune a student (or the raw-spectra baseline) on a task and score it on held-out chips."""
    from hyperkd.evaluation.finetune import finetune

    trainer = {k: v for k, v in {"accelerator": accelerator, "precision": precision}.items() if v is not None}
    res = finetune(
        student=student,
        task=task,
        store=data,
        out=out,
        protocol=protocol,
        loss=loss,
        fusion=fusion,
        init=init,
        seed=seed,
        labels=labels,
        label=label,
        label_nodata=label_nodata,
        label_field=label_field,
        legend=legend,
        train_chips=train_chips,
        label_fraction=label_fraction,
        train_crop=train_crop,
        train_list=train_list,
        val_list=val_list,
        test_list=test_list,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        split_seed=split_seed,
        eval_store=eval_data,
        eval_labels=eval_labels,
        val_store=val_data,
        val_labels=val_labels,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        trainer=trainer,
        overwrite=overwrite,
    )
    if as_json:
        print_json({"run_dir": str(res.run_dir), "metrics": res.metrics, "val": res.val_metrics})
        return
    console.print(f"[green]done[/] {res.run_dir}: test {_fmt(res.metrics)}", highlight=False)
    _per_class(res.metrics)
    console.print(f"model: {res.model_dir}", highlight=False)


@app.command("evaluate")
def evaluate_cmd(
    model: Annotated[Path, typer.Option("--model", help="A `hyperkd finetune` run folder (or its model/).")],
    data: Annotated[Path, typer.Option("--data", help="Chip store to evaluate on.")],
    labels: Annotated[
        Path | None,
        typer.Option(
            "--labels", help="Label raster, folder of raster tiles or vector file (else the store's layer)."
        ),
    ] = None,
    label_nodata: LabelNodata = None,
    label_field: LabelField = None,
    legend: Legend = None,
    all_chips: Annotated[
        bool,
        typer.Option("--all-chips", help="Score every chip, even those the model trained on."),
    ] = False,
    out: Annotated[Path | None, typer.Option("--out", help="Folder for metrics.json and figures.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
) -> None:
    """Score a fine-tuned model on a store (never the chips it trained on, unless --all-chips)."""
    from hyperkd.evaluation.finetune import evaluate

    res = evaluate(
        model,
        data,
        labels=labels,
        label_nodata=label_nodata,
        label_field=label_field,
        legend=legend,
        chips="all" if all_chips else None,
        out=out,
    )
    if as_json:
        print_json(
            {"store": str(res.store), "num_chips": len(res.chips), "chips": res.chips, "metrics": res.metrics}
        )
        return
    console.print(f"{res.store} ({len(res.chips)} chips): {_fmt(res.metrics)}", highlight=False)
    _per_class(res.metrics)
    if res.out is not None:
        console.print(f"written to {res.out}", highlight=False)
