"""Run pretraining (and, through the same path, distillation) from a recipe.

``pretrain(recipe, out)`` is what ``hyperkd pretrain`` calls. A run folder holds:

    RUN/recipe.yaml          the fully resolved recipe (re-run it with --recipe RUN/recipe.yaml)
    RUN/checkpoints/last.ckpt  safetensors training checkpoint (atomic); --resume continues it
    RUN/logs/metrics.csv     per-step/epoch metrics (Lightning CSV logger)
    RUN/tensorboard/         TensorBoard logs
    RUN/figures/             reconstruction composites and spectra, loss curves
    RUN/student/             exported student: model.safetensors + config.json + README.md (hyperkd.hub)
    RUN/metrics.json         final validation metrics
    RUN/data/synthetic-*/    generated chips (``data.store: synthetic``; the data module's prepare_data)

Everything but the checkpoints and logs is written by callbacks (:mod:`hyperkd.training.callbacks`)
at the end of ``trainer.fit``; the LightningModules themselves train under any Trainer.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L

from hyperkd import recipes as recipes_mod
from hyperkd.core.errors import HyperKDError, RecipeError
from hyperkd.core.io import atomic_write_text
from hyperkd.core.progress import progress_enabled
from hyperkd.data.loader import ChipDataModule
from hyperkd.data.store import ChipStore
from hyperkd.models.mae import HyperspectralMAE
from hyperkd.synth.datamodule import SyntheticChipDataModule
from hyperkd.training.callbacks import (
    ExportStudent,
    MetricsReport,
    ReconstructionFigures,
    StudentForData,
    export_student,
    final_metrics,
)
from hyperkd.training.parts import build_losses

log = logging.getLogger(__name__)

__all__ = [
    "RunResult",
    "build_losses",
    "build_student_for",
    "data_module",
    "export_student",
    "fit",
    "launch_rank",
    "make_trainer",
    "prepare_run_dir",
    "pretrain",
    "pretrain_module",
    "student_sensor",
]


@dataclass
class RunResult:
    """What a finished run produced."""

    run_dir: Path
    metrics: dict[str, float]
    student_dir: Path
    global_step: int


def student_sensor(spec: str) -> str:
    """The sensor a student spec refers to (``enmap-mae-small`` -> ``enmap``; a model folder, run
    folder or Hub repo: its config's sensor), resolved by :func:`hyperkd.models.factory.resolve_spec`."""
    from hyperkd.models.factory import resolve_spec

    return resolve_spec(spec).sensor_name() or spec


def data_module(recipe: Mapping[str, Any], run_dir: Path) -> ChipDataModule:
    """The recipe's data as a Lightning data module: its chip store, or ``synthetic`` chips that the
    module's ``prepare_data`` generates inside the run folder (on rank 0; reused on resume).

    Validation: ``data.val_store`` (every chip of another store, its bands checked by wavelength)
    or ``data.val_fraction`` of the store's chips; ``data.train_list`` / ``val_list`` /
    ``test_list`` fix parts by chip lists (:mod:`hyperkd.data.splits`; test chips are left out).
    A chip store's split and validation store are checked here, before any run folder or model.
    """
    data = recipe["data"]
    val_fraction = float(data.get("val_fraction", 0.125))
    if not 0.0 <= val_fraction < 1.0:
        raise RecipeError(
            f"data.val_fraction {val_fraction:g} must be at least 0 and below 1 (a share of the store's chips)"
        )
    loader: dict[str, Any] = {
        "batch_size": int(data.get("batch_size", 8)),
        "val_fraction": val_fraction,
        "num_workers": int(data.get("num_workers", 0)),
        "seed": int(recipe.get("seed", 0)),
        "augment": bool(data.get("augment", False)),  # flips + 90-degree rotations of training chips
        "val_store": data.get("val_store"),
        **{k: data.get(k) for k in ("train_list", "val_list", "test_list")},
    }
    store = data.get("store", "synthetic")
    if store != "synthetic":
        dm = ChipDataModule(ChipStore(store), **loader)
        dm.setup()
        where = (
            f"every chip of {dm.val_store.root}" if dm.val_store is not None else f"{len(dm.val_idx)} chips"
        )
        log.info("%s: training on %d chips, validating on %s", dm.root, len(dm.train_idx), where)
        return dm
    from hyperkd.core.sensors import get_sensor

    syn = dict(data.get("synthetic") or {})
    sensor_name = student_sensor(str(recipe["student"]["name"]))
    sensor = get_sensor(sensor_name, selection=recipe["student"].get("selection") or "default")
    return SyntheticChipDataModule(
        run_dir / "data" / f"synthetic-{sensor_name}",
        sensor,
        chips=int(syn.get("chips", 64)),
        size=int(syn.get("size", 64)),
        synth_seed=int(syn.get("seed", 0)),
        **loader,
    )


def build_student_for(recipe: Mapping[str, Any], store: ChipStore) -> HyperspectralMAE:
    """The student a recipe names, for the store's band table and statistics."""
    from hyperkd.models.factory import create_model, resolve_spec

    cfg = dict(recipe["student"])
    spec = resolve_spec(str(cfg.pop("name")), sensor=store.sensor)
    cfg.pop("selection", None)
    init_from = cfg.pop("init_from", None)
    if spec.trained:  # its saved config fixes the architecture: the recipe's student fields do not apply
        model = create_model(spec)
    else:
        if spec.sensor is not None and spec.sensor != store.sensor.name:
            raise RecipeError(
                f"student {spec.spec!r} is for sensor {spec.sensor!r} but the data store holds "
                f"{store.sensor.name!r} chips ({store.root}); use --student {store.sensor.name}"
            )
        cfg.setdefault("img_size", store.chip_size)
        model = create_model(spec, sensor=store.sensor, **cfg)
    if not isinstance(model, HyperspectralMAE):
        raise RecipeError(
            f"student {spec.spec!r} is a {type(model).__name__}, not a hyperspectral MAE student"
        )
    if model.in_chans != store.sensor.num_bands or model.img_size != store.chip_size:
        raise RecipeError(
            f"student expects {model.in_chans} bands of {model.img_size} px but {store.root} holds "
            f"{store.sensor.num_bands} bands of {store.chip_size} px"
        )
    from hyperkd.core.sensors import match_bands

    try:  # by wavelength: the same names can mean other bands in another band table
        order = match_bands(model.sensor, store.sensor, f"student {spec.spec!r} vs {store.root}")
    except HyperKDError as exc:
        raise RecipeError(str(exc)) from None
    if order != list(range(len(order))):
        k = next(i for i, j in enumerate(order) if i != j)
        raise RecipeError(
            f"{store.root} holds the student's bands in another order (student band {k + 1} is store band "
            f"{order[k] + 1}); prepare the store with the student's band order"
        )
    if init_from:
        source = resolve_spec(str(init_from))
        if not source.trained:
            raise RecipeError(
                f"student.init_from {init_from!r} names an architecture, not trained weights; give a "
                "model folder, a run folder or a Hugging Face repo id"
            )
        model.load_state_dict(create_model(source).state_dict())
    return model


def launch_rank() -> int:
    """This process's global rank as set by the launcher (0 when not distributed).

    Lightning's DDP launcher starts the other ranks by re-running the same command with
    ``LOCAL_RANK``/``NODE_RANK`` set; SLURM and torchrun set ``SLURM_PROCID``/``RANK``.
    """
    for var in ("RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    node = int(os.environ.get("NODE_RANK", "0") or 0)
    return local + node * 1000


def keep_metrics_history(logs: Path) -> None:
    """Move ``metrics.csv`` aside before a resumed run's logger replaces it.

    Lightning's CSV logger starts a fresh ``metrics.csv``; the earlier part becomes
    ``metrics.part-N.csv`` and :func:`hyperkd.viz.figures.read_metrics` joins the parts.
    """
    current = logs / "metrics.csv"
    if current.exists():
        n = len(list(logs.glob("metrics.part-*.csv")))
        current.rename(logs / f"metrics.part-{n:03d}.csv")


def prepare_run_dir(out: Path, recipe: Mapping[str, Any], resume: bool) -> Path | None:
    """Create the run folder; return the checkpoint to resume from (or None).

    Only rank 0 creates and checks the folder (the other ranks write nothing into it before
    Lightning's own barriers: loggers and checkpoints write on rank 0).
    """
    ckpt = out / "checkpoints" / "last.ckpt"
    if launch_rank() != 0:
        return ckpt if resume else None
    if resume:
        if not ckpt.exists():
            raise HyperKDError(f"--resume: no checkpoint at {ckpt}; start a new run without --resume")
        saved = out / "recipe.yaml"
        if saved.exists():
            old = recipes_mod.load_recipe(saved)
            if old.get("student") != recipe.get("student") or old.get("data") != recipe.get("data"):
                raise RecipeError(
                    f"--resume: the recipe differs from the one saved in {saved} (student or data); "
                    f"resume with --recipe {saved}"
                )
        keep_metrics_history(out / "logs")
        return ckpt
    if (out / "recipe.yaml").exists():
        raise HyperKDError(
            f"{out} already holds a run; pass --resume to continue it, or choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "recipe.yaml", recipes_mod.dump(recipe))
    return None


def make_trainer(recipe: Mapping[str, Any], out: Path, extra_callbacks: Iterable[Any] = ()) -> L.Trainer:
    """A Lightning Trainer configured from the recipe's ``trainer`` section."""
    from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from hyperkd.training.checkpoint import SafetensorsCheckpointIO

    t = dict(recipe["trainer"])
    every = int(t.pop("checkpoint_every_n_steps", 50))
    t.pop("figures", None)
    ckpt = ModelCheckpoint(
        dirpath=out / "checkpoints",
        filename="step{step}",
        save_last=True,
        every_n_train_steps=every,
        save_top_k=1,
        auto_insert_metric_name=False,
    )
    callbacks: list[Any] = [ckpt, *extra_callbacks]
    if progress_enabled():
        callbacks.append(RichProgressBar())
    loggers: list[Any] = [
        # flushed as often as it logs, so a killed run keeps its history
        CSVLogger(
            save_dir=str(out),
            name="",
            version="logs",
            flush_logs_every_n_steps=int(t.get("log_every_n_steps", 50)),
        ),
        TensorBoardLogger(save_dir=str(out), name="", version="tensorboard"),
    ]
    return L.Trainer(
        callbacks=callbacks,
        logger=loggers,
        plugins=[SafetensorsCheckpointIO()],
        enable_progress_bar=progress_enabled(),
        enable_model_summary=False,
        default_root_dir=str(out),
        num_sanity_val_steps=0,
        **t,
    )


def fit(
    recipe: Mapping[str, Any],
    out: str | Path,
    *,
    resume: bool = False,
    module_factory: Callable[[Mapping[str, Any], HyperspectralMAE, ChipDataModule], L.LightningModule]
    | None = None,
    callbacks: Iterable[Any] = (),
) -> RunResult:
    """Assemble the recipe's parts and train; shared by pretraining and distillation.

    The run folder's reports are callbacks (:mod:`hyperkd.training.callbacks`), run at the end of
    ``trainer.fit`` on rank 0: ``metrics.json``, the exported ``student/``, then figures;
    ``callbacks`` come after them (distillation's report).
    """
    out = Path(out)
    recipes_mod.validate(recipe)
    dm = data_module(recipe, out)  # a bad store, list or validation store fails before the run folder
    resume_from = prepare_run_dir(out, recipe, resume)
    seed = int(recipe.get("seed", 0))
    L.seed_everything(seed, workers=True, verbose=False)
    reports: list[Any] = [MetricsReport(out / "metrics.json"), ExportStudent(out / "student", run_dir=out)]
    if isinstance(dm, SyntheticChipDataModule) and not dm.is_prepared():
        # the chips (and their statistics) appear in prepare_data: build for the band table now,
        # rebuild for the data at setup
        student = build_student_for(recipe, dm)  # type: ignore[arg-type]  # sensor, chip_size, root
        reports.insert(0, StudentForData(lambda store: build_student_for(recipe, store), seed))
    else:
        student = build_student_for(recipe, dm.store)
    module = (module_factory or pretrain_module)(recipe, student, dm)
    if recipe["trainer"].get("figures", True):
        reports.append(ReconstructionFigures(out / "figures", metrics_csv=out / "logs" / "metrics.csv"))
    trainer = make_trainer(recipe, out, [*reports, *callbacks])
    trainer.fit(module, datamodule=dm, ckpt_path=str(resume_from) if resume_from else None)
    trainer.save_checkpoint(out / "checkpoints" / "last.ckpt")
    return RunResult(
        run_dir=out,
        metrics=final_metrics(trainer),
        student_dir=out / "student",
        global_step=trainer.global_step,
    )


def pretrain_module(
    recipe: Mapping[str, Any], student: HyperspectralMAE, data: ChipDataModule
) -> L.LightningModule:
    """The no-KD MAE module for a recipe."""
    from hyperkd.training.pretrain import MAEModule

    module = MAEModule(student, recipe["masker"], recipe.get("losses") or {}, optim=recipe.get("optim"))
    if any(getattr(t, "needs_teacher", False) for _, t in module.loss_terms.values()):
        raise RecipeError("this recipe has distillation loss terms; run it with `hyperkd distill`")
    return module


def pretrain(
    recipe: str | Path | Mapping[str, Any] = "mae",
    out: str | Path = "runs/pretrain",
    *,
    overrides: Iterable[str] = (),
    resume: bool = False,
    callbacks: Iterable[Any] = (),
    **fields: Any,
) -> RunResult:
    """MAE-pretrain a student from scratch (the no-KD baseline).

    ``fields`` are dotted recipe keys given as keyword arguments with ``.`` written as
    ``__`` (``student__name="enmap"``, ``data__store="/data/store"``; the split:
    ``data__val_store``, ``data__val_fraction``, ``data__train_list`` / ``val_list`` /
    ``test_list``, see :func:`data_module`).
    """
    resolved = recipes_mod.resolve_for_run(recipe, overrides, fields)
    return fit(resolved, out, resume=resume, callbacks=callbacks)
