"""``hyperkd teachers list|show`` and ``hyperkd convert prithvi``, added by the Prithvi plugin.

Each command is a thin layer over a public function: :func:`teacher_rows`,
:func:`teacher_details` and :func:`hyperkd_prithvi.convert.convert_prithvi`.
"""

from typing import Annotated, Any

import typer
from rich.markup import escape

teachers_app = typer.Typer(
    help="Registered teachers: architecture, size, bands, weights.", no_args_is_help=True
)
convert_app = typer.Typer(
    help="Convert checkpoints to model.safetensors + config.json.", no_args_is_help=True
)


def install(app: typer.Typer) -> None:
    """Attach the command groups to the main app once (the CLI hook may run more than once)."""
    names = {g.name for g in app.registered_groups}
    if "teachers" not in names:
        app.add_typer(teachers_app, name="teachers")
    if "convert" not in names:
        app.add_typer(convert_app, name="convert")


def _hub_cached(repo_id: str | None, filename: str | None) -> bool | None:
    """Whether the official file is already in the local HF cache (no network)."""
    if not (repo_id and filename):
        return None
    from huggingface_hub import try_to_load_from_cache

    from hyperkd.hub import hub_cache_dir

    got = try_to_load_from_cache(repo_id, filename, cache_dir=hub_cache_dir())
    return isinstance(got, str)


def _summary(entry: Any) -> dict[str, Any]:
    """The fields every teacher listing starts with (name, aliases, plugin, description)."""
    return {
        "name": entry.name,
        "aliases": list(entry.aliases),
        "plugin": entry.provider,
        "description": entry.description,
    }


def teacher_rows() -> list[dict[str, Any]]:
    """One summary row per registered teacher (Prithvi ones with architecture and size)."""
    import hyperkd
    from hyperkd_prithvi.teacher import VARIANTS, parameter_counts

    rows = []
    for entry in hyperkd.registry("teacher").entries():
        row = _summary(entry)
        variant = VARIANTS.get(entry.name)
        if variant is not None:
            cfg = variant.config
            row.update(
                embed_dim=cfg.embed_dim,
                depth=cfg.depth,
                num_heads=cfg.num_heads,
                patch_size=cfg.patch_size[1],
                num_frames=cfg.num_frames,
                coords_encoding=list(cfg.coords_encoding),
                encoder_parameters=parameter_counts(entry.name)["encoder"],
                default_weights=variant.to_dict()["default_weights"],
                default_repo=variant.repo_id if variant.default_weights == "default" else None,
            )
        rows.append(row)
    return rows


def teacher_details(name: str) -> dict[str, Any]:
    """Everything ``teachers show`` prints: config, parameter counts, bands, weights, shapes."""
    import hyperkd
    from hyperkd_prithvi.teacher import HLS_SCALE, VARIANTS, parameter_counts, prithvi_reference

    entry = hyperkd.registry("teacher").get(name)
    d = _summary(entry)
    variant = VARIANTS.get(entry.name)
    if variant is None:
        return d
    ref = prithvi_reference()
    cfg = variant.config
    d.update(variant.to_dict())
    d["parameters"] = parameter_counts(entry.name)
    d["input_unit"] = "reflectance"
    d["normalisation"] = (
        f"x * {HLS_SCALE:g} (HLS digital numbers), then (x - mean_dn) / std_dn with Prithvi "
        f"{variant.stats} statistics"
    )
    d["bands"] = [
        {
            "name": code,
            "label": label,
            "range_um": rng,
            "mean_dn": m,
            "std_dn": s,
        }
        for code, label, rng, m, s in zip(
            ref["bands"], ref["band_names"], ref["band_range_um"], variant.mean, variant.std, strict=True
        )
    ]
    p = cfg.patch_size[1]
    n = (cfg.img_size // p) ** 2
    d["features"] = {
        "input": f"(B, {cfg.in_chans}, H, W) reflectance, H and W multiples of {p}",
        f"tokens_at_{cfg.img_size}": n,
        "without_cls": f"(B, (H/{p})*(W/{p}), {cfg.embed_dim})",
        "with_cls": f"(B, 1 + (H/{p})*(W/{p}), {cfg.embed_dim})",
        "default_layer": f"block {cfg.depth - 1} (the last), after the final LayerNorm",
    }
    d["default_weights_cached"] = _hub_cached(variant.repo_id, variant.filename)
    return d


def _fmt_params(n: int) -> str:
    return f"{n / 1e6:.1f}M"


@teachers_app.command("list")
def teachers_list(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List registered teachers with their size and default weights."""
    from rich.table import Table

    from hyperkd.cli.app import console, print_json, warn_failed_plugins

    warn_failed_plugins()
    rows = teacher_rows()
    if as_json:
        print_json(rows)
        return
    table = Table(title="teachers")
    table.add_column("name", no_wrap=True)
    for col in ("embed", "depth", "heads", "patch", "frames", "encoder"):
        table.add_column(col, justify="right")
    table.add_column("default weights (Hugging Face)", overflow="fold")
    for r in rows:
        name = r["name"] + (f" ({', '.join(r['aliases'])})" if r["aliases"] else "")
        if "embed_dim" not in r:
            table.add_row(escape(name), "", "", "", "", "", "", escape(r["description"]))
            continue
        table.add_row(
            name,
            str(r["embed_dim"]),
            str(r["depth"]),
            str(r["num_heads"]),
            str(r["patch_size"]),
            str(r["num_frames"]),
            _fmt_params(r["encoder_parameters"]),
            r["default_repo"] or r["default_weights"],
        )
    console.print(table)


@teachers_app.command("show")
def teachers_show(
    name: Annotated[str, typer.Argument(help="Teacher name or alias, e.g. prithvi.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show a teacher's configuration, parameter count, bands and default weights."""
    from rich.table import Table

    from hyperkd.cli.app import console, print_json, warn_failed_plugins

    warn_failed_plugins()
    d = teacher_details(name)
    if as_json:
        print_json(d)
        return
    console.print(f"[bold]{escape(d['name'])}[/] — {escape(d['description'])}", highlight=False)
    if "config" not in d:
        console.print(f"plugin: {escape(d['plugin'])}", highlight=False)
        return
    params = d["parameters"]
    cached = {True: "cached", False: "not cached", None: "n/a"}[d["default_weights_cached"]]
    console.print(
        f"aliases: {', '.join(d['aliases']) or '-'}; plugin: {d['plugin']}\n"
        f"parameters: encoder {_fmt_params(params['encoder'])}, decoder {_fmt_params(params['decoder'])}, "
        f"total {_fmt_params(params['total'])} ({params['total']:,})\n"
        f"default weights: {d['default_weights']} ({cached})\n"
        f"input: {d['features']['input']}; normalisation: {d['normalisation']}\n"
        f"features: {d['features']['without_cls']} ({d['features']['default_layer']})",
        highlight=False,
    )
    cfg_table = Table(title="architecture")
    cfg_table.add_column("field")
    cfg_table.add_column("value")
    for k, v in d["config"].items():
        cfg_table.add_row(k, str(v))
    console.print(cfg_table)
    band_table = Table(title="bands")
    for col in ("band", "name", "range (µm)", "mean (DN)", "std (DN)"):
        band_table.add_column(col)
    for b in d["bands"]:
        lo, hi = b["range_um"]
        band_table.add_row(
            b["name"], b["label"], f"{lo:.2f}-{hi:.2f}", f"{b['mean_dn']:.2f}", f"{b['std_dn']:.2f}"
        )
    console.print(band_table)


@convert_app.command("prithvi")
def convert_prithvi_cmd(
    src: Annotated[
        str,
        typer.Argument(
            help="Checkpoint: .pt/.safetensors file, folder, or Hub org/name (optionally @revision and /file)."
        ),
    ],
    out: Annotated[str, typer.Argument(help="Output folder (model.safetensors + config.json).")],
    variant: Annotated[
        str | None, typer.Option("--variant", help="Variant name; default: detected from the shapes.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Convert a Prithvi-EO checkpoint (either key layout) into model.safetensors + config.json."""
    from hyperkd.cli.app import console, print_json
    from hyperkd_prithvi.convert import convert_prithvi

    summary = convert_prithvi(src, out, variant=variant)
    if as_json:
        print_json(summary)
        return
    console.print(
        escape(
            f"wrote {summary['weights']} and {summary['config']}: {summary['variant']}, "
            f"{summary['tensors']} tensors, {_fmt_params(summary['parameters'])} parameters "
            f"(source {summary['source']}, {summary['layout']} keys)"
        ),
        highlight=False,
    )
