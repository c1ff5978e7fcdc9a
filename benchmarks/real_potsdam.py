#!/usr/bin/env python3
"""hyperkd on real EnMAP imagery: the Potsdam tiles, every row against the practitioners' baselines.

The EnMAP-Box project's public Potsdam tiles (``../shared/data/enmap-potsdam``, read its
SOURCE.md: 16 EnMAP L2A tiles of 32 x 32 px as the EnMAP-Box exports them, labels 0 = no label,
1-6 = land cover) are prepared *as they are* with :func:`hyperkd.prepare` (the ``raster``
reader, no wrapper), split as EnMAP-Box split them (``train_files.csv``: 14 tiles,
``validation_files.csv``: 2 tiles), and every row is scored on the labelled pixels of the two
validation tiles, for every seed:

* hyperkd rows, through the public API only (:func:`hyperkd.pretrain`, :func:`hyperkd.distill`,
  :func:`hyperkd.finetune`, :func:`hyperkd.predict`): a head on the raw spectra, the untrained
  encoder, a student MAE-pretrained on the training tiles, a student distilled from a
  Prithvi-architecture teacher (``--teacher``) and the random-teacher control;
* the practitioners' baselines, per pixel with scikit-learn (the ``bench`` extra): a random
  forest (500 trees) on reflectance and an RBF SVM on standardised reflectance, trained on
  exactly the labelled pixels the hyperkd heads train on.

Every fine-tune trains on all 14 training tiles (``val_fraction=0``: nothing selects on a
validation split) and is tested on the 2 validation tiles. The rows are data (:data:`ROWS`):
another protocol, recipe, teacher or label fraction is one more line. The script writes
``OUT/results.json`` (every run's metrics), ``OUT/report.md`` and the maps figure, and with
``--docs docs/real-data.md`` regenerates that page (figure in ``docs/figures/real-data/``)::

    python benchmarks/real_potsdam.py --docs docs/real-data.md    # 3 seeds; the page says how long it took
    python benchmarks/real_potsdam.py --quick --rows raw,rf        # 1 seed, tiny budget, ~30 s
    python benchmarks/real_potsdam.py --report-only --docs docs/real-data.md   # re-render OUT/results.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import inspect
import json
import logging
import math
import shlex
import shutil
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the report half beside this script
from real_potsdam_parts import (
    METRICS,
    aggregate,
    baseline_metrics,
    curve_table,
    dropped_text,
    machine,
    maps_figure,
    paste,
    pixels,
    render_markdown,
    sklearn_model,
    split_files,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "enmap-potsdam"
LABEL_NODATA = 0.0
DEFAULT_TEACHER = "prithvi-tiny-synth"
"""The small trained Prithvi-architecture teacher shipped with hyperkd (not NASA/IBM's Prithvi-EO)."""

log = logging.getLogger("real_potsdam")


# ----------------------------------------------------------------------------------------------
# What is compared: rows as data
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One table row: how its model is obtained and how it is fine-tuned.

    ``kind``: ``raw`` (a head on the pixel spectra), ``pretrain`` (:func:`hyperkd.pretrain`
    with ``recipe``), ``distill`` (:func:`hyperkd.distill` with ``recipe`` from the
    ``--teacher``, ``teacher="random"``: the same architecture with random weights),
    ``untrained`` (the encoder of row ``of`` with ``init="random"``) or ``sklearn``
    (``recipe`` ``rf`` / ``svm``, per pixel); a ``pretrain``/``distill`` row with ``of`` reuses
    that row's encoders. ``overrides`` are recipe ``key=value`` strings, ``finetune`` extra
    keyword arguments of :func:`hyperkd.finetune` (``protocol``, ``loss``, ``epochs``...).
    ``pretrain_on``: the imagery the encoder trains on, ``train`` (the 14 training tiles) or
    ``all`` (all 16 tiles' images, the 2 validation tiles included but never their labels: the
    transductive setting of a user who pretrains on the scene they map). ``own_budget``: keep the recipe's own steps and batch size instead
    of the benchmark's :class:`Budget`; ``default``: part of the default selection (else only
    ``--rows KEY`` or ``--rows all`` runs it).
    """

    key: str
    name: str
    kind: str
    recipe: str | None = None
    teacher: str | None = None
    of: str | None = None
    overrides: tuple[str, ...] = ()
    finetune: Mapping[str, Any] = field(default_factory=dict)
    own_budget: bool = False
    default: bool = True
    pretrain_on: str = "train"

    @property
    def encoder(self) -> bool:
        """A row with an encoder (pretrained, distilled or untrained)."""
        return self.kind in ("pretrain", "distill", "untrained")


PATCH4 = ("student.patch_size=4",)  # 8 px patches leave a 4 x 4 token grid on a 32 px chip
PREVIOUS = {"loss": "ce", "epochs": 20, "fusion": "concat"}
"""``hyperkd finetune``'s defaults before the residual fused head, the weighted loss and the 120-step floor."""
SMALL = dict(recipe="mae-small-data", own_budget=True)
ROWS: tuple[Row, ...] = (
    Row("raw", "raw spectra", "raw"),
    Row("untrained", "untrained encoder", "untrained", of="mae-small"),
    Row("mae", "MAE-pretrained (patch 4)", "pretrain", recipe="mae", overrides=PATCH4),
    Row("kd", "HyperKD (patch 4)", "distill", recipe="hyperkd", teacher="trained", overrides=PATCH4),
    Row(
        "kd-random",
        "random-teacher KD (patch 4)",
        "distill",
        recipe="hyperkd",
        teacher="random",
        overrides=PATCH4,
    ),
    Row("mae-small", "MAE, recipe mae-small-data", "pretrain", **SMALL),  # type: ignore[arg-type]
    Row(
        "mae-small-all",
        "MAE, recipe mae-small-data, pretrained on all 16 tiles' images",
        "pretrain",
        pretrain_on="all",
        **SMALL,  # type: ignore[arg-type]
    ),
    # the fine-tuning defaults before this page's protocol (issue 13): what the change bought
    Row("raw-prev", "raw spectra, previous defaults", "raw", finetune=PREVIOUS, default=False),
    Row(
        "mae-small-prev",
        "MAE, recipe mae-small-data, previous defaults",
        "pretrain",
        of="mae-small",  # the same encoders, fine-tuned differently
        finetune=PREVIOUS,
        default=False,
        **SMALL,  # type: ignore[arg-type]
    ),
    Row("rf", "random forest", "sklearn", recipe="rf"),
    Row("svm", "RBF SVM", "sklearn", recipe="svm"),
)
"""The rows; ``--rows raw,rf`` picks some by key, ``--rows all`` takes every one."""


@dataclass(frozen=True)
class Budget:
    """Training budget of every row (the same for every seed)."""

    pretrain_steps: int = 100
    batch_size: int = 4
    finetune_epochs: int | None = None  # None: hyperkd.finetune's default (>= 20 epochs and >= 120 steps)
    rf_trees: int = 500


QUICK = Budget(pretrain_steps=6, batch_size=4, finetune_epochs=2, rf_trees=50)
"""``--quick``: a smoke run (one seed), not a measurement."""


def scarce_keys(keys: str, rows: Sequence[Row]) -> list[str]:
    """The ``--scarce-rows`` keys that are among the selected ``rows`` (in their order)."""
    wanted = {k.strip() for k in keys.split(",") if k.strip()}
    return [r.key for r in rows if r.key in wanted]


def select_rows(keys: str | None) -> list[Row]:
    """The rows named by comma-separated ``keys`` (default: the default rows; ``all``), in :data:`ROWS` order."""
    if not keys:
        return [r for r in ROWS if r.default]
    if keys == "all":
        return list(ROWS)
    wanted = [k.strip() for k in keys.split(",") if k.strip()]
    known = {r.key for r in ROWS}
    unknown = [k for k in wanted if k not in known]
    if unknown:
        raise SystemExit(f"--rows: unknown row(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return [r for r in ROWS if r.key in wanted]


# ----------------------------------------------------------------------------------------------
# Data: the tiles as they are, split by the given lists
# ----------------------------------------------------------------------------------------------


def prepare_split(files: Sequence[Path], work: Path, split: str) -> Any:
    """A chip store of ``files`` (32 px chips, the tiles as they are), built once in ``work``.

    The split's files are linked into ``work/images/<split>/`` so :func:`hyperkd.prepare`
    reads exactly them.
    """
    import hyperkd
    from hyperkd.data.store import ChipStore

    out = work / "stores" / split
    if (out / "manifest.json").exists():
        store = ChipStore(out)
        if sorted(c["source"] for c in store.chips) == sorted(f.stem for f in files):
            return store
        shutil.rmtree(out)
    folder = work / "images" / split
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for f in files:
        (folder / f.name).symlink_to(f.resolve())
    store = hyperkd.prepare([folder], out, size=32, progress=False)
    log.info("prepared %s: %d chips, %d bands", split, len(store), store.sensor.num_bands)
    return store


def finetune_defaults() -> dict[str, Any]:
    """:func:`hyperkd.finetune`'s defaults that shape a run (a saved run with other ones is redone)."""
    import hyperkd
    from hyperkd.training import finetune as ft

    params = inspect.signature(hyperkd.finetune).parameters
    return {
        **{k: params[k].default for k in ("protocol", "loss", "fusion", "epochs", "lr", "batch_size")},
        "min_epochs": ft.MIN_EPOCHS,
        "min_steps": ft.MIN_STEPS,
    }


def run_record(row: Row, seed: int, metrics: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """One run's record: headline metrics and per-class IoU (from a hyperkd metrics dict)."""
    return {
        "row": row.name,
        "key": row.key,
        "seed": seed,
        "metrics": {m: metrics.get(m) for m in METRICS},
        "per_class_iou": {c: v.get("iou") for c, v in (metrics.get("per_class") or {}).items()},
        **extra,
    }


def describe(row: Row, rows: Mapping[str, Row], budget: Budget) -> str:
    """What a row is, for the page."""
    sets = ", ".join(f"`{s}`" for s in row.overrides)
    ft = ", ".join(f"`{k}={v}`" for k, v in row.finetune.items())
    text = {
        "raw": "a head on each pixel's standardised spectrum, no encoder (`--student raw`)",
        "untrained": f"the encoder of *{rows[row.of].name if row.of in rows else row.of}* with random weights "
        "(`init='random'`): what the architecture alone gives",
        "pretrain": f"recipe `{row.recipe}` on the training tiles" + (f" ({sets})" if sets else "")
        + (" **and the images of the 2 validation tiles** (never their labels): the transductive setting of a "
           "user who pretrains on the scene they map" if row.pretrain_on == "all" else ""),
        "distill": f"recipe `{row.recipe}` on the training tiles" + (f" ({sets})" if sets else "")
        + (", from the same teacher architecture with random weights: the control" if row.teacher == "random"
           else ", from the teacher"),
        "sklearn": f"scikit-learn `RandomForestClassifier` ({budget.rf_trees} trees) on each pixel's reflectance" if row.recipe == "rf"
        else "scikit-learn `SVC(kernel='rbf', C=1, gamma='scale')` on each pixel's standardised reflectance "
        "(untuned: choosing C on the 2 validation tiles would fit them; deterministic, so the same at every seed)",
    }[row.kind]  # fmt: skip
    own = "; the recipe's own steps and batch size" if row.own_budget else ""
    return text + own + (f"; fine-tuned with {ft}" if ft else "")


# ----------------------------------------------------------------------------------------------
# Running the rows
# ----------------------------------------------------------------------------------------------


@dataclass
class Teacher:
    """The ``--teacher`` resolved: the name :func:`hyperkd.distill` gets, its weights and extra overrides."""

    name: str
    weights: str
    overrides: tuple[str, ...] = ()
    description: str = ""


def resolve_teacher(spec: str, weights: str, overrides: Sequence[str] = ()) -> Teacher:
    """The teacher of the KD rows: a registered teacher name or a teacher folder (``hyperkd teacher
    pretrain`` writes one), refused at once with the way out when it is neither."""
    from hyperkd.core.registry import registry

    folder = Path(spec).expanduser()
    if folder.is_dir():
        card = _read_json(folder / "config.json") or {}
        arch = card.get("architecture") or {}
        shape = ", ".join(f"{k} {arch[k]}" for k in ("embed_dim", "depth", "patch_size") if k in arch)
        what = f"teacher folder `{spec}`" + (f" ({card.get('teacher', 'teacher')}: {shape})" if shape else "")
        what += f"; weights: {weights}"
        return Teacher(str(folder), weights, tuple(overrides), what)
    if spec not in registry("teacher"):
        raise SystemExit(
            f"--teacher {spec!r} is neither a registered teacher (`hyperkd list teacher`) nor a teacher folder; "
            "pass one (e.g. a folder written by `hyperkd teacher pretrain`), or leave out the KD rows with --rows"
        )
    desc = registry("teacher").get(spec).description
    return Teacher(spec, weights, tuple(overrides), f"`{spec}` ({desc}; weights: {weights})")


def recipe_digest(name: str) -> str:
    """A short hash of recipe ``name`` as it resolves now (its ``base`` merged in), so that a saved
    encoder trained under an earlier version of the recipe is not reused."""
    from hyperkd import recipes

    text = json.dumps(recipes.load_recipe(name), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


class Runner:
    """Trains and scores the rows for one work folder.

    Encoders and fine-tunes already in the work folder are reused when everything that made
    them (recipe, overrides, teacher, budget, seed, ``finetune``'s default protocol) is the
    same, unless ``fresh``; the page says how many runs were reused.
    """

    def __init__(
        self, data: Path, work: Path, budget: Budget, teacher: Teacher | None = None, fresh: bool = False
    ) -> None:
        self.data, self.work, self.budget, self.teacher, self.fresh = data, work, budget, teacher, fresh
        self._trained: set[tuple[str, int]] = set()  # encoders trained by this invocation
        self.labels = data / "labels"
        self.train_files = split_files(data, "train_files.csv")
        self.val_files = split_files(data, "validation_files.csv")
        self.train = prepare_split(self.train_files, work, "train")
        self.val = prepare_split(self.val_files, work, "val")
        self._all: Any = None  # every tile's images (rows with pretrain_on="all"), prepared when needed
        self._fitted: dict[tuple[str, int], Any] = {}  # the scikit-learn models, for the maps
        self._pixels: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    # -- data --------------------------------------------------------------------------------
    def labelled(
        self, split: str, fraction: float | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``pixels`` of the training or validation store (labels aligned by hyperkd); with
        ``fraction`` only the training pixels of hyperkd's label-scarce subset
        (:func:`hyperkd.evaluation.labels.label_fraction_subset`, subset seed 0 as
        :func:`hyperkd.finetune` draws it), so the baselines see exactly the heads' pixels."""
        key = f"{split}@{fraction}"
        if key not in self._pixels:
            from hyperkd.data.labels import align_labels

            store = self.train if split == "train" else self.val
            values, _ = align_labels(self.labels, store, "class", nodata=LABEL_NODATA)
            if fraction is not None:
                values = self._thin(values, fraction)
            self._pixels[key] = pixels(store, values)
        return self._pixels[key]

    def _thin(self, values: np.ndarray, fraction: float) -> np.ndarray:
        """``values`` (NaN = no label) with the training pixels outside the label-scarce subset set to NaN."""
        from hyperkd.evaluation.labels import bind_labels, label_fraction_subset
        from hyperkd.evaluation.tasks import get_task

        _, full = bind_labels(get_task("segmentation"), self.train, self.labels, nodata=LABEL_NODATA)
        sub = label_fraction_subset(full, range(len(self.train)), fraction, 0)
        out = values.copy()
        for i in range(len(self.train)):
            out[i][~sub.keep(i, full.target(i))] = np.nan  # type: ignore[attr-defined]
        return out

    # -- encoders ----------------------------------------------------------------------------
    def encoder(self, row: Row, seed: int, rows: Mapping[str, Row]) -> tuple[str, str]:
        """``(student, init)`` for :func:`hyperkd.finetune`, training the encoder if needed."""
        import hyperkd

        if row.kind == "raw":
            return "raw", "pretrained"
        if row.kind == "untrained":
            if row.of not in rows:
                raise SystemExit(
                    f"row {row.key!r} takes its architecture from row {row.of!r}, which is not defined"
                )
            student, _ = self.encoder(rows[row.of], seed, rows)
            return student, "random"
        if row.of is not None:  # another row's encoder, fine-tuned differently
            return self.encoder(rows[row.of], seed, rows)
        b = self.budget
        budget = [
            f"trainer.max_steps={b.pretrain_steps}",
            "trainer.max_epochs=100000",
            f"data.batch_size={b.batch_size}",
        ]
        if row.pretrain_on == "all" and self._all is None:
            self._all = prepare_split([*self.train_files, *self.val_files], self.work, "all")
        sets = [
            f"data.store={(self._all if row.pretrain_on == 'all' else self.train).root}",
            f"seed={seed}",
            *([] if row.own_budget else budget),
            "trainer.figures=false",
            *row.overrides,
        ]
        spec: dict[str, Any] = {
            "kind": row.kind,
            "recipe": row.recipe,
            "recipe_content": recipe_digest(row.recipe or "mae"),  # an edited recipe retrains
            "sets": sets,
        }
        if row.kind == "distill":
            t = self.teacher
            if t is None:
                raise SystemExit(f"row {row.key!r} distils from a teacher, but the runner was given none")
            weights = "none" if row.teacher == "random" else t.weights
            sets = sets + list(t.overrides)
            spec.update(teacher=t.name, weights=weights, sets=sets)
        out = self.work / "encoders" / f"{row.key}-s{seed}"
        fresh = self.fresh and (row.key, seed) not in self._trained
        if (
            not fresh
            and (out / "student" / "config.json").exists()
            and _read_json(out / "bench-spec.json") == spec
        ):
            return str(out), "pretrained"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.time()
        if row.kind == "pretrain":
            res = hyperkd.pretrain(row.recipe or "mae", out, overrides=sets)
        elif row.kind == "distill":
            res = hyperkd.distill(
                row.recipe or "hyperkd",
                out,
                teacher=spec["teacher"],
                teacher_weights=spec["weights"],
                overrides=sets,
            )
        else:
            raise SystemExit(f"row {row.key!r}: unknown kind {row.kind!r}")
        (out / "bench-spec.json").write_text(json.dumps(spec))
        self._trained.add((row.key, seed))
        log.info(
            "  %-28s seed %d: %s %d steps in %.0f s (val PSNR %.1f dB)",
            row.name, seed, row.kind, res.global_step, time.time() - t0, res.metrics.get("val/psnr", math.nan),
        )  # fmt: skip
        return str(out), "pretrained"

    # -- one run -----------------------------------------------------------------------------
    def run(
        self, row: Row, seed: int, rows: Mapping[str, Row], fraction: float | None = None
    ) -> dict[str, Any]:
        """Train and score ``row`` at ``seed`` (on ``fraction`` of the labelled training pixels);
        returns its record."""
        t0 = time.time()
        tag = "" if fraction is None else f"@{fraction:g}"
        if row.kind == "sklearn":
            xtr, ytr, _ = self.labelled("train", fraction)
            xte, yte, _ = self.labelled("val")
            metrics, _, self._fitted[(row.key, seed)] = baseline_metrics(
                row.recipe or "rf", (xtr, ytr), (xte, yte), seed, self.budget.rf_trees
            )
            rec = run_record(
                row,
                seed,
                metrics,
                time_s=round(time.time() - t0, 1),
                fraction=fraction,
                train_pixels=int(ytr.size),
            )
        else:
            import hyperkd

            student, init = self.encoder(row, seed, rows)
            out = self.work / "finetune" / f"{row.key}{tag}-s{seed}"
            extra = dict(row.finetune) | ({} if fraction is None else {"label_fraction": fraction})
            epochs = {} if self.budget.finetune_epochs is None else {"epochs": self.budget.finetune_epochs}
            spec = {
                "student": student,
                "init": init,
                "encoder": _read_json(Path(student) / "bench-spec.json"),
                "epochs": self.budget.finetune_epochs,
                "finetune": extra,
                "defaults": finetune_defaults(),
            }
            saved = None if self.fresh else _read_json(out / "bench-record.json")
            if saved and saved.get("spec") == spec:
                log.info("%-30s seed %d: reused from %s (same spec)", row.name, seed, out)
                return {**saved["record"], "reused": True}
            res = hyperkd.finetune(
                student=student,
                init=init,
                task="segmentation",
                store=self.train,
                labels=self.labels,
                label_nodata=LABEL_NODATA,
                eval_store=self.val,
                out=out,
                seed=seed,
                val_fraction=0.0,
                figures=False,
                overwrite=True,
                **(epochs | extra),  # a row may set its own epochs
            )
            rec = run_record(
                row,
                seed,
                res.metrics,
                time_s=round(time.time() - t0, 1),
                model=str(res.model_dir),
                protocol=res.settings.get("protocol"),
                fraction=fraction,
                train_pixels=res.settings.get("train_pixels"),
            )
            (out / "bench-record.json").write_text(json.dumps({"spec": spec, "record": rec}, default=str))
        if fraction is not None:  # its own row in the tables: the curve section reads "base" and "fraction"
            rec.update(row=f"{row.name} @ {fraction:.0%} labels", key=f"{row.key}{tag}", base=row.name)
        m = rec["metrics"]
        log.info(
            "%-30s seed %d: mIoU %.3f, accuracy %.3f, macro-F1 %.3f (%.0f s)",
            row.name + (f" ({fraction:.0%} labels)" if fraction is not None else ""), seed, m["miou"], m["overall_accuracy"], m["macro_f1"], rec["time_s"],
        )  # fmt: skip
        return rec

    # -- maps ----------------------------------------------------------------------------------
    def sklearn_map(self, row: Row, seed: int) -> list[np.ndarray]:
        """Per validation tile, the baseline's codes on every pixel with data (NaN elsewhere)."""
        model = self._fitted.get((row.key, seed))
        if model is None:
            xtr, ytr, _ = self.labelled("train")
            model = sklearn_model(row.recipe or "rf", seed, self.budget.rf_trees).fit(xtr, ytr)
        maps = []
        for f in self.val_files:
            arr = np.full((self.val.chip_size,) * 2, np.nan)
            for i, chip in enumerate(self.val.chips):
                if chip["source"] == f.stem:
                    item = self.val[i]
                    col, r, w, h = chip["window"]
                    tile = np.full((h, w), np.nan)
                    tile[item["valid"]] = model.predict(item["image"][:, item["valid"]].T)
                    arr = paste(arr, tile, r, col)
            maps.append(arr)
        return maps

    def predicted_maps(self, model: str, name: str) -> list[np.ndarray]:
        """:func:`hyperkd.predict` on the original validation GeoTIFFs; the maps as float (NaN = nodata)."""
        import rasterio

        import hyperkd

        out = self.work / "maps" / name
        written = {
            m.source.name: m.path
            for m in hyperkd.predict(model, self.val_files, out, overwrite=True, progress=False)
        }
        maps = []
        for f in self.val_files:
            with rasterio.open(written[f.name]) as src:
                a = src.read(1, masked=True)
            maps.append(np.ma.filled(a.astype(np.float64), np.nan))
        return maps

    def images(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per validation tile: a false-colour composite and the label tile (NaN = no label)."""
        import rasterio

        from hyperkd.viz.figures import composite, rgb_bands

        idx = rgb_bands(self.val.sensor)
        rgbs, labels = [], []
        for f in self.val_files:
            chip = next(i for i, c in enumerate(self.val.chips) if c["source"] == f.stem)
            rgbs.append(composite(self.val[chip]["image"], idx))
            with rasterio.open(self.labels / f.name) as src:
                lab = src.read(1).astype(np.float64)
            labels.append(np.where(lab == LABEL_NODATA, np.nan, lab))
        return rgbs, labels


# ----------------------------------------------------------------------------------------------
# The whole benchmark
# ----------------------------------------------------------------------------------------------


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Every selected row at every seed, the maps, the results dict."""
    from hyperkd.evaluation.quickstart import _quiet

    data, work = Path(args.data), Path(args.out)
    if not (data / "images").is_dir() or not (data / "labels").is_dir():
        raise SystemExit(
            f"{data} is not the Potsdam tiles folder (it needs images/, labels/, train_files.csv, "
            "validation_files.csv); pass its path as the first argument"
        )
    budget = QUICK if args.quick else Budget()
    seeds = [int(s) for s in args.seeds.split(",")][: 1 if args.quick else None]
    rows = select_rows(args.rows)
    all_rows = {r.key: r for r in ROWS}
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    start = machine()
    runs: list[dict[str, Any]] = []
    with _quiet(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no `val_dataloader`.*")  # val_fraction=0, on purpose
        warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")  # the frozen teacher
        teacher = None
        if any(r.kind == "distill" for r in rows):  # a missing teacher fails before anything is trained
            teacher = resolve_teacher(args.teacher, args.teacher_weights, args.teacher_set)
        runner = Runner(data, work, budget, teacher, fresh=args.fresh)
        log.info(
            "%d rows x %d seeds on %d training / %d validation tiles",
            len(rows), len(seeds), len(runner.train_files), len(runner.val_files),
        )  # fmt: skip
        scarce = [all_rows[k] for k in scarce_keys(args.scarce_rows, rows)]
        fractions = [float(f) for f in args.fractions.split(",") if f.strip()] if scarce else []
        for seed in seeds:
            for row in rows:
                runs.append(runner.run(row, seed, all_rows))
            for row in scarce:  # the label-scarce curve: the same rows on nested subsets of the labels
                for f in fractions:
                    runs.append(runner.run(row, seed, all_rows, fraction=f))
        figure_caption = ""
        fig_path = None
        if not args.no_maps:
            fig_path, figure_caption = make_maps(
                runner,
                rows,
                [r for r in runs if r.get("fraction") is None],
                seeds[0],
                work / "figures" / "real-data-maps.png",
            )
        _, ytr, _ = runner.labelled("train")
        _, yte, _ = runner.labelled("val")
    protocols = sorted({str(r["protocol"]) for r in runs if r.get("protocol")})
    return {
        "provenance": {
            "command": "python benchmarks/real_potsdam.py " + shlex.join(sys.argv[1:]),
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "elapsed_s": round(time.time() - t0, 1),
            "machine": start,
            "data": str(data),
            "seeds": seeds,
            "quick": bool(args.quick),
            "reused": sum(bool(r.get("reused")) for r in runs),
            "runs_time_s": round(sum(float(r.get("time_s") or 0) for r in runs), 1),
            "budget": asdict(budget),
            "fractions": fractions,
            "teacher": asdict(teacher) if teacher else {"description": "not used by these rows"},
            "protocol": ", ".join(protocols) if protocols else None,
            "finetune_defaults": finetune_defaults(),
            "bands": runner.train.sensor.num_bands,
            "file_bands": next(iter(runner.train.manifest["attrs"]["products"].values())).get("num_bands"),
            "chip_size": runner.train.chip_size,
            "dropped": dropped_text(runner.train),
            "train_tiles": [f.stem for f in runner.train_files],
            "val_tiles": [f.stem for f in runner.val_files],
            "pixels": {"train": int(ytr.size), "val": int(yte.size)},
            "val_support": {f"class {c}": int((yte == c).sum()) for c in np.unique(yte)},
        },
        "rows": [
            {**asdict(r), "finetune": dict(r.finetune), "description": describe(r, all_rows, budget)}
            for r in rows
        ],
        "runs": runs,
        "figure": str(fig_path) if fig_path else None,
        "figure_caption": figure_caption,
    }


def make_maps(
    runner: Runner, rows: Sequence[Row], runs: Sequence[Mapping[str, Any]], seed: int, path: Path
) -> tuple[Path | None, str]:
    """The maps figure: raw spectra, the best encoder row (by mean mIoU) and the random forest, at ``seed``."""
    table = aggregate(runs)
    model = {(r["key"], r["seed"]): r.get("model") for r in runs}
    chosen: list[Row] = [r for r in rows if r.kind == "raw"]
    enc = [r for r in rows if r.encoder and r.name in table.rows]
    if enc:
        chosen.append(max(enc, key=lambda r: table.rows[r.name]["miou"].mean))
    columns: dict[str, list[np.ndarray]] = {}
    for r in chosen:
        columns[f"{r.name} (hyperkd.predict)"] = runner.predicted_maps(
            str(model[(r.key, seed)]), f"{r.key}-s{seed}"
        )
    rf = next((r for r in rows if r.kind == "sklearn" and r.recipe == "rf"), None)
    if rf is not None:
        columns[rf.name] = runner.sklearn_map(rf, seed)
    if not columns:
        return None, ""
    rgbs, labels = runner.images()
    _, ytr, _ = runner.labelled("train")
    codes = [int(c) for c in np.unique(ytr)]
    maps_figure([f.stem for f in runner.val_files], rgbs, labels, columns, codes, path)
    caption = (
        f"The two validation tiles (seed {seed}): false colour, the labels (grey: no label), then the maps "
        + ", ".join(f"*{k}*" for k in columns)
        + ". The hyperkd maps are `hyperkd.predict` run on the original validation GeoTIFFs"
        + ("; the random forest's is predicted per pixel from the same tiles." if rf is not None else ".")
    )
    log.info("maps: %s", path)
    return path, caption


def write_outputs(results: Mapping[str, Any], work: Path, docs: Path | None) -> None:
    """``work/results.json``, ``work/report.md`` and, with ``docs``, the page and its figure."""
    (work / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    fig = Path(results["figure"]) if results.get("figure") else None
    rel = f"figures/{fig.name}" if fig else None
    (work / "report.md").write_text(render_markdown(results, rel))
    log.info("wrote %s and %s", work / "results.json", work / "report.md")
    if docs is not None:
        docs.parent.mkdir(parents=True, exist_ok=True)
        rel = None
        if fig is not None and fig.exists():
            target = docs.parent / "figures" / "real-data" / "maps.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(fig, target)
            rel = "figures/real-data/maps.png"
        docs.write_text(render_markdown(results, rel))
        log.info("wrote %s", docs)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument(
        "data", nargs="?", default=str(DEFAULT_DATA), help="the Potsdam tiles folder (default: %(default)s)"
    )
    ap.add_argument("--out", default="runs/real_potsdam", help="work folder (default: %(default)s)")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default: %(default)s)")
    ap.add_argument(
        "--rows",
        default=None,
        help=f"comma-separated row keys, or all (default: {','.join(r.key for r in ROWS if r.default)}; "
        f"also: {','.join(r.key for r in ROWS if not r.default)})",
    )
    ap.add_argument(
        "--docs",
        default=None,
        help="also write this page, e.g. docs/real-data.md (its figure goes beside it)",
    )
    ap.add_argument(
        "--quick", action="store_true", help="one seed, a tiny budget: a smoke run, not a measurement"
    )
    ap.add_argument(
        "--teacher",
        default=DEFAULT_TEACHER,
        help="teacher of the KD rows: a registered teacher name or a teacher folder (default: %(default)s)",
    )
    ap.add_argument(
        "--teacher-weights", default="default", help="weights of a named teacher (default: its own)"
    )
    ap.add_argument(
        "--teacher-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra teacher.* recipe override",
    )
    ap.add_argument(
        "--fractions",
        default="0.01,0.05,0.25",
        help="label-scarce curve: fractions of the labelled training pixels (default: %(default)s; '' for none)",
    )
    ap.add_argument(
        "--scarce-rows",
        default="raw,mae-small,rf",
        help="rows of the label-scarce curve, among the selected rows (default: %(default)s)",
    )
    ap.add_argument("--no-maps", action="store_true", help="skip the maps figure")
    ap.add_argument(
        "--fresh",
        action="store_true",
        help="train everything again (default: reuse encoders and fine-tunes of OUT whose settings match)",
    )
    ap.add_argument("--report-only", action="store_true", help="re-render OUT/results.json (no training)")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    log.setLevel(logging.INFO)  # this script's one line per run; the library's own INFO lines stay quiet
    work = Path(args.out)
    if args.report_only:
        results = _read_json(work / "results.json")
        if results is None:
            raise SystemExit(
                f"{work / 'results.json'} does not exist or is not JSON; run the benchmark first"
            )
    else:
        results = run_benchmark(args)
    write_outputs(results, work, Path(args.docs) if args.docs else None)
    print(aggregate([r for r in results["runs"] if r.get("fraction") is None]).markdown(digits=3))
    if results["provenance"].get("fractions"):
        print(curve_table(results["runs"]))
    return results


if __name__ == "__main__":
    main()
