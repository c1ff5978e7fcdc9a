"""``hyperkd teacher pretrain|evaluate``: train a small Prithvi-architecture teacher and score it
(thin layers over :func:`hyperkd.training.teacher.pretrain_teacher` and
:func:`~hyperkd.training.teacher.evaluate_teacher`; the machinery is imported inside the commands,
so ``hyperkd --help`` stays free of torch)."""

import shlex
from pathlib import Path
from typing import Annotated

import typer

teacher_app = typer.Typer(
    help="Pretrain a teacher of your own (NOT NASA/IBM's Prithvi-EO) and score teachers.",
    no_args_is_help=True,
)


@teacher_app.command("pretrain")
def pretrain_cmd(
    data: Annotated[
        str,
        typer.Option(
            "--data",
            help="A multispectral chip store in the teacher's bands (HLS), or 'synthetic-hls' to synthesise "
            "the varied corpus first.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Teacher folder to write (config.json, weights, card).")],
    size: Annotated[
        str, typer.Option("--size", help="Architecture preset: tiny (seconds) or small (the packaged one).")
    ] = "small",
    teacher: Annotated[
        str, typer.Option("--teacher", help="Registered teacher architecture to train from random init.")
    ] = "prithvi-eo-tiny",
    epochs: Annotated[int, typer.Option("--epochs", min=1)] = 5,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 64,
    lr: Annotated[float, typer.Option("--lr")] = 1e-3,
    warmup_epochs: Annotated[float, typer.Option("--warmup-epochs", min=0.0)] = 1.0,
    mask_ratio: Annotated[float, typer.Option("--mask-ratio", min=0.0, max=0.99)] = 0.75,
    augment: Annotated[
        bool, typer.Option("--augment/--no-augment", help="Random flips and 90° rotations of training chips.")
    ] = True,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    chips: Annotated[int, typer.Option("--chips", min=1, help="synthetic-hls: chips in the corpus.")] = 6000,
    chip_size: Annotated[int, typer.Option("--chip-size", min=8, help="synthetic-hls: chip size (px).")] = 32,
    corpus: Annotated[
        Path | None,
        typer.Option(
            "--corpus", help="synthetic-hls: keep (and reuse) the corpus here; default: a temporary folder."
        ),
    ] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="synthetic-hls: synthesis processes.")] = 1,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out folder.")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = False,
) -> None:
    """Train a Prithvi-architecture teacher from random init with its own MAE objective."""
    from hyperkd.cli.app import console
    from hyperkd.training.teacher import SYNTHETIC_HLS, pretrain_teacher

    args = ["--data", data, "--out", str(out), "--size", size, "--teacher", teacher]
    args += ["--epochs", str(epochs), "--batch-size", str(batch_size), "--lr", f"{lr:g}"]
    args += ["--warmup-epochs", f"{warmup_epochs:g}", "--mask-ratio", f"{mask_ratio:g}", "--seed", str(seed)]
    if data == SYNTHETIC_HLS:
        args += ["--chips", str(chips), "--chip-size", str(chip_size)]
    if not augment:
        args.append("--no-augment")
    folder = pretrain_teacher(
        data,
        out,
        teacher=teacher,
        size=size,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        warmup_epochs=warmup_epochs,
        mask_ratio=mask_ratio,
        augment=augment,
        seed=seed,
        chips=chips,
        chip_size=chip_size,
        corpus_dir=corpus,
        workers=workers,
        overwrite=overwrite,
        progress=progress,
        command="hyperkd teacher pretrain " + " ".join(shlex.quote(a) for a in args),
    )
    import json

    t = json.loads((folder / "config.json").read_text())["training"]
    console.print(
        f"[green]done[/] {folder}: val masked-reconstruction loss {t['val_loss']} "
        f"(random init {t['val_loss_random_init']}), {t['steps']} steps in {t['seconds']} s. "
        f"Use it with: hyperkd distill --teacher {folder}",
        highlight=False,
    )


@teacher_app.command("evaluate")
def evaluate_cmd(
    teacher: Annotated[
        str, typer.Argument(help="Registered teacher (e.g. prithvi-tiny-synth) or teacher folder.")
    ],
    data: Annotated[Path, typer.Option("--data", help="Chip store in the teacher's bands (HLS).")],
    weights: Annotated[
        str | None, typer.Option("--weights", help="Weights for a registered teacher; 'none' = random init.")
    ] = None,
    mask_ratio: Annotated[float, typer.Option("--mask-ratio", min=0.0, max=0.99)] = 0.75,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the fixed masks.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Masked reconstruction loss of a teacher on every chip of a store (fixed masks)."""
    from hyperkd.cli.app import console, print_json
    from hyperkd.training.teacher import evaluate_teacher

    spec: dict[str, object] = {"name": teacher}
    if weights is not None:
        spec["weights"] = None if weights.lower() in ("none", "random") else weights
    result = evaluate_teacher(spec, data, mask_ratio=mask_ratio, seed=seed)
    if as_json:
        print_json(result)
        return
    console.print(
        f"{teacher}: masked reconstruction loss {result['masked_recon_loss']} on {result['chips']} chips of "
        f"{result['store']} (mask ratio {mask_ratio}, patch {result['patch_size']}; weights "
        f"{result['weights'].get('source', '?')})",
        highlight=False,
    )
