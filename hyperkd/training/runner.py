"""Run pretraining (and, through the same path, distillation) from a recipe.

``pretrain(recipe, out)`` is what ``hyperkd pretrain`` calls. A run folder holds:

    RUN/recipe.yaml          the fully resolved recipe (re-run it with --recipe RUN/recipe.yaml)
    RUN/checkpoints/last.ckpt  safetensors training checkpoint (atomic); --resume continues it
    RUN/logs/metrics.csv     per-step/epoch metrics (Lightning CSV logger)
    RUN/tensorboard/         TensorBoard logs
    RUN/figures/             reconstruction composites and spectra, loss curves
    RUN/student/             exported student: model.safetensors + config.json + README.md (hyperkd.hub)
    RUN/metrics.json         final validation metrics
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from hyperkd import hub
from hyperkd import recipes as recipes_mod
from hyperkd.core.errors import DataError, HyperKDError, RecipeError
from hyperkd.core.io import atomic_write_json, atomic_write_text
from hyperkd.core.registry import create, registry
from hyperkd.data.loader import ChipDataModule
from hyperkd.data.store import ChipStore
from hyperkd.models.mae import SIZES, HyperspectralMAE


@dataclass
class RunResult:
    """What a finished run produced."""

    run_dir: Path
    metrics: dict[str, float]
    student_dir: Path
    global_step: int


def student_sensor(spec: str) -> str:
    """The sensor a student name refers to (``enmap-mae-small`` -> ``enmap``)."""
    if Path(spec).is_dir():
        cfg = json.loads((Path(spec) / "config.json").read_text())
        return cfg["sensor"]["name"]
    if hub.is_repo_id(spec):  # a shared model: org/name[@rev]
        return hub.read_config(spec)["sensor"]["name"]
    if "-mae-" in spec and spec.rsplit("-mae-", 1)[1] in SIZES:
        return spec.rsplit("-mae-", 1)[0]
    return spec


def resolve_store(recipe: Mapping[str, Any], run_dir: Path) -> ChipStore:
    """The chip store a recipe trains on; ``synthetic`` generates one inside the run folder."""
    data = recipe["data"]
    store = data.get("store", "synthetic")
    if store != "synthetic":
        return ChipStore(store)
    syn = dict(data.get("synthetic") or {})
    sensor_name = student_sensor(str(recipe["student"]["name"]))
    selection = recipe["student"].get("selection")
    path = run_dir / "data" / f"synthetic-{sensor_name}"
    if launch_rank() != 0:  # rank 0 generates the store; the others wait for it to be sealed
        deadline = time.time() + 3600
        while True:
            try:
                return ChipStore(path)
            except DataError:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
    if (path / "manifest.json").exists():
        try:
            return ChipStore(path)
        except DataError:
            shutil.rmtree(path)
    from hyperkd.core.sensors import get_sensor
    from hyperkd.synth import synthesize

    sensor = get_sensor(sensor_name, selection=selection or "default")
    return synthesize(sensor, path, chips=int(syn.get("chips", 64)), size=int(syn.get("size", 64)),
                      seed=int(syn.get("seed", 0)))


def build_student_for(recipe: Mapping[str, Any], store: ChipStore) -> HyperspectralMAE:
    """The student a recipe names, for the store's band table and statistics."""
    cfg = dict(recipe["student"])
    spec = str(cfg.pop("name"))
    cfg.pop("selection", None)
    init_from = cfg.pop("init_from", None)
    if Path(spec).is_dir() or hub.is_repo_id(spec):
        model = hub.from_pretrained(spec)
        if not isinstance(model, HyperspectralMAE):
            raise RecipeError(f"student {spec!r} is a {type(model).__name__}, not a hyperspectral MAE student")
    else:
        size = spec.rsplit("-mae-", 1)[1] if "-mae-" in spec else None
        if spec in registry("student"):
            name = spec
        elif size in SIZES:
            name = f"mae-{size}"
        else:
            name = "mae-tiny"
        if spec not in registry("student") and student_sensor(spec) != store.sensor.name:
            raise RecipeError(
                f"student {spec!r} is for sensor {student_sensor(spec)!r} but the data store holds "
                f"{store.sensor.name!r} chips ({store.root}); use --student {store.sensor.name}"
            )
        cfg.setdefault("img_size", store.chip_size)
        model = create("student", name, sensor=store.sensor, **cfg)
    if model.in_chans != store.sensor.num_bands or model.img_size != store.chip_size:
        raise RecipeError(
            f"student expects {model.in_chans} bands of {model.img_size} px but {store.root} holds "
            f"{store.sensor.num_bands} bands of {store.chip_size} px"
        )
    if init_from:
        src = hub.from_pretrained(str(init_from))
        model.load_state_dict(src.state_dict())
    return model


def build_losses(recipe: Mapping[str, Any]) -> dict[str, tuple[float, Any]]:
    """``{name: (weight, term)}`` from the recipe's ``losses`` section."""
    out = {}
    for name, params in (recipe.get("losses") or {}).items():
        params = dict(params or {})
        weight = float(params.pop("weight", 1.0))
        term_name = params.pop("term", name)
        out[name] = (weight, create("loss", term_name, **params))
    return out


def _masker(recipe: Mapping[str, Any]) -> tuple[Any, float]:
    cfg = dict(recipe["masker"])
    name = cfg.pop("name")
    ratio = float(cfg.pop("ratio", 0.75))
    return create("masker", name, **cfg), ratio


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


def _wait_for(path: Path, what: str, timeout_s: float = 3600.0) -> None:
    deadline = time.time() + timeout_s
    while not path.exists():
        if time.time() > deadline:
            raise HyperKDError(f"rank {launch_rank()}: gave up waiting for {what} ({path}) from rank 0")
        time.sleep(0.5)


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

    Only rank 0 creates and checks the folder; other ranks wait for it.
    """
    ckpt = out / "checkpoints" / "last.ckpt"
    if launch_rank() != 0:
        _wait_for(out / "recipe.yaml", "the run folder")
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


def _progress_enabled() -> bool:
    return os.environ.get("HYPERKD_DISABLE_PROGRESS", "") in ("", "0")


def make_trainer(recipe: Mapping[str, Any], out: Path, extra_callbacks: Iterable[Any] = ()) -> L.Trainer:
    """A Lightning Trainer configured from the recipe's ``trainer`` section."""
    from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from hyperkd.training.checkpoint import SafetensorsCheckpointIO

    t = dict(recipe["trainer"])
    every = int(t.pop("checkpoint_every_n_steps", 50))
    t.pop("figures", None)
    ckpt = ModelCheckpoint(dirpath=out / "checkpoints", filename="step{step}", save_last=True,
                           every_n_train_steps=every, save_top_k=1, auto_insert_metric_name=False)
    callbacks: list[Any] = [ckpt, *extra_callbacks]
    if _progress_enabled():
        callbacks.append(RichProgressBar())
    loggers: list[Any] = [
        # flushed as often as it logs, so a killed run keeps its history
        CSVLogger(save_dir=str(out), name="", version="logs",
                  flush_logs_every_n_steps=int(t.get("log_every_n_steps", 50))),
        TensorBoardLogger(save_dir=str(out), name="", version="tensorboard"),
    ]
    return L.Trainer(
        callbacks=callbacks,
        logger=loggers,
        plugins=[SafetensorsCheckpointIO()],
        enable_progress_bar=_progress_enabled(),
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
    module_factory: Callable[[Mapping[str, Any], HyperspectralMAE, ChipStore], L.LightningModule] | None = None,
    callbacks: Iterable[Any] = (),
) -> RunResult:
    """Assemble the recipe's parts and train; shared by pretraining and distillation."""
    out = Path(out)
    recipes_mod.validate(recipe)
    resume_from = prepare_run_dir(out, recipe, resume)
    seed = int(recipe.get("seed", 0))
    L.seed_everything(seed, workers=True, verbose=False)
    store = resolve_store(recipe, out)
    student = build_student_for(recipe, store)
    module = (module_factory or pretrain_module)(recipe, student, store)
    d = recipe["data"]
    dm = ChipDataModule(store, batch_size=int(d.get("batch_size", 8)),
                        val_fraction=float(d.get("val_fraction", 0.125)),
                        num_workers=int(d.get("num_workers", 0)), seed=seed)
    trainer = make_trainer(recipe, out, callbacks)
    trainer.fit(module, datamodule=dm, ckpt_path=str(resume_from) if resume_from else None)
    trainer.save_checkpoint(out / "checkpoints" / "last.ckpt")
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    student_dir = out / "student"
    if trainer.is_global_zero:
        atomic_write_json(out / "metrics.json", {"global_step": trainer.global_step, **metrics})
        export_student(module.student, student_dir, provenance=hub.run_provenance(out))
        if recipe["trainer"].get("figures", True):
            write_figures(module, dm, out)
    return RunResult(run_dir=out, metrics=metrics, student_dir=student_dir, global_step=trainer.global_step)


def pretrain_module(recipe: Mapping[str, Any], student: HyperspectralMAE, store: ChipStore) -> L.LightningModule:
    """The no-KD MAE module for a recipe."""
    from hyperkd.training.pretrain import MAEModule

    masker, ratio = _masker(recipe)
    losses = build_losses(recipe)
    if any(getattr(t, "needs_teacher", False) for _, t in losses.values()):
        raise RecipeError("this recipe has distillation loss terms; run it with `hyperkd distill`")
    return MAEModule(student, masker, losses, mask_ratio=ratio, optim=recipe.get("optim"))


def export_student(student: HyperspectralMAE, folder: Path, provenance: Mapping[str, Any] | None = None) -> Path:
    """Save the student as a shareable folder (model.safetensors, config.json, README.md card;
    see :mod:`hyperkd.hub`), replacing ``folder`` atomically. ``provenance`` (recipe, metrics,
    training data: :func:`hyperkd.hub.run_provenance`) goes into the config and the card."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    student.save_pretrained(tmp, provenance=provenance)
    old = folder.with_name(f".{folder.name}.old")
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    if old.exists():
        shutil.rmtree(old)
    return folder


@torch.no_grad()
def write_figures(module: Any, dm: ChipDataModule, out: Path) -> None:
    """Reconstruction figure for one validation chip and the loss curves."""
    from hyperkd.viz.figures import loss_curves, reconstruction_figure

    figs = out / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    loader = dm.val_dataloader()
    batch = next(iter(loader))
    student = module.student.eval()
    device = next(student.parameters()).device
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    gen = torch.Generator().manual_seed(10_000)
    mask = module.make_mask(batch, gen)  # the module's own rule (distillation masks the aligned view)
    out_ = student(batch["image"], mask, batch.get("valid"))
    recon = student.reconstruct(batch["image"], out_).float().cpu().numpy()
    pix = module.pixel_mask(mask, None).cpu().numpy()
    reconstruction_figure(student.sensor, batch["image"][0].float().cpu().numpy(), pix[0], recon[0],
                          figs / "reconstruction.png", title=f"{student.sensor.name}: masked reconstruction")
    loss_curves(out / "logs" / "metrics.csv", figs / "loss.png")
    np.save(figs / "reconstruction_sample.npy", recon[0].astype(np.float16))


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
    ``__`` (``student__name="enmap"``, ``data__store="/data/store"``).
    """
    resolved = recipes_mod.resolve_for_run(recipe, overrides, fields)
    return fit(resolved, out, resume=resume, callbacks=callbacks)
