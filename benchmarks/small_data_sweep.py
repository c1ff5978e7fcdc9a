#!/usr/bin/env python3
"""Does a longer or differently shaped ``mae-small-data`` pretraining add to the spectra on the
real Potsdam tiles? A parallel search, sized for one GPU (it also runs on a CPU, slowly).

Every row: :func:`hyperkd.pretrain` (recipe ``mae-small-data`` plus the row's overrides) on the
14 training tiles, then :func:`hyperkd.finetune` with its defaults (the residual fused head,
weighted loss), scored on the 2 validation tiles; pretraining seed = fine-tuning seed, so the
spread covers both. ``raw`` is the same head on the spectra alone. Rows run ``--jobs`` at a time
in separate processes (small models leave a GPU mostly idle; on an H200, 14 at once). Each
result is appended to ``OUT/sweep.jsonl`` as it arrives; a markdown table is printed last.
No new row starts after ``--budget`` seconds, so a lease-bound run returns what finished.

    python benchmarks/small_data_sweep.py --out /tmp/sweep --jobs 14 --budget 110 \
        --rows long xlong long-p4 small-data raw     # the run quoted in docs/training.md

The stores are those ``benchmarks/real_potsdam.py`` prepares (``runs/real_potsdam/stores``);
the labels are ``../shared/data/enmap-potsdam/labels``.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import time
import warnings
from pathlib import Path

STORES = Path(os.environ.get("SWEEP_STORES", "runs/real_potsdam/stores")).resolve()
LABELS = Path(os.environ.get("SWEEP_LABELS", "../shared/data/enmap-potsdam/labels")).resolve()
P4 = "student.min_grid=8"
L = "trainer.max_epochs=600"  # 1800 steps
XL = "trainer.max_epochs=2000"  # 6000 steps
VARIANTS: dict[str, tuple[str, list[str]]] = {  # row -> (kind, overrides of mae-small-data)
    "raw": ("raw", []),
    "small-data": ("mae-small-data", []),
    "long": ("mae-small-data", [L]),
    "xlong": ("mae-small-data", [XL]),
    "long-p4": ("mae-small-data", [L, P4]),
    "long-m0.5": ("mae-small-data", [L, "masker.ratio=0.5"]),
    "long-m0.9": ("mae-small-data", [L, "masker.ratio=0.9"]),
    "long-sconv": ("mae-small-data", [L, "student.embedding=spectral-conv"]),
    "xlong-all16": ("mae-small-data", [XL, "data.store=ALL"]),
    "untrained": ("untrained", ["trainer.max_steps=1"]),
}


def job(args: tuple[str, int, str, bool]) -> dict:
    name, seed, work, quick = args
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import torch

    torch.set_num_threads(2)
    import hyperkd

    recipe, sets = VARIANTS[name]
    t0 = time.time()
    student, init, steps = "raw", "pretrained", 0
    if recipe != "raw":
        out = Path(work) / "enc" / f"{name}-s{seed}"
        shutil.rmtree(out, ignore_errors=True)
        store = STORES / ("all" if "data.store=ALL" in sets else "train")
        sets = [s for s in sets if s != "data.store=ALL"]
        if quick:
            sets = [*sets, "trainer.max_steps=3"]
        res = hyperkd.pretrain(
            "mae-small-data",
            out,
            overrides=[f"data.store={store}", f"seed={seed}", "trainer.figures=false", *sets],
        )
        steps = res.global_step
        student = str(out)
        init = "random" if recipe == "untrained" else "pretrained"
    t1 = time.time()
    fout = Path(work) / "ft" / f"{name}-s{seed}"
    r = hyperkd.finetune(
        student=student,
        init=init,
        task="segmentation",
        store=STORES / "train",
        labels=LABELS,
        label_nodata=0,
        eval_store=STORES / "val",
        out=fout,
        seed=seed,
        val_fraction=0.0,
        test_fraction=0.0,
        figures=False,
        overwrite=True,
        **({"epochs": 1} if quick else {}),
    )
    m = r.scalars
    per = r.metrics.get("per_class")
    return {
        "row": name,
        "seed": seed,
        "miou": m["miou"],
        "acc": m.get("overall_accuracy"),
        "per_class": per,
        "pretrain_steps": steps,
        "pretrain_s": round(t1 - t0, 1),
        "finetune_s": round(time.time() - t1, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", default="/tmp/sweep")
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--budget", type=float, default=330.0, help="seconds; no new job starts after")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument(
        "--rows",
        nargs="+",
        default=[
            "xlong",
            "xlong-all16",
            "long",
            "long-p4",
            "long-m0.5",
            "long-m0.9",
            "long-sconv",
            "small-data",
            "raw",
            "untrained",
        ],
    )
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    todo = [(r, s, a.work, a.quick) for r in a.rows for s in a.seeds]  # rows in priority order
    # longest first within the priority order keeps the pool busy to the end
    t0 = time.time()
    results: list[dict] = []
    ctx = mp.get_context("spawn")
    with ctx.Pool(a.jobs, maxtasksperchild=1) as pool:
        pending = []
        queue = list(todo)
        while queue or pending:
            while queue and len(pending) < a.jobs and time.time() - t0 < a.budget:
                j = queue.pop(0)
                pending.append((j, pool.apply_async(job, (j,))))
            if time.time() - t0 >= a.budget and queue:
                print(f"budget reached: {len(queue)} jobs not started", flush=True)
                queue = []
            done = [(j, h) for j, h in pending if h.ready()]
            for j, h in done:
                pending.remove((j, h))
                try:
                    rec = h.get()
                except Exception as e:
                    rec = {"row": j[0], "seed": j[1], "error": f"{type(e).__name__}: {e}"[:400]}
                rec["t"] = round(time.time() - t0, 1)
                results.append(rec)
                with open(out / "sweep.jsonl", "a") as f:
                    f.write(json.dumps(rec) + "\n")
                print(json.dumps(rec), flush=True)
            time.sleep(0.5)
    print(f"\n| row | n | mIoU | acc | pretrain steps | pretrain s |  ({time.time() - t0:.0f} s)")
    for r in a.rows:
        rs = [x for x in results if x["row"] == r and "miou" in x]
        if not rs:
            continue
        mi = [x["miou"] for x in rs]
        sd = statistics.pstdev(mi) if len(mi) > 1 else 0.0
        print(
            f"| {r} | {len(rs)} | {statistics.mean(mi):.3f} ± {sd:.3f} [{' '.join(f'{v:.3f}' for v in mi)}] "
            f"| {statistics.mean(x['acc'] or 0 for x in rs):.3f} | {rs[0]['pretrain_steps']} "
            f"| {statistics.mean(x['pretrain_s'] for x in rs):.0f} |"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
