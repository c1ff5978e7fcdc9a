"""The Typer application and its entry point.

Start-up is kept cheap (``hyperkd --help`` imports no torch; benchmarks/cli_startup.py): the
command modules import their machinery inside the command functions, plugins are discovered
without importing their components, and the ``hyperkd.cli`` modules do not use
``from __future__ import annotations``, so Typer reads ready annotation objects instead of
evaluating several hundred annotation strings on every start.
"""

import json
import os
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import hyperkd
from hyperkd.core.errors import HyperKDError

app = typer.Typer(
    name="hyperkd",
    help="Distil multispectral foundation models into hyperspectral students.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # plain (click) help: Typer's rich help imports rich.markdown and markdown-it, ~0.15 s of
    # every `hyperkd ... --help` (benchmarks/cli_startup.py)
    rich_markup_mode=None,
)
plugins_app = typer.Typer(help="Discovered plugins.", no_args_is_help=True)
sensors_app = typer.Typer(help="Registered sensors and their band tables.", no_args_is_help=True)
app.add_typer(plugins_app, name="plugins")
app.add_typer(sensors_app, name="sensors")


def _add_core_commands() -> None:
    from hyperkd.cli import distill, hub, train  # noqa: F401 - register distill, hub, pretrain and recipes
    from hyperkd.cli import finetune as _finetune  # noqa: F401 - register finetune and evaluate
    from hyperkd.cli import predict as _predict  # noqa: F401 - register predict
    from hyperkd.cli.data import data_app
    from hyperkd.cli.teacher import teacher_app

    app.add_typer(data_app, name="data")
    app.add_typer(teacher_app, name="teacher")


console = Console()
err_console = Console(stderr=True)
_debug = {"on": False}


def debug_enabled() -> bool:
    """Whether tracebacks should be shown (``--debug`` or ``HYPERKD_DEBUG=1``)."""
    return _debug["on"] or os.environ.get("HYPERKD_DEBUG", "") not in ("", "0")


def print_json(obj: Any) -> None:
    """Write ``obj`` as JSON to stdout (plain text, no colour codes)."""
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


def warn_failed_plugins() -> None:
    """One warning line per plugin that failed to load."""
    from hyperkd.core.plugins import failed_plugins

    for info in failed_plugins():
        err_console.print(
            f"[yellow]warning:[/] plugin {escape(repr(info.name))} ({escape(info.module)}) failed to "
            f"load and was skipped: {escape(str(info.error))}",
            highlight=False,
        )


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"hyperkd {hyperkd.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version."),
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    _debug["on"] = debug


@plugins_app.command("list")
def plugins_list(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List discovered plugins, whether they loaded, and what they provide."""
    from hyperkd.core.plugins import plugin_infos

    infos = plugin_infos()
    if as_json:
        print_json([i.to_dict() for i in infos])
        return
    table = Table(title="hyperkd plugins")
    for col in ("name", "status", "distribution", "builtin", "provides / error"):
        table.add_column(col)
    for i in infos:
        what = (
            i.error if i.status == "failed" else ", ".join(f"{c['kind']}:{c['name']}" for c in i.components)
        )
        style = {"failed": "red", "disabled": "dim"}.get(i.status, "")
        table.add_row(
            i.name,
            f"[{style}]{i.status}[/]" if style else i.status,
            f"{i.distribution} {i.version}",
            "yes" if i.builtin else "no",
            what,
        )
    console.print(table)


@app.command("list")
def list_cmd(
    kind: Annotated[str | None, typer.Argument(help="One kind (sensor, teacher, ...), or all.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List registered components with a one-line description and their plugin."""
    warn_failed_plugins()
    entries = hyperkd.list_components(kind)
    if as_json:
        print_json([e.to_dict() for e in entries])
        return
    table = Table(title=f"hyperkd components{f' ({kind})' if kind else ''}")
    for col in ("kind", "name", "plugin", "description"):
        table.add_column(col)
    for e in entries:
        name = e.name + (f" ({', '.join(e.aliases)})" if e.aliases else "")
        table.add_row(e.kind, name, e.provider, e.description)
    console.print(table)


@sensors_app.command("list")
def sensors_list(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List registered sensors: bands, spectral span, GSD and default selection."""
    warn_failed_plugins()
    rows = []
    for e in hyperkd.registry("sensor").entries():
        try:
            s = hyperkd.get_sensor(e.name, selection="all")
        except HyperKDError as exc:  # that sensor (and its plugin) is out; list the others
            err_console.print(f"[yellow]warning:[/] {escape(str(exc))}", highlight=False)
            continue
        rows.append(
            {
                "name": s.name,
                "plugin": e.provider,
                "num_bands": s.num_bands,
                "min_nm": min(s.centers_nm),
                "max_nm": max(s.centers_nm),
                "gsd_m": s.gsd_m,
                "default_selection": s.default_selection,
                "description": e.description,
            }
        )
    if as_json:
        print_json(rows)
        return
    table = Table(title="sensors")
    for col in ("name", "bands", "span (nm)", "GSD (m)", "default selection", "plugin"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["name"],
            str(r["num_bands"]),
            f"{r['min_nm']:.0f}-{r['max_nm']:.0f}",
            f"{r['gsd_m']:g}",
            str(r["default_selection"] or "all"),
            r["plugin"],
        )
    console.print(table)


@sensors_app.command("show")
def sensors_show(
    name: Annotated[str, typer.Argument(help="Sensor name, e.g. enmap.")],
    selection: Annotated[
        str, typer.Option("--selection", "-s", help="Band selection to show: all, default, or a name.")
    ] = "all",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show a sensor's band table (all bands unless --selection is given)."""
    warn_failed_plugins()
    sensor = hyperkd.get_sensor(name, selection=selection)
    d = sensor.to_dict()
    default_bands = hyperkd.get_sensor(name, selection="default").band_names  # bad bands left out
    if sensor.default_selection is not None or sensor.bad_bands:
        d["default_selection_bands"] = default_bands
    if as_json:
        print_json(d)
        return
    console.print(f"[bold]{sensor.name}[/] — {sensor.description}", highlight=False)
    console.print(
        f"{sensor.num_bands} bands ({sensor.selection}); GSD {sensor.gsd_m:g} m; nodata {sensor.nodata}; "
        f"default selection: {sensor.default_selection or ('good-bands' if sensor.bad_bands else 'all')}; selections: "
        f"{', '.join(['all', *sensor.selections])}; bad bands: {', '.join(sensor.bad_bands) or 'none'}",
        highlight=False,
    )
    table = Table()
    for col in ("#", "band", "centre (nm)", "FWHM (nm)", "range (nm)", "gain", "mean", "std", "default"):
        table.add_column(col)
    default = set(default_bands)
    for i, b in enumerate(sensor.bands, start=1):
        lo, hi = b.range
        table.add_row(
            str(i),
            b.name,
            f"{b.center_nm:.2f}",
            f"{b.fwhm_nm:.2f}",
            f"{lo:.1f}-{hi:.1f}",
            f"{b.gain:g}",
            "" if b.mean is None else f"{b.mean:.4f}",
            "" if b.std is None else f"{b.std:.4f}",
            "yes" if b.name in default else "no",
        )
    console.print(table)


def _install_plugin_commands() -> None:
    from hyperkd.core.plugins import plugin_manager

    try:
        plugin_manager().hook.hyperkd_cli(app=app)
    except Exception as exc:
        err_console.print(f"[yellow]warning:[/] a plugin's CLI hook failed: {exc}", highlight=False)


def one_line(message: str) -> str:
    """A message's lines joined into one (errors print as one line; ``--debug`` shows them whole)."""
    return " ".join(part.strip() for part in message.splitlines() if part.strip())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (used by the console script and by tests)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args == ["--version"]:  # answer without loading plugins (which import torch)
        typer.echo(f"hyperkd {hyperkd.__version__}")
        return 0
    if "--debug" in args:
        _debug["on"] = True
    try:
        _install_plugin_commands()
        rc = app(args=args, prog_name="hyperkd", standalone_mode=False)
    except HyperKDError as exc:
        if debug_enabled():
            raise
        err_console.print(f"[red]error:[/] {escape(one_line(str(exc)))}", highlight=False, soft_wrap=True)
        return 1
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        err_console.print("aborted")
        return 130
    except Exception as exc:  # click usage errors (typer vendors click, so duck-type them)
        show = getattr(exc, "show", None)
        code = getattr(exc, "exit_code", None)
        if callable(show) and isinstance(code, int):
            show()
            return code
        raise
    return rc if isinstance(rc, int) else 0


_add_core_commands()


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
