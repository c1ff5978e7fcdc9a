#!/usr/bin/env python3
"""Is one ``any-mae`` student as good on a sensor it never saw as a student trained on that sensor?

Issue 16 item 3, numbers for docs/any-sensor.md. One ``any-mae-tiny`` is MAE-pretrained in one
run on two *training* sensors (synthetic EnMAP, 202 bands, and a PRISMA-like table, 239 bands;
the same scenes rendered for both, :func:`hyperkd.synth.synthesize` with ``also``). Then, for
each *unseen* sensor, these rows are fine-tuned (:func:`hyperkd.finetune`, its default protocol)
on that sensor's small labelled set and scored on held-out chips of it:

* ``raw``: a head on the raw spectra (no encoder), the control;
* ``per-sensor``: a ``mae-tiny`` student (same size, same chip size and patch, same number of
  pretraining steps and batch size) MAE-pretrained on the unseen sensor's own small set,
  the chips the fine-tune then trains on;
* ``any-sensor``: the ``any-mae-tiny`` above, never trained on this sensor, bound to its band
  table by the fine-tune (no weight changes there; the ``fused`` protocol keeps the encoder fixed);
* ``any-own`` (``--rows``, the architecture control): an ``any-mae-tiny`` pretrained like the
  per-sensor student, on the unseen sensor's own small set.

``--protocols fused,linear`` fine-tunes every row with each protocol (``linear``: one linear map
per token, the encoder's features alone; the default ``fused`` head also reads the spectra).

The unseen sensors (band tables built here; hyperkd registers none of them):

* ``emit-like``: 285 bands, 381-2493 nm, 8.5 nm FWHM, rendered at **60 m** (EMIT's GSD: 32 px
  chips cover 1920 m; the training sensors are 30 m, so the GSD is unseen too);
* ``desis-like``: 235 bands, 401-999 nm (VNIR only), 3.5 nm FWHM, 30 m;
* ``potsdam``: the real EnMAP Potsdam tiles (``../shared/data/enmap-potsdam``; 218 usable bands
  in the export's **detector order**, VNIR then SWIR, not sorted by wavelength), prepared as
  they are; 14 training tiles, scored on the 2 validation tiles, labels 1-6 (0 = no label).
  Skipped with a message when the folder is absent.

Synthetic sets (:class:`Budget`): ``own`` chips of 32 px train (and pretrain the per-sensor
student), ``test`` chips of other scenes score, task ``landcover``. Every row and seed is scored
on the same test chips; seed ``s`` is the pretraining seed and the fine-tuning seed of its row.
Runs are kept in ``--out`` (a rerun reuses the pretraining and fine-tune runs whose settings
match); ``OUT/results.json`` holds every run's metrics; ``--docs docs/any-sensor.md`` rewrites
the page's generated section and its figure (``docs/figures/any-sensor/unseen.png``)::

    OMP_NUM_THREADS=1 python benchmarks/anysensor_unseen.py --docs docs/any-sensor.md   # 3 seeds
    OMP_NUM_THREADS=1 python benchmarks/anysensor_unseen.py --rows raw,per-sensor,any-sensor,any-own \
        --protocols fused,linear --docs docs/any-sensor.md                              # the docs' run
    python benchmarks/anysensor_unseen.py --quick       # 1 seed, a tiny budget: a smoke run (< 1 min)
    python benchmarks/anysensor_unseen.py --report-only --docs docs/any-sensor.md
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import statistics
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_potsdam import DEFAULT_DATA, prepare_split  # the Potsdam tiles, prepared as they are
from real_potsdam_parts import machine, split_files, write_generated

BEGIN = "<!-- benchmarks/anysensor_unseen.py: begin (generated, do not edit by hand) -->"
END = "<!-- benchmarks/anysensor_unseen.py: end -->"
ROWS = {
    "raw": "raw spectra (no encoder)",
    "per-sensor": "`mae-tiny` pretrained on this sensor's own small set",
    "any-sensor": "`any-mae-tiny` pretrained on EnMAP + PRISMA-like, never saw this sensor",
    "any-own": "`any-mae-tiny` pretrained on this sensor's own small set (architecture control)",
}
DEFAULT_ROWS = "raw,per-sensor,any-sensor"
PAIRS = [
    ("any-sensor", "per-sensor"),
    ("any-sensor", "raw"),
    ("per-sensor", "raw"),
    ("any-sensor", "any-own"),
    ("any-own", "per-sensor"),
]
"""The verdicts the report gives (those whose rows ran)."""
log = logging.getLogger("anysensor_unseen")


@dataclass(frozen=True)
class Budget:
    """What every pretraining and fine-tune gets; recorded in the results and the docs."""

    train_chips: int = 48  # per training sensor (the same scenes for both)
    own: int = 16  # the unseen synthetic sensor's small set: pretrains the per-sensor student, fine-tunes
    test: int = 16  # held-out chips of other scenes
    size: int = 32
    steps: int = 300  # pretraining optimiser steps, every student
    batch: int = 8
    band_dropout: float = 0.3  # any-sensor pretraining only (a per-sensor student cannot drop bands)
    finetune_epochs: int = 20


QUICK = Budget(train_chips=8, own=8, test=4, steps=20, batch=4, finetune_epochs=3)


# ----------------------------------------------------------------------------------------------
# Band tables (not the official ones: shapes and ranges as the instruments publish them)
# ----------------------------------------------------------------------------------------------


def band_tables() -> dict[str, Any]:
    """The PRISMA-like training table and the EMIT-like and DESIS-like unseen tables."""
    from hyperkd.core.sensors import Band, Sensor

    def table(name: str, centres: np.ndarray, fwhm: float, gsd: float, detectors: Sequence[str]) -> Sensor:
        bands = tuple(
            Band(f"B{i:03d}", float(c), fwhm, detector=d)
            for i, (c, d) in enumerate(zip(centres, detectors, strict=True))
        )
        return Sensor(name=name, bands=bands, gsd_m=gsd, description=f"{name} (benchmark band table)")

    # PRISMA: 66 VNIR bands 400-1010 nm and 173 SWIR bands 920-2500 nm (overlapping), <= 12 nm
    prisma = np.concatenate([np.linspace(402.0, 1005.0, 66), np.linspace(935.0, 2497.0, 173)])
    tables = {
        "prisma-like": table("prisma-like", prisma, 11.0, 30.0, ["vnir"] * 66 + ["swir"] * 173),
        "emit-like": table("emit-like", np.linspace(381.0, 2493.0, 285), 8.5, 60.0, ["all"] * 285),
        "desis-like": table("desis-like", np.linspace(401.0, 999.0, 235), 3.5, 30.0, ["vnir"] * 235),
    }
    # registered here, as a user's own sensor would be: a saved per-sensor student names its sensor
    from hyperkd.core.registry import register, registry

    for name, sensor in tables.items():
        if name not in registry("sensor"):
            register("sensor", name)(lambda s=sensor: s)
    return tables


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


@dataclass
class Target:
    """One unseen sensor: its small training set, its test chips and how their labels are read."""

    name: str
    own: Any  # ChipStore
    test: Any
    task: str
    labels: str | None = None
    label_nodata: float | None = None


def synth_store(sensor: Any, out: Path, chips: int, size: int, seed: int, also: Any = None) -> Any:
    """A synthetic store (made once; remade when its chip count or seed differ)."""
    from hyperkd.data.store import ChipStore
    from hyperkd.synth import synthesize

    if (out / "manifest.json").exists():
        store = ChipStore(out)
        made = store.manifest.get("attrs", {}).get("synth", {})
        if len(store) == chips and made.get("seed") == seed and store.chip_size == size:
            return store
        shutil.rmtree(out)
    store = synthesize(sensor, out, chips=chips, size=size, seed=seed, also=also, progress=False)
    log.info("synthesised %s: %d chips of %d px, %d bands", out, chips, size, store.sensor.num_bands)
    return store


def make_data(
    work: Path, budget: Budget, potsdam: Path | None, sensors: Sequence[str]
) -> tuple[list[Path], list[Target]]:
    """The training stores (EnMAP, PRISMA-like; paired) and the unseen targets."""
    tables = band_tables()
    d = work / "stores"
    enmap = d / "train-enmap"
    prisma = d / "train-prisma-like"
    synth_store("enmap", enmap, budget.train_chips, budget.size, 100, also=[(tables["prisma-like"], prisma)])
    if not (prisma / "manifest.json").exists():  # the pair is made together
        shutil.rmtree(enmap)
        synth_store(
            "enmap", enmap, budget.train_chips, budget.size, 100, also=[(tables["prisma-like"], prisma)]
        )
    targets = []
    for name in sensors:
        if name == "potsdam":
            if potsdam is None or not (potsdam / "images").is_dir():
                print(
                    f"potsdam: {potsdam} is absent (needs images/, labels/, the split CSVs); its rows are skipped"
                )
                continue
            train = prepare_split(split_files(potsdam, "train_files.csv"), work, "potsdam-train")
            val = prepare_split(split_files(potsdam, "validation_files.csv"), work, "potsdam-val")
            targets.append(Target(name, train, val, "segmentation", str(potsdam / "labels"), 0.0))
            continue
        own = synth_store(tables[name], d / f"{name}-own", budget.own, budget.size, 200)
        test = synth_store(tables[name], d / f"{name}-test", budget.test, budget.size, 300)
        targets.append(Target(name, own, test, "landcover"))
    return [enmap, prisma], targets


# ----------------------------------------------------------------------------------------------
# Runs (reused when their settings match)
# ----------------------------------------------------------------------------------------------


def _saved(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def pretrain_run(
    out: Path, student: str, stores: Sequence[Path], seed: int, budget: Budget
) -> tuple[str, float]:
    """``student`` MAE-pretrained for ``budget.steps`` steps on ``stores`` at ``seed``; (run, seconds)."""
    from hyperkd.training.runner import pretrain

    any_sensor = student.startswith("any-mae")
    spec = {
        "student": student,
        "stores": [str(s) for s in stores],
        "seed": seed,
        "steps": budget.steps,
        "batch": budget.batch,
        "band_dropout": budget.band_dropout if any_sensor else 0.0,
    }
    saved = _saved(out / "bench-spec.json")
    if saved and saved["spec"] == spec and (out / "student").is_dir():
        return str(out), float(saved["seconds"])
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    pretrain(
        "mae",
        out,
        overrides=[
            f"student.name={student}",  # size preset tiny, auto patch: 4 px on 32 px chips (8x8 tokens)
            f"seed={seed}",
            f"data.batch_size={budget.batch}",
            "data.val_fraction=0.0",  # nothing selects on a validation split
            "data.augment=true",
            f"data.band_dropout={spec['band_dropout']}",
            f"trainer.max_steps={budget.steps}",
            "trainer.max_epochs=100000",
            f"optim.warmup_steps={max(1, budget.steps // 10)}",
            "trainer.figures=false",
            f"trainer.checkpoint_every_n_steps={budget.steps}",
        ],
        data__store=[str(s) for s in stores] if len(stores) > 1 else str(stores[0]),
    )
    seconds = time.perf_counter() - t0
    (out / "bench-spec.json").write_text(json.dumps({"spec": spec, "seconds": seconds}))
    log.info(
        "pretrained %s (%s) seed %d: %.0f s", student, ", ".join(Path(s).name for s in stores), seed, seconds
    )
    return str(out), seconds


def finetune_run(
    out: Path, student: str, target: Target, seed: int, budget: Budget, protocol: str
) -> dict[str, Any]:
    """Test metrics of ``student`` fine-tuned with ``protocol`` on ``target``'s small set at ``seed``."""
    import hyperkd

    spec = {"student": student, "sensor": target.name, "seed": seed, "epochs": budget.finetune_epochs,
            "pretrain": _saved(Path(student) / "bench-spec.json")}  # fmt: skip
    if protocol != default_protocol():
        spec["protocol"] = protocol
    saved = _saved(out / "bench-record.json")
    if saved and saved["spec"] == spec:
        return dict(saved["record"])
    t0 = time.perf_counter()
    res = hyperkd.finetune(
        student=student,
        task=target.task,
        store=target.own,
        labels=target.labels,
        label_nodata=target.label_nodata,
        eval_store=target.test,
        val_fraction=0.0,
        epochs=budget.finetune_epochs,
        protocol=protocol,
        seed=seed,
        out=out,
        figures=False,
        overwrite=True,
    )
    m = res.metrics
    rec = {
        "miou": float(m["miou"]),
        "overall_accuracy": float(m["overall_accuracy"]),
        "protocol": res.settings.get("protocol"),
        "time_s": round(time.perf_counter() - t0, 1),
    }
    (out / "bench-record.json").write_text(json.dumps({"spec": spec, "record": rec}))
    return rec


def default_protocol() -> str:
    """:func:`hyperkd.finetune`'s default protocol."""
    import inspect

    import hyperkd

    return str(inspect.signature(hyperkd.finetune).parameters["protocol"].default)


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Every row of every unseen sensor at every seed; the results dict."""
    from hyperkd.evaluation.quickstart import _quiet

    budget = QUICK if args.quick else Budget(steps=args.steps)
    seeds = [int(s) for s in args.seeds.split(",")][: 1 if args.quick else None]
    rows = args.rows.split(",")
    protocols = args.protocols.split(",") if args.protocols else [default_protocol()]
    known = [*band_tables().keys() - {"prisma-like"}, "potsdam"]
    if set(args.sensors.split(",")) - set(known):
        raise SystemExit(f"--sensors {args.sensors}: choose among {', '.join(sorted(known))}")
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        raise SystemExit(f"--rows: unknown row(s) {', '.join(unknown)}; choose among {', '.join(ROWS)}")
    work = Path(args.out) / ("quick" if args.quick else "")
    work.mkdir(parents=True, exist_ok=True)
    start, t0 = machine(), time.time()
    runs: list[dict[str, Any]] = []
    pretrain_s: dict[str, list[float]] = {}
    with _quiet(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no `val_dataloader`.*")  # val_fraction=0, on purpose
        warnings.filterwarnings("ignore", message=".*Total length of `DataLoader`.*")  # the same
        warnings.filterwarnings("ignore", message=".*lie outside the spectral library.*")
        train, targets = make_data(
            work, budget, Path(args.potsdam) if args.potsdam else None, args.sensors.split(",")
        )
        for seed in seeds:
            any_run, sec = pretrain_run(
                work / "pretrain" / "any-sensor" / f"s{seed}", "any-mae-tiny", train, seed, budget
            )
            pretrain_s.setdefault("any-sensor", []).append(sec)
            for t in targets:
                students = {"raw": "raw", "any-sensor": any_run}
                if "per-sensor" in rows:
                    students["per-sensor"], sec = pretrain_run(
                        work / "pretrain" / t.name / f"s{seed}", "mae-tiny", [t.own.root], seed, budget
                    )
                    pretrain_s.setdefault(f"per-sensor {t.name}", []).append(sec)
                if "any-own" in rows:
                    students["any-own"], sec = pretrain_run(
                        work / "pretrain" / f"any-own-{t.name}" / f"s{seed}",
                        "any-mae-tiny",
                        [t.own.root],
                        seed,
                        budget,
                    )
                    pretrain_s.setdefault(f"any-own {t.name}", []).append(sec)
                for protocol, row in ((p, r) for p in protocols for r in ROWS if r in rows):
                    tag = row if protocol == default_protocol() else f"{row}-{protocol}"
                    out = work / "finetune" / t.name / tag / f"s{seed}"
                    rec = finetune_run(out, students[row], t, seed, budget, protocol)
                    runs.append({"sensor": t.name, "row": row, "seed": seed, **rec, "protocol": protocol})
                    print(f"{t.name:11s} {row:11s} {protocol:7s} seed {seed}: mIoU {rec['miou']:.3f}, "
                          f"accuracy {rec['overall_accuracy']:.3f} ({rec['time_s']:.0f} s)", flush=True)  # fmt: skip
    sets = {
        t.name: {"bands": t.own.sensor.num_bands, "gsd_m": t.own.sensor.gsd_m, "train_chips": len(t.own),
                 "test_chips": len(t.test), "task": t.task}
        for t in targets
    }  # fmt: skip
    return {
        "runs": runs,
        "pretrain_s": pretrain_s,
        "sets": sets,
        "budget": asdict(budget),
        "seeds": seeds,
        "quick": args.quick,
        "provenance": {
            "command": "python benchmarks/anysensor_unseen.py " + shlex.join(sys.argv[1:]),
            "machine": start,
            "date": time.strftime("%Y-%m-%d"),
            "minutes": round((time.time() - t0) / 60, 1),
        },
    }


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------


def _values(
    runs: Sequence[Mapping[str, Any]], sensor: str, row: str, protocol: str, key: str
) -> dict[int, float]:
    return {
        int(r["seed"]): float(r[key])
        for r in runs
        if r["sensor"] == sensor and r["row"] == row and r.get("protocol") == protocol
    }


def _stats(values: Mapping[int, float]) -> tuple[float, float, int]:
    v = list(values.values())
    if not v:
        return float("nan"), float("nan"), 0
    return statistics.mean(v), (statistics.stdev(v) if len(v) > 1 else 0.0), len(v)


def verdict(a: Mapping[int, float], b: Mapping[int, float]) -> str:
    """``a`` against ``b``: *beats* / *loses* when the means differ by more than the larger of the two
    stds over seeds, else *ties within spread*; with the per-seed (paired) differences."""
    sa, sb = _stats(a), _stats(b)
    diff, spread = sa[0] - sb[0], max(sa[1], sb[1])
    paired = ", ".join(f"{a[s] - b[s]:+.3f}" for s in sorted(set(a) & set(b)))
    if sa[2] < 2 or sb[2] < 2:
        return f"{diff:+.4f} (one seed: no verdict)"
    word = "ties within spread" if abs(diff) <= spread else ("beats" if diff > 0 else "loses")
    return f"{word}: {diff:+.4f} vs spread {spread:.4f} (per seed {paired})"


def render(results: Mapping[str, Any], figure: str | None) -> str:
    """The generated markdown section: per protocol, the table and the verdicts."""
    from hyperkd.models.mae import SIZES, chip_patch_size

    runs, prov, b = results["runs"], results["provenance"], results["budget"]
    seeds = ", ".join(map(str, results["seeds"]))
    patch = chip_patch_size(b["size"], SIZES["tiny"]["patch_size"])
    grid = b["size"] // patch
    lines = [
        BEGIN,
        "",
        f"Generated by `{prov['command']}` on {prov['date']} ({prov['machine']}; runs already in the work "
        "folder with the same settings are reused).",
        "",
    ]
    if results.get("quick"):
        lines += ["**A `--quick` smoke run: a tiny budget and one seed, not a measurement.**", ""]
    lines += [
        f"Budget: every student is `tiny` ({patch} px patches on {b['size']} px chips, {grid}x{grid} tokens) "
        f"and MAE-pretrained for {b['steps']} steps of batch {b['batch']} (flips/rotations, 75 % masked); the "
        f"any-sensor student on {b['train_chips']} synthetic scenes rendered for EnMAP (202 bands) and a "
        f"PRISMA-like table (239 bands), one batch of one store per step, band dropout {b['band_dropout']}; "
        "each per-sensor student (and `any-own`) on its sensor's own training chips. Every fine-tune: "
        f"`hyperkd.finetune` defaults but the protocol ({b['finetune_epochs']} epochs), trained on all "
        f"training chips, scored on the test chips. Seeds {seeds} (each the pretraining and the fine-tuning "
        "seed of its row); mean ± sample std over the seeds. Verdicts on test mIoU: *beats* / *loses* "
        "when the means differ by more than the larger of the two stds, otherwise *ties within spread*; "
        "the per-seed differences are paired (same seed: same test chips, same head initialisation and "
        "batch order).",
        "",
    ]
    protocols = list(dict.fromkeys(r["protocol"] for r in runs))
    for protocol in protocols:
        what = " (the default: spectra + encoder features at pixel resolution)" if protocol == "fused" else ""
        lines += [
            f"**Protocol `{protocol}`**{what}:",
            "",
            "| unseen sensor | bands, GSD | train / test chips | row | test mIoU | overall accuracy |",
            "|---|---|---|---|---|---|",
        ]
        for name, s in results["sets"].items():
            for row in ROWS:
                mi = _stats(_values(runs, name, row, protocol, "miou"))
                ac = _stats(_values(runs, name, row, protocol, "overall_accuracy"))
                if mi[2]:
                    lines.append(
                        f"| {name} | {s['bands']}, {s['gsd_m']:g} m | {s['train_chips']} / {s['test_chips']} "
                        f"| {ROWS[row]} | {mi[0]:.3f} ± {mi[1]:.3f} | {ac[0]:.3f} ± {ac[1]:.3f} |"
                    )
        present = {r["row"] for r in runs if r["protocol"] == protocol}
        pairs = [p for p in PAIRS if {p[0], p[1]} <= present]
        lines += ["", "| unseen sensor | comparison | verdict on test mIoU |", "|---|---|---|"]
        for name in results["sets"]:
            for a, c in pairs:
                va, vc = _values(runs, name, a, protocol, "miou"), _values(runs, name, c, protocol, "miou")
                if va and vc:
                    lines.append(f"| {name} | {a} vs {c} | {verdict(va, vc)} |")
        lines.append("")
    ps = results["pretrain_s"]
    compute = sum(sum(v) for v in ps.values()) + sum(float(r["time_s"]) for r in runs)
    lines += [
        "Pretraining wall time, mean over seeds: "
        + ", ".join(f"{k} {statistics.mean(v):.0f} s" for k, v in ps.items())
        + f" (the same steps each; the time differs with the band count and the machine's load). All "
        f"pretraining and fine-tuning runs together took {compute / 60:.0f} min of wall time.",
        "",
    ]
    if figure:
        lines += [f"![test mIoU per unseen sensor and row, mean ± std over seeds]({figure})", ""]
    lines.append(END)
    return "\n".join(lines)


def figure(results: Mapping[str, Any], path: Path) -> Path:
    """Bar charts, one per protocol: test mIoU per unseen sensor and row, error bars = std over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs, names = results["runs"], list(results["sets"])
    protocols = list(dict.fromkeys(r["protocol"] for r in runs))
    fig, axes = plt.subplots(
        1, len(protocols), figsize=((1.8 + 1.9 * len(names)) * len(protocols), 3.4), squeeze=False
    )
    for ax, protocol in zip(axes[0], protocols, strict=True):
        present = [row for row in ROWS if any(r["row"] == row and r["protocol"] == protocol for r in runs)]
        w = 0.8 / len(present)
        for i, row in enumerate(present):
            st = [_stats(_values(runs, n, row, protocol, "miou")) for n in names]
            x = np.arange(len(names)) + (i - (len(present) - 1) / 2) * w
            ax.bar(x, [s[0] for s in st], w, yerr=[s[1] for s in st], capsize=3, label=row)
        lo = min(r["miou"] for r in runs if r["protocol"] == protocol)
        ax.set_ylim(max(0.0, lo - 0.1), None)
        ax.set_xticks(np.arange(len(names)), names)
        ax.set_ylabel("test mIoU")
        ax.set_title(f"unseen sensors, protocol {protocol}", fontsize=9)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--out", default="runs/anysensor_unseen", help="work folder (default: %(default)s)")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default: %(default)s)")
    ap.add_argument(
        "--sensors", default="emit-like,desis-like,potsdam", help="unseen sensors (default: %(default)s)"
    )
    ap.add_argument(
        "--rows", default=DEFAULT_ROWS, help=f"rows, among {', '.join(ROWS)} (default: %(default)s)"
    )
    ap.add_argument(
        "--protocols", default="", help="fine-tuning protocols, comma-separated (default: finetune's default)"
    )
    ap.add_argument("--potsdam", default=str(DEFAULT_DATA), help="the Potsdam tiles folder ('' to skip)")
    ap.add_argument("--steps", type=int, default=Budget.steps, help="pretraining steps of every student")
    ap.add_argument(
        "--quick", action="store_true", help="one seed, a tiny budget: a smoke run, not a measurement"
    )
    ap.add_argument("--docs", type=Path, default=None, help="rewrite the generated section of this page")
    ap.add_argument("--report-only", action="store_true", help="re-render OUT/results.json (no training)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    log.setLevel(logging.INFO)
    os.environ.setdefault("HYPERKD_DISABLE_PROGRESS", "1")
    import torch

    torch.set_num_threads(args.threads)
    work = Path(args.out) / ("quick" if args.quick else "")
    if args.report_only:
        results = _saved(work / "results.json")
        if results is None:
            raise SystemExit(
                f"{work / 'results.json'} does not exist or is not JSON; run the benchmark first"
            )
    else:
        results = run_benchmark(args)
        (work / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    fig = figure(results, work / "unseen.png")
    rel = None
    if args.docs is not None:
        target = args.docs.parent / "figures" / "any-sensor" / "unseen.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(fig, target)
        rel = "figures/any-sensor/unseen.png"
    block = render(results, rel)
    print(block)
    if args.docs is not None:
        write_generated(args.docs, block, BEGIN, END)
        log.info("wrote %s", args.docs)
    return results


if __name__ == "__main__":
    main()
