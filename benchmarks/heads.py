#!/usr/bin/env python3
"""Which fine-tuning protocol should ``hyperkd finetune`` default to? Numbers for docs/tasks.md.

Every row fine-tunes one (encoder, protocol, loss) for each seed and scores the test chips
(mIoU over the labelled classes, overall accuracy; mean ± std over the seeds):

* ``real``: the real EnMAP Potsdam tiles (``DATA``, default ``../shared/data/enmap-potsdam``):
  the 14 tiles of ``train_files.csv`` are prepared into a 32 px chip store and train the
  model (10 % of them validate), the 2 tiles of ``validation_files.csv`` are the test set;
  labels are the ``labels/`` tiles with 0 = no label. The pretrained encoder is MAE-pretrained
  here on the 14 training tiles (recipe ``mae-small-data`` when it exists, else ``mae`` with
  4 px patches; or ``--student FOLDER``).
* ``synth``: the quickstart's synthetic setting, small: the ``kd_stores`` student set
  (48 EnMAP chips of 64 px) pretrains an MAE student (12 epochs, as the quickstart), and
  the ``landcover`` task is fine-tuned on 12 labelled chips of the evaluation set (15 epochs)
  and scored on its held-out test chips.

Rows are data (:data:`REAL_ROWS`, :data:`SYNTH_ROWS`): the raw-spectra control with the
token protocols' head (``frozen`` -> PixelCNNHead) and with the new pixel-resolution heads,
the untrained-encoder control, the pretrained encoder under each protocol, and the losses.
Results are kept in ``WORK/results.json`` (a rerun only computes missing runs);
``--docs docs/tasks.md`` rewrites the generated section of that page.

    python benchmarks/heads.py                          # both parts, seeds 0,1,2 (~15 CPU-minutes)
    python benchmarks/heads.py --quick                  # seed 0, 3 epochs: a smoke run
    python benchmarks/heads.py --docs docs/tasks.md     # and write the tables into the docs
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import platform
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_potsdam_parts import write_generated

BEGIN = "<!-- benchmarks/heads.py: begin (generated, do not edit by hand) -->"
END = "<!-- benchmarks/heads.py: end -->"


@dataclass(frozen=True)
class Row:
    """One table row: how the encoder is obtained and how it is fine-tuned."""

    name: str
    encoder: str  # raw | untrained | pretrained
    protocol: str
    loss: str = "ce"


REAL_ROWS = [
    Row("raw spectra, token-protocol raw head (`frozen`: PixelCNNHead)", "raw", "frozen"),
    Row("raw spectra, `fused` head", "raw", "fused"),
    Row("raw spectra, `fused` head, weighted loss", "raw", "fused", "weighted"),
    Row("raw spectra, `fused` head, focal loss", "raw", "fused", "focal"),
    Row("raw spectra, `upernet` head", "raw", "upernet"),
    Row("untrained encoder, `fused`", "untrained", "fused"),
    Row("pretrained, `frozen` (paper: CNN head on tokens)", "pretrained", "frozen"),
    Row("pretrained, `fused`", "pretrained", "fused"),
    Row("pretrained, `fused`, weighted loss", "pretrained", "fused", "weighted"),
    Row("pretrained, `fused-full`", "pretrained", "fused-full"),
    Row("pretrained, `upernet`", "pretrained", "upernet"),
]
SYNTH_ROWS = [
    Row("raw spectra, token-protocol raw head (`frozen`: PixelCNNHead)", "raw", "frozen"),
    Row("raw spectra, `fused` head", "raw", "fused"),
    Row("raw spectra, `fused` head, weighted loss", "raw", "fused", "weighted"),
    Row("untrained encoder, `fused`", "untrained", "fused"),
    Row("pretrained, `frozen` (paper: CNN head on tokens)", "pretrained", "frozen"),
    Row("pretrained, `fused`", "pretrained", "fused"),
    Row("pretrained, `fused`, weighted loss", "pretrained", "fused", "weighted"),
    Row("pretrained, `upernet`", "pretrained", "upernet"),
]

log = logging.getLogger("heads")


# ----------------------------------------------------------------------------------------------
# Data and students
# ----------------------------------------------------------------------------------------------


def _tiles(data: Path, listing: str) -> list[Path]:
    with open(data / listing, newline="") as f:
        return [data / r["image"] for r in csv.DictReader(f)]


def real_setup(data: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Prepared train/test stores of the real tiles and the pretrained student (made once)."""
    from hyperkd.data.prepare import prepare
    from hyperkd.data.store import ChipStore

    stores = {}
    for part, listing in (("train", "train_files.csv"), ("test", "validation_files.csv")):
        folder = work / "real" / f"store-{part}"
        if (folder / "manifest.json").exists():
            stores[part] = ChipStore(folder)
        else:
            stores[part] = prepare(_tiles(data, listing), folder, size=32, progress=False)
    student = Path(args.student) if args.student else _pretrain_real(stores["train"], work, args)
    return {
        "store": stores["train"],
        "eval_store": stores["test"],
        "labels": data / "labels",
        "label_nodata": 0,
        "task": "segmentation",
        "student": student,
        "epochs": 3 if args.quick else 20,
    }


def _recipe() -> tuple[str, list[str]]:
    from hyperkd.recipes import available

    if "mae-small-data" in available():
        return "mae-small-data", []
    return "mae", ["student.patch_size=4"]  # 8 px patches leave a 4 x 4 grid on 32 px chips


def _pretrain_real(store: Any, work: Path, args: argparse.Namespace) -> Path:
    from hyperkd.training.runner import pretrain

    run = work / "real" / "pretrain"
    if (run / "student" / "config.json").exists():
        return run
    recipe, sets = _recipe()
    sets += [f"data.store={store.root}", "seed=0", "trainer.figures=false"]
    if args.pretrain_epochs or args.quick:
        sets.append(f"trainer.max_epochs={2 if args.quick else args.pretrain_epochs}")
    log.info("pretraining the real-data student: recipe %s %s", recipe, " ".join(sets))
    return pretrain(recipe, run, overrides=sets).run_dir


def synth_setup(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The quickstart's synthetic stores (small) and an MAE student pretrained on its student set."""
    from hyperkd.data.store import ChipStore
    from hyperkd.synth import kd_stores
    from hyperkd.training.runner import pretrain

    root = work / "synth" / "data"
    if (root / "eval-enmap" / "manifest.json").exists():
        stores = {r: ChipStore(root / f) for r, f in (("student", "student-enmap"), ("eval", "eval-enmap"))}
    else:
        stores = kd_stores(root, teacher_chips=8, student_chips=48, eval_chips=64, size=64, seed=0)
    run = work / "synth" / "pretrain"
    if not (run / "student" / "config.json").exists():
        epochs = 2 if args.quick else 12
        sets = [f"data.store={stores['student'].root}", f"trainer.max_epochs={epochs}", "seed=0"]
        run = pretrain("mae", run, overrides=[*sets, "trainer.figures=false", "data.batch_size=8"]).run_dir
    return {
        "store": stores["eval"],
        "task": "landcover",
        "train_chips": 12,
        "student": run,
        "epochs": 3 if args.quick else 15,
    }


# ----------------------------------------------------------------------------------------------
# Runs
# ----------------------------------------------------------------------------------------------


def run_row(setup: dict[str, Any], row: Row, seed: int, out: Path) -> dict[str, Any]:
    """Fine-tune one row at one seed; the test metrics that the tables use."""
    from hyperkd.evaluation.finetune import finetune

    kw = {k: v for k, v in setup.items() if k not in ("student",)}
    student = "raw" if row.encoder == "raw" else str(setup["student"])
    init = "random" if row.encoder == "untrained" else "pretrained"
    t = time.time()
    res = finetune(
        student=student,
        init=init,
        protocol=row.protocol,
        loss=row.loss,
        seed=seed,
        out=out,
        figures=False,
        overwrite=True,
        **kw,
    )
    m = res.metrics
    return {
        "miou": m["miou"],
        "overall_accuracy": m["overall_accuracy"],
        "per_class_iou": {k: c["iou"] for k, c in (m.get("per_class") or {}).items()},
        "time_s": round(time.time() - t, 1),
    }


def _mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def render(results: dict[str, Any], seeds: list[int], meta: dict[str, Any]) -> str:
    """The generated markdown: one table per part, per-class IoU of the real part."""
    lines = [BEGIN, "", f"Generated by `{meta['command']}` on {meta['date']} ({meta['machine']}).", ""]
    titles = {
        "real": "Real EnMAP tiles (Potsdam; 14 training tiles, scored on the 2 validation tiles)",
        "synth": "Synthetic landcover (the quickstart's setting: 12 labelled chips of 64 px)",
    }
    for part, rows in (("real", REAL_ROWS), ("synth", SYNTH_ROWS)):
        done = {r.name: [results.get(f"{part}|{r.name}|{s}") for s in seeds] for r in rows}
        if not any(v for runs in done.values() for v in runs):
            continue
        lines += [f"**{titles[part]}**, seeds {', '.join(map(str, seeds))}:", ""]
        lines += ["| row | test mIoU | overall accuracy | s / run |", "|---|---|---|---|"]
        for r in rows:
            runs = [x for x in done[r.name] if x]
            if not runs:
                continue
            miou = _mean_std([x["miou"] for x in runs])
            acc = _mean_std([x["overall_accuracy"] for x in runs])
            sec = statistics.mean(x["time_s"] for x in runs)
            lines.append(f"| {r.name} | {miou} | {acc} | {sec:.0f} |")
        lines.append("")
        if part == "real":
            classes = next(iter(x for runs in done.values() for x in runs if x))["per_class_iou"].keys()
            lines += [
                "Per-class IoU, mean over the seeds:",
                "",
                "| row | " + " | ".join(classes) + " |",
                "|---|" + "---|" * len(classes),
            ]
            for r in rows:
                runs = [x for x in done[r.name] if x]
                if runs:
                    cells = []
                    for c in classes:
                        v = [x["per_class_iou"][c] for x in runs if x["per_class_iou"].get(c) is not None]
                        cells.append(f"{statistics.mean(v):.2f}" if v else "–")
                    lines.append(f"| {r.name} | " + " | ".join(cells) + " |")
            lines.append("")
    lines.append(END)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("data", nargs="?", default="../shared/data/enmap-potsdam", type=Path)
    ap.add_argument("--work", default="runs/heads", type=Path, help="work folder (results.json, runs)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--parts", default="real,synth", help="real, synth or both")
    ap.add_argument("--rows", default="", help="only rows whose name contains one of these (comma list)")
    ap.add_argument("--student", default=None, help="a pretrained student for the real part")
    ap.add_argument("--pretrain-epochs", type=int, default=0, help="real-part pretraining (0: recipe's)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    ap.add_argument("--quick", action="store_true", help="seed 0, 3 fine-tune epochs, 2 pretraining")
    ap.add_argument("--docs", type=Path, default=None, help="rewrite the generated section of this page")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for name in ("lightning.pytorch", "lightning.fabric", "lightning", "hyperkd"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    from hyperkd.core.progress import DISABLE_ENV

    os.environ[DISABLE_ENV] = "1"
    import torch

    torch.set_num_threads(args.threads)
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    work = args.work / ("quick" if args.quick else "")
    work.mkdir(parents=True, exist_ok=True)
    store = work / "results.json"
    results: dict[str, Any] = json.loads(store.read_text()) if store.exists() else {}
    wanted = [w for w in args.rows.split(",") if w]
    for part in args.parts.split(","):
        setup = real_setup(args.data, work, args) if part == "real" else synth_setup(work, args)
        for row in REAL_ROWS if part == "real" else SYNTH_ROWS:
            if wanted and not any(w in row.name for w in wanted):
                continue
            for seed in seeds:
                key = f"{part}|{row.name}|{seed}"
                if key in results:
                    continue
                out = work / part / "finetune" / f"{row.encoder}-{row.protocol}-{row.loss}-s{seed}"
                results[key] = run_row(setup, row, seed, out)
                store.write_text(json.dumps(results, indent=1))
                log.info(
                    "%-6s %-62s s%d  mIoU %.4f  (%.0f s)",
                    part,
                    row.name,
                    seed,
                    results[key]["miou"],
                    results[key]["time_s"],
                )
    meta = {
        "command": "python benchmarks/heads.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} torch thread(s), CPU",
    }
    block = render(results, seeds, meta)
    print(block)
    if args.docs is not None:
        write_generated(args.docs, block, BEGIN, END)


if __name__ == "__main__":
    main()
