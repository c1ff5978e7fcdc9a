"""The quickstart: the whole HyperKD story on a laptop, with nothing downloaded, and honest.

``hyperkd quickstart`` (``make demo``) runs, on synthetic scenes built from real material
spectra (:func:`hyperkd.synth.kd_stores`):

1. **data** — a large multispectral (HLS) set for the teacher, a small hyperspectral
   (EnMAP) set for the student that lacks some crops and soils the teacher's set has, and a
   labelled EnMAP evaluation set (all classes);
2. **teacher** — by default ``prithvi-tiny-synth``, the small Prithvi-architecture teacher
   whose weights ship with hyperkd (``hyperkd teacher pretrain`` trained it for minutes on a
   large, varied synthetic HLS corpus; docs/teachers.md). ``--teacher tiny`` instead
   pretrains a *tiny* one on the HLS set here in seconds. Neither is NASA/IBM's Prithvi-EO;
   with real weights available, ``--teacher prithvi`` uses those;
3. **students**, same budget, for every seed: ``no-KD`` (plain MAE), ``HyperKD`` (the
   ``hyperkd`` recipe, trained teacher), ``random-teacher KD`` (same recipe, frozen
   random-init teacher of the same architecture);
4. **downstream** — frozen encoder + ``fused`` head (``finetune``'s default: encoder features
   and each pixel's spectrum at pixel resolution; ``protocol="frozen"`` is the paper's token-CNN
   head), label-scarce, for land cover and crop type, on the evaluation set; plus two more controls: the ``untrained
   encoder`` and a head on ``raw spectra``;
5. **report** — one table (mean ± std over seeds; ↑/↓ where a row beats/trails no-KD by more
   than the seed spread), figures, ``report.md`` / ``report.json``; ``--docs FILE`` also
   regenerates the documentation page from this run.

The point of the controls: a gain that the random teacher also gives is regularisation, not
knowledge transfer; a gain the untrained encoder or raw spectra also give says the
pretraining did not matter for that task.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hyperkd.core.io import atomic_write_text
from hyperkd.core.progress import DISABLE_ENV

logger = logging.getLogger(__name__)

ROWS = ("no-KD", "HyperKD", "random-teacher KD", "untrained encoder", "raw spectra")
TINY_TEACHER = {
    "patch_size": [1, 8, 8],
    "embed_dim": 64,
    "depth": 4,
    "num_heads": 4,
    "decoder_embed_dim": 32,
    "decoder_depth": 1,
    "decoder_num_heads": 4,
}
"""Architecture of the quickstart's tiny Prithvi-architecture teacher (64 px chips)."""


@dataclass
class QuickstartConfig:
    """Sizes of every stage. The defaults are the study docs/quickstart.md reports: 3 seeds x
    3 students, and 5 rows x 2 tasks x 3 seeds = 30 fine-tunes of the fused head (120 steps on
    12 chips of 64 px x 202 bands, about a minute each on 2 CPU cores): well over 10 minutes
    on 2 cores (the page prints the stage timings of its run). ``seeds=(0,)`` is a third of it."""

    seeds: tuple[int, ...] = (0, 1, 2)
    size: int = 64
    teacher_chips: int = 256
    student_chips: int = 48
    eval_chips: int = 64
    teacher_epochs: int = 10
    student_epochs: int = 12
    finetune_epochs: int | None = None  # None: finetune's default (>= 20 epochs, >= 120 steps)
    protocol: str = "fused"  # finetune's default head; "frozen" is the paper's token-CNN head
    train_chips: int = 12
    train_crop: int | None = (
        None  # finetune --train-crop; None: whole chips (32 px crops halved the time, lost mIoU)
    )
    tasks: tuple[str, ...] = ("landcover", "croptype")
    teacher: str = "prithvi-tiny-synth"  # packaged; "tiny" (trained here); or e.g. prithvi
    teacher_weights: str | None = None
    data_seed: int = 0
    extra_sets: tuple[str, ...] = field(default_factory=tuple)


# Messages from Lightning that say nothing about a quickstart-sized run (tiny stores, few steps).
_NOISE = (r".*LeafSpec.*", r".*smaller than the logging interval.*", r".*does not have many workers.*")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keep the console to the quickstart's own lines *while it runs*; the caller's settings come back.

    The warning filters live inside ``warnings.catch_warnings()``, Lightning's loggers get their
    level back and progress bars are switched off only for the run (``HYPERKD_DISABLE_PROGRESS``,
    restored on exit): nothing outlives the call.
    """
    # Lightning sets its loggers to INFO when it is first imported: import it before lowering them
    import lightning.pytorch  # noqa: F401

    names = ("lightning.pytorch", "lightning.fabric", "lightning")
    levels = {n: logging.getLogger(n).level for n in names}
    had_env = DISABLE_ENV in os.environ
    old_env = os.environ.get(DISABLE_ENV)
    with warnings.catch_warnings():
        for pattern in _NOISE:
            warnings.filterwarnings("ignore", message=pattern)
        for n in names:
            logging.getLogger(n).setLevel(logging.WARNING)
        os.environ.setdefault(DISABLE_ENV, "1")
        try:
            yield
        finally:
            for n, level in levels.items():
                logging.getLogger(n).setLevel(level)
            if had_env:
                os.environ[DISABLE_ENV] = old_env or ""
            else:
                os.environ.pop(DISABLE_ENV, None)


def _metric_names(tasks: Sequence[str]) -> list[str]:
    names = ["recon PSNR", "recon SAM"]
    for t in tasks:
        names += [f"{t} acc", f"{t} mIoU"]
    return names


def quickstart(
    out: str | Path = "demo",
    config: QuickstartConfig | None = None,
    *,
    docs: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run every stage into ``out`` (replaced); returns the report dict.

    ``log`` receives the progress lines (the CLI prints them); by default they go to this
    module's logger at INFO level.
    """
    with _quiet():
        return _run(out, config, docs=docs, log=log or logger.info)


def _run(
    out: str | Path,
    config: QuickstartConfig | None,
    *,
    docs: str | Path | None,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """:func:`quickstart`'s stages, run inside :func:`_quiet`."""
    from hyperkd.evaluation.compare import compare
    from hyperkd.evaluation.finetune import finetune
    from hyperkd.synth import kd_stores
    from hyperkd.training.distill import distill
    from hyperkd.training.runner import pretrain
    from hyperkd.training.teacher import pretrain_teacher

    cfg = config or QuickstartConfig()
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    t0 = time.time()
    timings: dict[str, float] = {}

    def stage(name: str, t: float) -> None:
        timings[name] = round(time.time() - t, 1)
        log(f"      done in {timings[name]} s (total {time.time() - t0:.0f} s)")

    # 1. data -------------------------------------------------------------------------------
    t = time.time()
    log(
        f"[1/5] synthesising SYNTHETIC stores: {cfg.teacher_chips} HLS chips (teacher), "
        f"{cfg.student_chips} EnMAP chips (student), {cfg.eval_chips} labelled EnMAP chips (evaluation)"
    )
    stores = kd_stores(
        out / "data",
        teacher_chips=cfg.teacher_chips,
        student_chips=cfg.student_chips,
        eval_chips=cfg.eval_chips,
        size=cfg.size,
        seed=cfg.data_seed,
    )
    stage("data", t)

    # 2. teacher ----------------------------------------------------------------------------
    t = time.time()
    if cfg.teacher == "tiny":
        log(
            f"[2/5] pretraining a tiny Prithvi-architecture teacher on the HLS set ({cfg.teacher_epochs} "
            "epochs; NOT NASA/IBM's Prithvi-EO)"
        )
        weights = str(
            pretrain_teacher(
                stores["teacher"],
                out / "teacher",
                epochs=cfg.teacher_epochs,
                batch_size=16,
                lr=1e-3,
                seed=cfg.data_seed,
                **TINY_TEACHER,
            )
        )
        teacher_name = "prithvi-eo-tiny"
        teacher_sets = [f"teacher.{k}={json.dumps(v)}" for k, v in TINY_TEACHER.items()]
        teacher_sets.append(f"teacher.img_size={cfg.size}")
    else:
        log(f"[2/5] teacher: {cfg.teacher} with weights {cfg.teacher_weights or 'default'}")
        weights = cfg.teacher_weights or "default"
        teacher_name = cfg.teacher
        teacher_sets = []
    stage("teacher", t)

    # 3. students ---------------------------------------------------------------------------
    t = time.time()
    common = [
        f"data.store={stores['student'].root}",
        f"trainer.max_epochs={cfg.student_epochs}",
        "trainer.figures=true",
        "data.batch_size=8",
    ]
    runs: dict[tuple[str, int], Path] = {}
    recon: dict[tuple[str, int], dict[str, float]] = {}
    for seed in cfg.seeds:
        log(
            f"[3/5] seed {seed}: students no-KD, HyperKD, random-teacher KD ({cfg.student_epochs} epochs each)"
        )
        sets = [*common, f"seed={seed}"]
        r = pretrain("mae", out / "runs" / f"no-KD-s{seed}", overrides=sets)
        runs[("no-KD", seed)], recon[("no-KD", seed)] = r.run_dir, r.metrics
        for row, w in (("HyperKD", weights), ("random-teacher KD", "none")):
            r = distill(
                "hyperkd",
                out / "runs" / f"{row.replace(' ', '-')}-s{seed}",
                teacher=teacher_name,
                teacher_weights=w,
                overrides=[*sets, *teacher_sets],
            )
            runs[(row, seed)], recon[(row, seed)] = r.run_dir, r.metrics
    stage("students", t)

    # 4. downstream -------------------------------------------------------------------------
    t = time.time()
    records: list[dict[str, Any]] = []
    for seed in cfg.seeds:
        log(
            f"[4/5] seed {seed}: frozen encoder + {cfg.protocol} head on {', '.join(cfg.tasks)} "
            f"({cfg.train_chips} labelled chips) for {len(ROWS)} rows"
        )
        for row in ROWS:
            metrics: dict[str, float] = {}
            if (row, seed) in recon:
                m = recon[(row, seed)]
                metrics["recon PSNR"] = m.get("val/psnr", float("nan"))
                metrics["recon SAM"] = m.get("val/sam_deg", float("nan"))
            for task in cfg.tasks:
                if row == "raw spectra":
                    student, init = "raw", "pretrained"
                elif row == "untrained encoder":
                    student, init = str(runs[("no-KD", seed)]), "random"
                else:
                    student, init = str(runs[(row, seed)]), "pretrained"
                res = finetune(
                    student=student,
                    init=init,
                    task=task,
                    store=stores["eval"],
                    out=out / "finetune" / f"{row.replace(' ', '-')}-{task}-s{seed}",
                    protocol=cfg.protocol,
                    seed=seed,
                    train_chips=cfg.train_chips,
                    epochs=cfg.finetune_epochs,
                    train_crop=cfg.train_crop,
                    figures=(seed == cfg.seeds[0]),
                )
                s = res.scalars
                metrics[f"{task} acc"] = s.get("overall_accuracy", float("nan"))
                metrics[f"{task} mIoU"] = s.get("miou", float("nan"))
            records.append({"row": row, "seed": seed, "metrics": metrics})
    stage("downstream", t)

    # 5. report -----------------------------------------------------------------------------
    t = time.time()
    log("[5/5] report")
    table = compare(records, metrics=_metric_names(cfg.tasks), reference="no-KD", order=ROWS)
    figs = out / "figures"
    figs.mkdir()
    _bar_figure(table, figs / "comparison.png")
    for row in ("no-KD", "HyperKD"):
        src = runs[(row, cfg.seeds[0])] / "figures" / "reconstruction.png"
        if src.exists():
            shutil.copy(src, figs / f"reconstruction_{row.replace(' ', '-')}.png")
    ft = out / "finetune" / f"HyperKD-{cfg.tasks[0]}-s{cfg.seeds[0]}" / "figures"
    for f in sorted(ft.glob("*.png")) if ft.exists() else []:
        shutil.copy(f, figs / f"finetune_HyperKD_{f.name}")
    stage("report", t)
    report = {
        "synthetic": True,
        "config": asdict(cfg),
        "teacher": {
            "name": teacher_name,
            "weights": weights,
            "note": {
                "tiny": "tiny Prithvi-architecture teacher trained here on synthetic HLS chips; "
                "not NASA/IBM's weights",
                "prithvi-tiny-synth": "small Prithvi-architecture teacher packaged with hyperkd, trained by "
                "`hyperkd teacher pretrain` on a synthetic HLS corpus (its card: hyperkd_prithvi/assets/"
                "prithvi-tiny-synth/README.md); not NASA/IBM's weights",
            }.get(cfg.teacher, ""),
        },
        "table": table.to_dict(),
        "records": records,
        "timings_s": timings,
        "seconds": round(time.time() - t0, 1),
        "reading": reading(table),
    }
    atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    md = render_markdown(report, table.markdown(), figure_prefix="figures/")
    atomic_write_text(out / "report.md", md)
    if docs:
        write_docs(out, Path(docs), report, table.markdown())
    log("")
    log(table.markdown())
    log("")
    log(report["reading"])
    log(f"report: {out / 'report.md'} ({report['seconds']} s)")
    return report


def reading(table: Any) -> str:
    """Plain words: did HyperKD beat both no-KD and the random-teacher control, and where?"""
    v = table.verdicts
    lines = []
    kd_better = [m for m, x in v.get("HyperKD", {}).items() if x == "better"]
    kd_worse = [m for m, x in v.get("HyperKD", {}).items() if x == "worse"]
    rnd_better = {m for m, x in v.get("random-teacher KD", {}).items() if x == "better"}
    hk = table.rows.get("HyperKD", {})
    rt = table.rows.get("random-teacher KD", {})
    lines.append(
        "HyperKD vs no-KD: "
        + (
            f"better beyond the seed spread on {', '.join(kd_better)}"
            if kd_better
            else "no difference beyond the seed spread"
        )
        + (f"; worse on {', '.join(kd_worse)}" if kd_worse else "")
        + "."
    )
    if kd_better:
        shared = [m for m in kd_better if m in rnd_better]
        if shared:
            lines.append(
                f"The random-teacher control also beats no-KD on {', '.join(shared)}: "
                "there, the gain is not evidence of knowledge transfer."
            )
    beats_rt, trails_rt = [], []
    for m in table.metrics:
        a, b = hk.get(m), rt.get(m)
        if a and b and a.values and b.values and abs(a.mean - b.mean) > a.std + b.std:
            (beats_rt if (a.mean > b.mean) == _up(m) else trails_rt).append(m)
    lines.append(
        "HyperKD vs the random-teacher control: "
        + (
            f"better beyond the seed spread on {', '.join(beats_rt)}"
            if beats_rt
            else "no difference beyond the seed spread"
        )
        + (f"; worse on {', '.join(trails_rt)}" if trails_rt else "")
        + "."
    )
    verdict = [m for m in kd_better if m in beats_rt]
    lines.append(
        "Evidence of knowledge transfer (HyperKD beats both no-KD and the random teacher): "
        + (", ".join(verdict) if verdict else "none in this run")
        + "."
    )
    for ctrl in ("untrained encoder", "raw spectra"):
        better = [m for m, x in v.get(ctrl, {}).items() if x == "better"]
        if better:
            lines.append(
                f"The {ctrl} control beats no-KD on {', '.join(better)}: pretraining did not help there."
            )
    return "\n".join(lines)


def _up(metric: str) -> bool:
    from hyperkd.evaluation.compare import better_direction

    return better_direction(
        metric.replace("recon ", "").replace(" acc", "/accuracy").replace(" mIoU", "/miou")
    )


def _bar_figure(table: Any, path: Path) -> None:
    import numpy as np
    from matplotlib.figure import Figure

    metrics = [m for m in table.metrics if not m.startswith("recon")]
    rows = list(table.rows)
    fig = Figure(figsize=(3.2 * len(metrics), 3.6))
    axes = fig.subplots(1, len(metrics), squeeze=False)
    for ax, m in zip(axes[0], metrics, strict=True):
        means = [table.rows[r][m].mean if m in table.rows[r] else np.nan for r in rows]
        stds = [table.rows[r][m].std if m in table.rows[r] else 0 for r in rows]
        ax.bar(
            range(len(rows)),
            means,
            yerr=stds,
            capsize=3,
            color=["#777", "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd"][: len(rows)],
        )
        ax.set_xticks(range(len(rows)), rows, rotation=35, ha="right", fontsize=8)
        ax.set_title(m, fontsize=9)
        lo = np.nanmin(np.array(means) - np.array(stds))
        ax.set_ylim(max(0.0, lo - 0.05), None)
    fig.suptitle("downstream (frozen encoder + head), mean ± std over seeds — SYNTHETIC data", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def crop_text(crop: int | None) -> str:
    """How the report names the head's training crops (``finetune --train-crop``)."""
    return f", the head trained on random {crop} px crops (`--train-crop {crop}`)" if crop else ""


def epochs_text(epochs: int | None) -> str:
    """The fine-tuning budget in words: a fixed epoch count, or ``hyperkd finetune``'s defaults."""
    if epochs:
        return f"{epochs} epochs"
    from hyperkd.training.finetune import MIN_EPOCHS, MIN_STEPS

    return (
        f"`hyperkd finetune`'s defaults (at least {MIN_EPOCHS} epochs and {MIN_STEPS} steps, "
        "class-weighted loss, the residual fused head)"
    )


def render_markdown(report: dict[str, Any], table_md: str, figure_prefix: str) -> str:
    """The report page (also used for docs/quickstart.md)."""
    c = report["config"]
    seeds = ", ".join(map(str, c["seeds"]))
    rule = report["table"]["rule"]
    reading_text = report.get("reading", "")
    return f"""# hyperkd quickstart report

Generated by `hyperkd quickstart` in {report["seconds"]} s. **All data are synthetic**
(scenes built from real earthlib spectra, see docs/synthetic-data.md): nothing here says how
a model does on real EnMAP imagery.

- data: {c["teacher_chips"]} HLS chips for the teacher; {c["student_chips"]} EnMAP chips for the
  students (some crops and soils absent, lower SNR); {c["eval_chips"]} labelled EnMAP chips for
  evaluation; {c["size"]} px.
- teacher: {report["teacher"]["name"]} ({report["teacher"]["note"] or report["teacher"]["weights"]}).
- students: tiny MAEs, {c["student_epochs"]} epochs each; seeds {seeds}.
- downstream: frozen encoder + `{c.get("protocol", "frozen")}` head, {c["train_chips"]} labelled training chips,
  {epochs_text(c.get("finetune_epochs"))}{crop_text(c.get("train_crop"))}; metrics on held-out evaluation chips.

Mean ± std over seeds. ↑ / ↓: better / worse than no-KD beyond the seed spread ({rule});
≈: within it. "recon" = masked reconstruction on the students' validation chips (PSNR dB,
SAM degrees); only the three pretrained students have it.

{table_md}

## What the controls say

{reading_text}

How to read the rows: **no-KD** is the same student trained on the same chips for the same
number of steps without a teacher — the reference. **random-teacher KD** distils from a
teacher of the same architecture that was never trained: whatever it gains over no-KD comes
from the extra loss terms and projector (regularisation), not from knowledge. So HyperKD shows
knowledge transfer only where it beats *both* no-KD and random-teacher KD beyond the seed
spread. **untrained encoder** tells what the architecture gives with no pretraining at all, and
**raw spectra** what a head gets from each pixel's spectrum alone; when these match or beat the
pretrained encoders, the pretraining is not what the task needed at this scale.

![comparison]({figure_prefix}comparison.png)

![no-KD reconstruction]({figure_prefix}reconstruction_no-KD.png)

![HyperKD reconstruction]({figure_prefix}reconstruction_HyperKD.png)

Stage timings (s): {", ".join(f"{k} {v}" for k, v in report["timings_s"].items())}.
"""


def docs_from_report(out: str | Path, docs: str | Path) -> Path:
    """Regenerate the docs page from a finished quickstart folder (its ``report.json``),
    with the same code the run used — for when the run was made without ``--docs``."""
    from hyperkd.core.errors import HyperKDError
    from hyperkd.evaluation.compare import compare

    out = Path(out)
    try:
        report = json.loads((out / "report.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise HyperKDError(f"{out}: not a finished quickstart folder ({exc})") from None
    table = compare(report["records"], metrics=report["table"]["metrics"], reference="no-KD", order=ROWS)
    report["reading"] = reading(table)  # recomputed from the records by the current code
    write_docs(out, Path(docs), report, table.markdown())
    return Path(docs)


def write_docs(out: Path, docs: Path, report: dict[str, Any], table_md: str) -> None:
    """Regenerate the documentation page and its figures from this run."""
    fig_dir = docs.parent / "figures" / "quickstart"
    fig_dir.mkdir(parents=True, exist_ok=True)
    for f in (out / "figures").glob("*.png"):
        shutil.copy(f, fig_dir / f.name)
    body = render_markdown(report, table_md, figure_prefix="figures/quickstart/")
    header = (
        "<!-- generated by `hyperkd quickstart --docs docs/quickstart.md`; do not edit by hand -->\n\n"
        "Run it yourself with `make demo` (or `hyperkd quickstart --out demo`).\n\n"
    )
    atomic_write_text(docs, header + body)
