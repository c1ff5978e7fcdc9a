#!/usr/bin/env python3
"""What makes MAE pretraining useful on a few dozen real tiles? Numbers for docs/training.md.

Pretrains one student per (variant, seed) on a chip store of real EnMAP tiles (the
``mae-small-data`` recipe, and that recipe with one thing changed), fine-tunes each with the
given protocols on the store's labels and scores it on a separate validation store; the
raw-spectra head (no encoder) and the untrained encoder are the controls. One pretraining seed
and one fine-tuning seed per row seed (0, 1, 2): the spread covers both.

    python benchmarks/small_data_pretrain.py                                # the docs' table
    python benchmarks/small_data_pretrain.py --variants small-data --seeds 0 --protocols linear

Defaults are the Potsdam tiles prepared as in docs/training.md (``hyperkd data prepare
IMAGES --out /tmp/pd/S_train --size 32``; 14 training and 2 validation tiles of 32 px,
labels 1-6, 0 = no label). Runs go to ``--out``; a run whose ``metrics.json`` exists is read,
not repeated, so the script can be re-run to add variants, seeds or protocols. Prints one
markdown table (mean ± std of mIoU and overall accuracy over the seeds, the pretraining wall
time) and the per-class IoU of each row.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

P4 = "student.min_grid=8"  # 4 px patches on 32 px chips
VARIANTS: dict[str, tuple[str, list[str], str]] = {
    "mae": ("mae", ["student.patch_size=8"], "recipe `mae` as before (8 px patches: 4x4 tokens, 10 epochs)"),
    "small-data": ("mae-small-data", [], "recipe `mae-small-data` (2 px patches: 16x16 tokens)"),
    "patch-4": ("mae-small-data", [P4], "`mae-small-data`, 4 px patches (8x8 tokens)"),
    "patch-8": ("mae-small-data", ["student.patch_size=8"], "`mae-small-data`, 8 px patches (4x4 tokens)"),
    "spectral-conv": (
        "mae-small-data",
        [P4, "student.embedding=spectral-conv"],
        "`mae-small-data`, 4 px patches, spectral 1-D conv stem",
    ),
    "mask-0.5": (
        "mae-small-data",
        [P4, "masker.ratio=0.5"],
        "`mae-small-data`, 4 px patches, mask ratio 0.5",
    ),
    "no-augment": (
        "mae-small-data",
        [P4, "data.augment=false"],
        "`mae-small-data`, 4 px patches, no flips/rotations",
    ),
}
"""name -> (recipe, --set overrides, what the row is)."""
CONTROLS = {
    "raw": "raw spectra, no encoder (the control)",
    "untrained": "`mae-small-data` architecture, random weights",
}


def effective(recipe: dict[str, Any], chip: int) -> dict[str, Any]:
    """The settings of ``recipe`` that decide the trained student, its patch size resolved for ``chip``
    px chips (``patch_size: 2`` and ``patch_size: auto, min_grid: 16`` train the same student on 32
    px chips; the recipes here build ``tiny`` students)."""
    from hyperkd.models.mae import MIN_GRID, SIZES, chip_patch_size

    student = dict(recipe["student"])
    min_grid = int(student.pop("min_grid", None) or MIN_GRID)
    if student.get("patch_size") in (None, "auto"):
        student["patch_size"] = chip_patch_size(chip, SIZES["tiny"]["patch_size"], min_grid)
    text = ("name", "description", "notes")  # words, not settings
    return {**{k: v for k, v in recipe.items() if k not in text}, "student": student}


def pretrain_run(out: Path, variant: str, seed: int, store: str) -> tuple[Path, float]:
    """The variant's pretraining run for ``seed`` (trained unless it exists) and its wall time."""
    from hyperkd import recipes
    from hyperkd.data.store import ChipStore
    from hyperkd.training.runner import pretrain

    recipe, sets, _ = VARIANTS[variant]
    run = out / "pretrain" / variant / f"s{seed}"
    timing = run / "bench_time.json"
    overrides = [f"data.store={store}", f"seed={seed}", "trainer.figures=false", *sets]
    wanted = recipes.resolve_for_run(recipe, overrides)
    chip = ChipStore(store).chip_size
    saved = recipes.load_recipe(run / "recipe.yaml") if timing.exists() else None
    if run.exists() and (saved is None or effective(saved, chip) != effective(wanted, chip)):
        # interrupted, or made with another recipe: train again, and fine-tune again on it
        shutil.rmtree(run)
        rows = [variant, "untrained"] if variant == "small-data" else [variant]  # same architecture
        for row in rows:
            for old in (out / "finetune" / row).glob(f"*/s{seed}"):
                shutil.rmtree(old)
    if not timing.exists():
        t0 = time.perf_counter()
        pretrain(wanted, run)
        timing.write_text(json.dumps({"seconds": time.perf_counter() - t0}))
    return run, float(json.loads(timing.read_text())["seconds"])


def finetune_run(
    out: Path, row: str, student: str, init: str, protocol: str, seed: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Test metrics of one fine-tune (run unless its metrics.json exists)."""
    from hyperkd.evaluation.finetune import finetune

    run = out / "finetune" / row / protocol / f"s{seed}"
    if not (run / "metrics.json").exists():
        finetune(
            student=student,
            init=init,
            task="segmentation",
            store=args.train,
            labels=args.labels,
            label_nodata=0,
            eval_store=args.val,
            protocol=protocol,
            seed=seed,
            out=run,
            figures=False,
            overwrite=True,
        )
    return dict(json.loads((run / "metrics.json").read_text())["metrics"])


def mean_std(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", default="/tmp/pd/S_train", help="chip store to pretrain and fine-tune on")
    ap.add_argument("--val", default="/tmp/pd/S_val", help="chip store to score on")
    ap.add_argument("--labels", default="../shared/data/enmap-potsdam/labels")
    ap.add_argument("--out", default="/tmp/small_data_pretrain", help="run folders (reused when present)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--protocols", nargs="+", default=["linear", "frozen"])
    rows = [
        "raw",
        "untrained",
        "mae",
        "small-data",
        "patch-4",
        "patch-8",
        "spectral-conv",
        "mask-0.5",
        "no-augment",
    ]
    ap.add_argument("--variants", nargs="+", default=rows, choices=[*CONTROLS, *VARIANTS])
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: least contention on a shared CPU)"
    )
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    os.environ.setdefault("HYPERKD_PROGRESS", "0")
    out = Path(args.out)
    print(f"# {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")

    results: dict[str, dict[str, Any]] = {}
    for row in args.variants:
        res: dict[str, Any] = {"pretrain_s": [], **{p: [] for p in args.protocols}}
        for seed in args.seeds:
            if row == "raw":
                student, init = "raw", "pretrained"
            elif row == "untrained":
                student, init = str(pretrain_run(out, "small-data", seed, args.train)[0]), "random"
            else:
                run, seconds = pretrain_run(out, row, seed, args.train)
                student, init = str(run), "pretrained"
                res["pretrain_s"].append(seconds)
            for protocol in args.protocols:
                m = finetune_run(out, row, student, init, protocol, seed, args)
                res[protocol].append(m)
                print(f"{row} {protocol} seed {seed}: mIoU {m['miou']:.3f}", flush=True)
        results[row] = res

    print("\n| row | " + " | ".join(f"{p} mIoU | {p} acc" for p in args.protocols) + " | pretrain s |")
    print("|---|" + "---|---|" * len(args.protocols) + "---|")
    for row, res in results.items():
        what = CONTROLS.get(row) or VARIANTS[row][2]
        cells = []
        for p in args.protocols:
            cells += [
                mean_std([m["miou"] for m in res[p]]),
                mean_std([m["overall_accuracy"] for m in res[p]]),
            ]
        secs = f"{statistics.mean(res['pretrain_s']):.0f}" if res["pretrain_s"] else "-"
        print(f"| {row}: {what} | " + " | ".join(cells) + f" | {secs} |")
    print(f"\nmean ± sample std over seeds {args.seeds}; scored on {args.val}")

    print("\nper-class IoU (mean over seeds):")
    for row, res in results.items():
        for p in args.protocols:
            per = [m["per_class"] for m in res[p]]
            names = list(per[0])
            cls = ", ".join(
                f"{n} {statistics.mean(float(x[n]['iou']) for x in per):.2f}"
                for n in names
                if isinstance(per[0][n], dict) and "iou" in per[0][n]
            )
            print(f"  {row} / {p}: {cls}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
