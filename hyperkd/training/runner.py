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

import copy
import logging
import os
import shutil
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L

from hyperkd import recipes as recipes_mod
from hyperkd.core.errors import HyperKDError, RecipeError, RunFolderError
from hyperkd.core.io import atomic_write_text
from hyperkd.core.progress import progress_enabled
from hyperkd.data.loader import ChipDataModule
from hyperkd.data.multistore import MultiStoreDataModule, StoreBinder, check_student_for_stores, describe
from hyperkd.data.store import ChipStore
from hyperkd.models.mae import HyperspectralMAE
from hyperkd.synth.datamodule import SyntheticChipDataModule
from hyperkd.training.callbacks import (
    ExportStudent,
    MetricsReport,
    ReconstructionFigures,
    ResumeBookkeeping,
    StopOnNonFiniteLoss,
    StudentForData,
    export_student,
    final_metrics,
    keep_metrics_history,
)
from hyperkd.training.parts import SpeedUps, build_losses

log = logging.getLogger(__name__)

__all__ = [
    "RunResult",
    "build_losses",
    "build_student_for",
    "data_module",
    "export_student",
    "fit",
    "keep_metrics_history",
    "launch_rank",
    "make_trainer",
    "plan_run",
    "pretrain",
    "pretrain_module",
    "recipe_for",
    "remove_created",
    "run_folder",
    "store_field",
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


def store_field(data: str | Path | Sequence[str | Path] | None) -> str | list[str] | None:
    """``--data`` as the recipe's ``data.store``: one store's path, or a list of several."""
    if data is None or isinstance(data, str | Path):
        return None if data is None else str(data)
    paths = [str(d) for d in data]
    return None if not paths else paths[0] if len(paths) == 1 else paths


def store_list(recipe: Mapping[str, Any]) -> list[str]:
    """The recipe's chip stores (``data.store``: one path, ``synthetic``, or a list of paths)."""
    store = (recipe.get("data") or {}).get("store", "synthetic")
    return [str(s) for s in store] if isinstance(store, list | tuple) else [str(store)]


def data_module(recipe: Mapping[str, Any], run_dir: Path) -> ChipDataModule | MultiStoreDataModule:
    """The recipe's data as a Lightning data module: its chip store, or ``synthetic`` chips that the
    module's ``prepare_data`` generates inside the run folder (on rank 0; reused on resume), or
    several chip stores (``data.store`` a list: one store per batch, interleaved as ``data.mix``
    says, :class:`~hyperkd.data.multistore.MultiStoreDataModule`; each store split by
    ``data.val_fraction``).

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
    stores = store_list(recipe)
    if len(stores) > 1:
        fixed = [k for k in ("val_store", "train_list", "val_list", "test_list") if data.get(k)]
        if fixed:
            raise RecipeError(
                f"data.{fixed[0]} names chips of one store, but data.store lists {len(stores)} stores; "
                "several stores are each split by data.val_fraction (drop data." + fixed[0] + ")"
            )
        multi = MultiStoreDataModule(
            stores,
            **{k: v for k, v in loader.items() if k in ("batch_size", "val_fraction", "num_workers", "seed")},
            augment=loader["augment"],
            mix=str(data.get("mix", "proportional")),
        )
        for s, (train, val) in zip(multi.stores, multi.splits, strict=True):
            log.info("%s: training on %d chips, validating on %d", describe(s), len(train), len(val))
        return multi
    store = stores[0]
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
        model = create_model(spec).train()  # loaded for inference (eval mode): it trains on here
        if getattr(model, "sensor_agnostic", False):  # any-mae: trains on the store's band table
            model.adapt_to(store.sensor, img_size=store.chip_size)  # type: ignore[operator]
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
        from hyperkd.hub import load_state

        load_state(
            model,
            create_model(source).state_dict(),
            where=f"student.init_from {init_from!r}",
            advice="give the recipe the same student architecture, or pass those weights as --student "
            "(which keeps their architecture)",
        )
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


#: Recipe keys a resume may change (how long and where it trains, how often it logs); any
#: other difference would mix two settings in one run and is refused.
RESUMABLE_KEYS = frozenset(
    {
        "trainer.max_epochs",
        "trainer.max_steps",
        "trainer.devices",
        "trainer.accelerator",
        "trainer.strategy",
        "trainer.num_nodes",
        "trainer.log_every_n_steps",
        "trainer.checkpoint_every_n_steps",
        "trainer.figures",
        "trainer.compile",
        "trainer.channels_last",
        "data.num_workers",
    }
)

#: What a run folder holds once it produced something worth keeping (then only --resume reuses it).
_FINISHED = ("metrics.json", "student")


@dataclass
class RunPlan:
    """What :func:`plan_run` decided about a run folder, before anything is written to it.

    ``resume_from``: the checkpoint to continue (None: a new run); ``recipe_text``: the
    recipe.yaml to write (a new run), or to rewrite once the checkpoint is restored (a resume
    that changed trainer limits), or None; ``existed``: the folder's entries before this command
    (None: no folder), so a failed start can remove what it created.
    """

    out: Path
    resume_from: Path | None
    recipe_text: str | None
    existed: set[str] | None


def check_out_folder(out: Path, flag: str = "--out") -> None:
    """Refuse a run folder path that is a file, or lies under one."""
    for p in (out, *out.parents):
        if p.exists() and not p.is_dir():
            raise RunFolderError(
                f"{flag} {out}: {p} is a file, not a folder; choose a folder path for the run"
            )


def saved_recipe(out: Path) -> Path:
    """A run folder's ``recipe.yaml``."""
    return Path(out) / "recipe.yaml"


def recipe_for(
    recipe: str | Path | Mapping[str, Any] | None, out: str | Path, resume: bool, default: str
) -> Any:
    """The recipe a run starts from: the one given, else on ``--resume`` the run's saved
    ``recipe.yaml`` (which holds the ``--data``/``--set`` values it was started with), else ``default``."""
    if recipe is not None:
        return recipe
    saved = saved_recipe(Path(out))
    return saved if resume and saved.is_file() else default


def plan_run(out: str | Path, recipe: Mapping[str, Any], resume: bool, mode: str = "pretrain") -> RunPlan:
    """Check the run folder for a new run or a resume, writing nothing (but stale temp files).

    A new run needs a folder that holds no run, or one whose run never saved a checkpoint
    (a start that was killed or failed: it is started again). A resume needs a readable
    checkpoint (the newest: :func:`~hyperkd.training.checkpoint.find_checkpoint`), a run of
    the same ``mode``, and a recipe that differs from the saved one only in
    :data:`RESUMABLE_KEYS`. Only rank 0 checks (the other ranks resume from the same file).
    """
    from hyperkd.training.checkpoint import find_checkpoint, remove_temporary_files

    out = Path(out)
    check_out_folder(out)
    ckpt_dir = out / "checkpoints"
    text = recipes_mod.dump(recipe)
    existed = {p.name for p in out.iterdir()} if out.is_dir() else None
    if launch_rank() != 0:
        return RunPlan(out, find_checkpoint(ckpt_dir) if resume else None, None, existed)
    for p in remove_temporary_files(ckpt_dir):
        log.info("removed %s, left by an interrupted checkpoint write", p)
    ckpt = find_checkpoint(ckpt_dir)
    saved = saved_recipe(out)
    if resume:
        if ckpt is None:
            raise RunFolderError(
                f"--resume: no checkpoint to resume in {ckpt_dir} (no readable *.ckpt file); "
                "start a new run without --resume"
            )
        if not saved.is_file():
            return RunPlan(out, ckpt, text, existed)
        old = recipes_mod.resolve_mapping(recipes_mod.load_recipe(saved), {})
        if old.get("mode", mode) != mode:
            raise RunFolderError(
                f"--resume: {out} holds a {old.get('mode')} run (see {saved}); resume it with "
                f"`hyperkd {'distill' if old.get('mode') == 'distill' else 'pretrain'} --out {out} --resume`"
            )
        changed = recipes_mod.differences(old, dict(recipe))
        refused = [k for k in changed if k not in RESUMABLE_KEYS]
        if refused:
            shown = ", ".join(f"{k} ({_at(old, k)!r} -> {_at(recipe, k)!r})" for k in refused[:4])
            raise RecipeError(
                f"--resume: the recipe differs from {saved} in {shown}{' ...' if len(refused) > 4 else ''}; "
                "a resume may change only trainer limits. Resume without those changes (no --recipe: the "
                "saved one is used), or start a new run in another --out"
            )
        if changed:
            log.info("resume changes %s (recorded in %s)", ", ".join(changed), saved)
        return RunPlan(out, ckpt, text if changed else None, existed)
    if saved.exists() or ckpt is not None:
        if ckpt is not None or any((out / f).exists() for f in _FINISHED):
            raise RunFolderError(
                f"{out} already holds a run; pass --resume to continue it, or choose another --out"
            )
        log.warning("%s holds a run that never saved a checkpoint: starting it again", out)
    return RunPlan(out, None, text, existed)


def _at(recipe: Mapping[str, Any], dotted: str) -> Any:
    node: Any = recipe
    for p in dotted.split("."):
        node = node.get(p) if isinstance(node, Mapping) else None
    return node


@contextmanager
def run_folder(plan: RunPlan) -> Iterator[None]:
    """Write a new run's ``recipe.yaml``, then run the body; if the body fails before the run
    saved its first checkpoint, remove what this command created in the folder (all of it
    when the folder is new), so a plain rerun starts afresh. A resume that fails before training
    leaves the folder as it was (``metrics.csv`` is moved back, ``recipe.yaml`` is only rewritten
    once training starts: :class:`~hyperkd.training.callbacks.ResumeBookkeeping`)."""
    from hyperkd.training.checkpoint import find_checkpoint

    rank0 = launch_rank() == 0
    if rank0 and plan.resume_from is None:
        plan.out.mkdir(parents=True, exist_ok=True)
        for stale in ("logs", "tensorboard", "figures"):  # of a start that never saved a checkpoint
            if plan.existed is not None and stale in plan.existed:
                shutil.rmtree(plan.out / stale, ignore_errors=True)
                plan.existed.discard(stale)
        if plan.recipe_text is not None:
            atomic_write_text(saved_recipe(plan.out), plan.recipe_text)
    # a resume: the checkpoint's header was read (plan_run); Lightning's CSV logger deletes an existing
    # metrics.csv when it starts, so the earlier log is moved aside now, and back if the resume fails
    # before a new log was written
    kept = keep_metrics_history(plan.out / "logs") if rank0 and plan.resume_from is not None else None
    try:
        yield
    except BaseException:
        if rank0 and plan.resume_from is None and find_checkpoint(plan.out / "checkpoints") is None:
            remove_created(plan.out, plan.existed)
        if kept is not None and not (plan.out / "logs" / "metrics.csv").exists():
            kept.rename(plan.out / "logs" / "metrics.csv")
        raise


def remove_created(out: Path, existed: set[str] | None) -> None:
    """Remove what a failed command created in ``out``: the whole folder if it did not exist
    (``existed`` None), else the entries not in ``existed``."""
    if existed is None:
        shutil.rmtree(out, ignore_errors=True)
    elif out.is_dir():
        for p in out.iterdir():
            if p.name not in existed:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    log.info("removed what the failed run created in %s; run the command again once fixed", out)


def make_trainer(recipe: Mapping[str, Any], out: Path, extra_callbacks: Iterable[Any] = ()) -> L.Trainer:
    """A Lightning Trainer configured from the recipe's ``trainer`` section."""
    from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from hyperkd.training.checkpoint import SafetensorsCheckpointIO

    t = dict(recipe["trainer"])
    every = int(t.pop("checkpoint_every_n_steps", 50))
    t.pop("figures", None)
    speed = SpeedUps.from_trainer_section(t)  # trainer.compile / channels_last: hyperkd's, not Lightning's
    ckpt = ModelCheckpoint(
        dirpath=out / "checkpoints",
        filename="step{step}",
        save_last=True,
        every_n_train_steps=every,
        save_top_k=1,
        auto_insert_metric_name=False,
        # overwrite last.ckpt in place: after a run folder is moved, Lightning would otherwise
        # write last-v1.ckpt next to the (then stale) last.ckpt
        enable_version_counter=False,
    )
    stores = [s for s in store_list(recipe) if s != "synthetic"]
    hint = (
        "check the chips with " + " and ".join(f"`hyperkd data info {s}`" for s in stores) if stores else None
    )
    guard = StopOnNonFiniteLoss(hint) if hint else StopOnNonFiniteLoss()
    if len(stores) > 1:  # MultiStoreDataModule's batch sampler shards the batches by rank itself
        t["use_distributed_sampler"] = False
    callbacks: list[Any] = [speed, ckpt, guard, *extra_callbacks]  # speed first: undone before exports
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
    module_factory: Callable[[Mapping[str, Any], HyperspectralMAE, Any], L.LightningModule] | None = None,
    callbacks: Iterable[Any] = (),
    mode: str = "pretrain",
) -> RunResult:
    """Assemble the recipe's parts and train; shared by pretraining and distillation.

    Everything that can fail on input (recipe keys and values, the run folder, the chip store and
    its split, the student, the module with its masker, losses and optimiser settings) is
    checked or built before anything is written; the run folder gets ``recipe.yaml`` only then,
    and a run that fails before its first checkpoint removes what it created (:func:`run_folder`).

    The run folder's reports are callbacks (:mod:`hyperkd.training.callbacks`), run at the end of
    ``trainer.fit`` on rank 0: ``metrics.json``, the exported ``student/``, then figures;
    ``callbacks`` come after them (distillation's report).
    """
    from hyperkd.training.checks import check_components

    out = Path(out)
    recipe = copy.deepcopy(dict(recipe))
    recipes_mod.validate(recipe)
    check_components(recipe)
    plan = plan_run(out, recipe, resume, mode)
    dm = data_module(recipe, out)  # a bad store, list or validation store fails before the run folder
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
    band_dropout = float(recipe["data"].get("band_dropout", 0.0) or 0.0)
    binder = None
    if isinstance(dm, MultiStoreDataModule) or band_dropout > 0:  # checked before the module is built
        stores = dm.stores if isinstance(dm, MultiStoreDataModule) else [dm]
        check_student_for_stores(student, stores, band_dropout=band_dropout, distill=mode == "distill")
        # each batch binds the student to its store (and kept bands); one store is read at the first
        # batch (a synthetic store exists, with its statistics, once prepared)
        source = dm.stores if isinstance(dm, MultiStoreDataModule) else (lambda: [dm.store])
        binder = StoreBinder(source, band_dropout, seed)
    module = (module_factory or pretrain_module)(recipe, student, dm)
    if binder is not None:
        from hyperkd.training.pretrain import MAEModule

        if not isinstance(module, MAEModule):
            raise RecipeError(
                f"several stores and band dropout need a hyperkd MAEModule, got a {type(module).__name__}"
            )
        module.binder = binder
    if recipe["trainer"].get("figures", True):
        reports.append(ReconstructionFigures(out / "figures", metrics_csv=out / "logs" / "metrics.csv"))
    if plan.resume_from is not None:
        reports.insert(0, ResumeBookkeeping(out, plan.recipe_text))
    trainer = make_trainer(recipe, out, [*reports, *callbacks])
    with run_folder(plan), warnings.catch_warnings():
        # a distillation's teacher is frozen in eval mode on purpose; Lightning warns of it at fit start
        warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
        trainer.fit(module, datamodule=dm, ckpt_path=str(plan.resume_from) if plan.resume_from else None)
        # the full state (optimizer, loops, callbacks) so that --resume continues exactly; said
        # explicitly, Lightning logs nothing about it (its default is the same)
        trainer.save_checkpoint(out / "checkpoints" / "last.ckpt", weights_only=False)
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
    recipe: str | Path | Mapping[str, Any] | None = None,
    out: str | Path = "runs/pretrain",
    *,
    overrides: Iterable[str] = (),
    resume: bool = False,
    callbacks: Iterable[Any] = (),
    **fields: Any,
) -> RunResult:
    """MAE-pretrain a student from scratch (the no-KD baseline).

    ``fields`` are dotted recipe keys given as keyword arguments with ``.`` written as
    ``__`` (``student__name="enmap"``, ``data__store="/data/store"`` or a list of stores to
    train across, :func:`data_module`; the split:
    ``data__val_store``, ``data__val_fraction``, ``data__train_list`` / ``val_list`` /
    ``test_list``, see :func:`data_module`). ``recipe``: a name, file or mapping; by default ``mae``,
    or with ``resume`` the run's saved ``recipe.yaml`` (:func:`recipe_for`).
    """
    resolved = recipes_mod.resolve_for_run(recipe_for(recipe, out, resume, "mae"), overrides, fields)
    return fit(resolved, out, resume=resume, callbacks=callbacks, mode="pretrain")
