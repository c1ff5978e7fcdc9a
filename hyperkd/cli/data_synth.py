"""``hyperkd data synth`` (synthetic scenes for any registered sensor) and ``hyperkd data info``.

Thin wrappers over :func:`hyperkd.synth.synthesize` and
:func:`hyperkd.data.info.store_info`; a notebook can call those directly.
"""

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from hyperkd.cli.data import data_app
from hyperkd.core.errors import DataError


def parse_also(values: list[str] | None) -> list[tuple[str, Path]]:
    """``--also NAME[:SELECTION]=PATH`` values as (sensor spec, path) pairs."""
    pairs: list[tuple[str, Path]] = []
    for v in values or []:
        spec, sep, path = v.partition("=")
        if not sep or not spec.strip() or not path.strip():
            raise DataError(f"--also {v!r}: expected SENSOR[:SELECTION]=STORE, e.g. --also hls=teacher-store")
        pairs.append((spec.strip(), Path(path.strip())))
    return pairs


def _command_line(
    out: Path,
    sensor: str,
    chips: int,
    size: int,
    seed: int,
    selection: str,
    also: list[str] | None,
    config: Path | None,
    noise: bool,
    preset: str | None = None,
    snr_scale: float = 1.0,
) -> str:
    """The command that reproduces a store (recorded in its manifest); --workers/--resume omitted."""
    parts = [
        "hyperkd data synth",
        f"--sensor {sensor}",
        f"--out {out}",
        f"--chips {chips}",
        f"--size {size}",
        f"--seed {seed}",
        f"--selection {selection}",
    ]
    parts += [f"--also {a}" for a in also or []]
    if preset is not None:
        parts.append(f"--preset {preset}")
    if config is not None:
        parts.append(f"--config {config}")
    if not noise:
        parts.append("--no-noise")
    if snr_scale != 1.0:
        parts.append(f"--snr-scale {snr_scale:g}")
    return " ".join(parts)


@data_app.command("synth")
def synth_cmd(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Chip store folder to create.", show_default=False)
    ],
    sensor: Annotated[
        str, typer.Option("--sensor", "-s", help="Registered sensor to render for: NAME or NAME:SELECTION.")
    ] = "enmap",
    chips: Annotated[int, typer.Option("--chips", "-n", help="Number of scenes (chips).")] = 32,
    size: Annotated[
        int,
        typer.Option(
            help="Chip size in pixels of --sensor (224 as in the paper); an --also sensor of another "
            "GSD gets chips of the same ground."
        ),
    ] = 64,
    seed: Annotated[int, typer.Option(help="Scene-set seed: same seed, same scenes.")] = 0,
    selection: Annotated[
        str,
        typer.Option(help="Bands: default (sensor's), all, a selection name, or names/ranges like B1-B126."),
    ] = "default",
    also: Annotated[
        list[str] | None,
        typer.Option(
            "--also",
            help="Render the same scenes for another sensor: SENSOR[:SELECTION]=STORE (repeatable).",
            show_default=False,
        ),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            help="Named scene config: default, kd-teacher, kd-student, kd-eval (see docs/synthetic-data.md).",
            show_default=False,
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            help="Scene config (YAML/JSON): crops, regions, water, urban, soil carbon knobs; "
            "fields it gives override the --preset's.",
            show_default=False,
        ),
    ] = None,
    noise: Annotated[bool, typer.Option("--noise/--no-noise", help="Add sensor noise.")] = True,
    snr_scale: Annotated[
        float, typer.Option("--snr-scale", help="Multiply every sensor's SNR (0.25: a noisier instrument).")
    ] = 1.0,
    workers: Annotated[
        int, typer.Option(help="Processes rendering chips (output does not depend on it).")
    ] = 1,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON summary of the written stores.")
    ] = False,
) -> None:
    """Write SYNTHETIC scenes (fields, towns, roads, water from real earthlib spectra) as a chip store.

    Each chip carries land-cover, crop-type and soil-organic-carbon labels. The same seed
    gives the same scenes for every sensor, so --also writes the teacher's view (e.g. hls)
    of exactly the scenes in --out.
    """
    from hyperkd.data.prepare import parse_selection
    from hyperkd.synth import Instrument, SceneConfig, synthesize

    base = SceneConfig.preset(preset) if preset is not None else None
    cfg = SceneConfig.from_file(config, base=base) if config is not None else base
    if snr_scale <= 0:
        raise DataError(f"--snr-scale must be > 0, got {snr_scale}")
    targets = parse_also(also)
    attrs: dict[str, Any] = {
        "command": _command_line(
            out, sensor, chips, size, seed, selection, also, config, noise, preset, snr_scale
        )
    }
    if preset is not None:
        attrs["preset"] = preset
    t0 = time.perf_counter()
    err = Console(stderr=True)
    try:
        store = synthesize(
            sensor,
            out,
            chips=chips,
            size=size,
            seed=seed,
            selection=parse_selection(selection),
            also=targets,
            config=cfg,
            instrument=Instrument(noise=noise, snr_scale=snr_scale),
            workers=workers,
            resume=resume,
            progress=not as_json,
            attrs=attrs,
        )
    except KeyboardInterrupt:
        err.print(f"interrupted: finished shards are safe in {out}; rerun the same command with --resume")
        raise typer.Exit(130) from None
    seconds = time.perf_counter() - t0
    from hyperkd.data.store import ChipStore

    stores = [store] + [ChipStore(p) for _, p in targets]
    if as_json:
        sys.stdout.write(
            json.dumps(
                {
                    "seconds": round(seconds, 3),
                    "stores": [
                        {
                            "path": str(s.root),
                            "sensor": s.sensor.name,
                            "bands": s.sensor.num_bands,
                            "chips": len(s),
                            "chip_size": s.chip_size,
                            "synthetic": s.synthetic,
                        }
                        for s in stores
                    ],
                },
                indent=2,
            )
            + "\n"
        )
        return
    console = Console()
    for s in stores:
        console.print(s.summary(), highlight=False)
    console.print(f"{len(store)} scenes in {seconds:.1f} s (seed {seed})", highlight=False)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


@data_app.command("info")
def info_cmd(
    store: Annotated[Path, typer.Argument(help="Chip store folder.", show_default=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Summarise a chip store: sensor and bands, chips, statistics, labels, provenance."""
    from hyperkd.data.info import store_info

    info = store_info(store)
    if as_json:
        sys.stdout.write(json.dumps(info, indent=2) + "\n")
        return
    console = Console()
    s = info["sensor"]
    if info["synthetic"]:
        console.print("[bold yellow]SYNTHETIC DATA[/] — not real imagery", highlight=False)
    console.print(f"[bold]{info['path']}[/]", highlight=False)
    console.print(
        f"{info['chips']} chips of {info['chip_size']}x{info['chip_size']} px in {info['shards']} shard(s), "
        f"{info['bytes'] / 2**20:.1f} MiB; {info['dtype']} {info['unit']}; "
        f"valid pixels {_fmt(info['valid_fraction'])}",
        highlight=False,
    )
    console.print(
        f"sensor {s['name']} ({s['selection']}): {s['num_bands']} bands, {s['min_nm']:.0f}-{s['max_nm']:.0f} nm, "
        f"GSD {s['gsd_m']:g} m",
        highlight=False,
    )
    if bad := info.get("nonfinite"):
        console.print(
            f"[bold red]{len(bad)} chip(s) hold NaN/inf[/] (read as no data; re-create the store): first chip "
            f"{bad[0]['chip']}, {bad[0]['shard']} row {bad[0]['row']}, {bad[0]['pixels']} pixel(s)",
            highlight=False,
        )
    st = info["stats"]
    if st.get("mean_range"):
        console.print(
            f"band means {st['mean_range'][0]:.4f}..{st['mean_range'][1]:.4f}, "
            f"stds {st['std_range'][0]:.4f}..{st['std_range'][1]:.4f} (over {st['count']} valid pixels)",
            highlight=False,
        )
    for name, lab in info["labels"].items():
        if lab["kind"] == "class":
            total = sum(lab["classes"].values()) + lab["unlabelled"]
            table = Table(title=f"label {name!r} (classes)")
            table.add_column("class")
            table.add_column("pixels", justify="right")
            table.add_column("share", justify="right")
            for cname, n in lab["classes"].items():
                table.add_row(cname, str(n), f"{n / total:.1%}" if total else "-")
            if lab["unlabelled"]:
                table.add_row("(unlabelled)", str(lab["unlabelled"]), f"{lab['unlabelled'] / total:.1%}")
            console.print(table)
        else:
            console.print(
                f"label {name!r} (continuous, {lab['unit']}): min {_fmt(lab['min'])}, mean {_fmt(lab['mean'])}, "
                f"max {_fmt(lab['max'])}, NaN {_fmt(lab['nan_fraction'])}",
                highlight=False,
            )
    prov = info["provenance"]
    if "synth" in prov:
        sy = prov["synth"]
        console.print(
            f"made by {sy['generator']} v{sy['version']}: seed {sy['seed']}, {sy['chips']} chips, "
            f"size {sy['size']}, scene config {sy['config_digest']}; spectra: {prov.get('spectral_library')}",
            highlight=False,
        )
        for path, what in (prov.get("paired_stores") or {}).items():
            console.print(f"same scenes as {path} ({what})", highlight=False)
