"""What starting hyperkd costs: the CLI's quick commands and one registry lookup.

Each command runs in a fresh interpreter several times; the script prints the median wall
time and CPU time and their difference over a bare ``python -c pass`` (the interpreter's own
start-up), with the load average (wall times on a shared machine grow with it).
``hyperkd --help``, ``--version`` and ``plugins list`` import no torch (plugins declare their
components and are imported on first build), and ``create("masker", "random")`` imports torch
and the masker module only (no Prithvi model code, no Lightning, no torchgeo)::

    python benchmarks/cli_startup.py            # 7 runs each
    python benchmarks/cli_startup.py --runs 15
    python benchmarks/cli_startup.py --cold     # without hyperkd's cached bytecode

Like an installed package (pip byte-compiles what it installs), hyperkd's own modules are
byte-compiled first (``compileall`` into ``__pycache__``), so the figures do not include
compiling them: an environment with ``PYTHONDONTWRITEBYTECODE=1`` and a source checkout
would otherwise recompile every module on every start. ``--cold`` measures that case.
"""

from __future__ import annotations

import argparse
import compileall
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HYPERKD = str(Path(sys.executable).with_name("hyperkd"))

COMMANDS: dict[str, list[str]] = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "hyperkd --help": [HYPERKD, "--help"],
    "hyperkd --version": [HYPERKD, "--version"],
    "hyperkd plugins list": [HYPERKD, "plugins", "list"],
    "create('masker', 'random')": [
        sys.executable,
        "-c",
        "import hyperkd; hyperkd.create('masker', 'random')",
    ],
    "import torch (reference)": [sys.executable, "-c", "import torch"],
    "empty Typer app --help (ref.)": [
        sys.executable,
        "-c",
        "import typer; app = typer.Typer(); app.command()(lambda: None); app()",
        "--help",
    ],
}
"""Label -> command line. The first is the baseline the others are compared with; the last two
are references: what torch costs to import, and what Typer's own (rich) help costs."""


def median_seconds(cmd: list[str], runs: int) -> tuple[float, float]:
    """Median wall time and median CPU time (user + system, of the child) of ``runs`` runs of
    ``cmd``, after one untimed warm-up run. CPU time is the steadier number on a busy machine."""
    subprocess.run(cmd, check=True, capture_output=True)
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7, help="timed runs per command (after a warm-up)")
    ap.add_argument("--cold", action="store_true", help="do not byte-compile hyperkd's modules first")
    args = ap.parse_args()
    root = Path(__file__).resolve().parents[1]
    if not args.cold:
        for folder in ("hyperkd", "plugins"):
            compileall.compile_dir(root / folder, quiet=1)
    print("hyperkd's bytecode: " + ("not cached (--cold)" if args.cold else "cached (compileall)"))
    base: tuple[float, float] | None = None
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'command':<30} {'wall (s)':>9} {'over bare':>10} {'CPU (s)':>8} {'over bare':>10}")
    for label, cmd in COMMANDS.items():
        wall, cpu = median_seconds(cmd, args.runs)
        base = (wall, cpu) if base is None else base
        print(
            f"{label:<30} {wall:>9.3f} {wall - base[0]:>10.3f} {cpu:>8.3f} {cpu - base[1]:>10.3f}", flush=True
        )
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
