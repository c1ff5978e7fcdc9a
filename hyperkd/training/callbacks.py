"""What a run leaves behind besides checkpoints, as Lightning callbacks.

The runner (:func:`hyperkd.training.runner.fit`) adds these to its Trainer; a notebook
user adds the ones they want to their own ``L.Trainer``::

    trainer = L.Trainer(max_epochs=5, callbacks=[MetricsReport("run/metrics.json"),
                                                 ExportStudent("run/student")])

Each acts once, at ``on_fit_end`` on global rank 0, so the training loop itself never
writes exports, figures or reports. They run in the order given: the runner puts
:class:`MetricsReport` first because the exported student's card quotes ``metrics.json``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from hyperkd.core.io import atomic_folder, atomic_write_json

log = logging.getLogger(__name__)


def final_metrics(trainer: L.Trainer, prefix: str = "val/") -> dict[str, float]:
    """The trainer's last logged metrics whose names start with ``prefix``, as floats."""
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(prefix)}


class RunEndReport(L.Callback):
    """Base of the report callbacks: :meth:`write` runs once, at ``on_fit_end``, on global rank 0."""

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self.write(trainer, pl_module)

    def write(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Write the report (subclasses)."""
        raise NotImplementedError


class MetricsReport(RunEndReport):
    """Writes ``{"global_step", "val/...": ...}`` (the final validation metrics) to ``path``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def write(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        atomic_write_json(self.path, {"global_step": trainer.global_step, **final_metrics(trainer)})


class StudentForData(L.Callback):
    """Rebuilds ``pl_module.student`` for the data once the data module has prepared it.

    A student normalises its input with its store's per-band statistics, which a synthetic
    store only has after ``prepare_data`` generated it. The runner then builds the module
    around a student for the nominal band table and adds this callback: at ``setup`` (on
    every rank, after the data barrier, before optimisers, DDP and checkpoint restore) the
    student is replaced by ``build(store)``, same architecture, initialised from ``seed``.
    """

    def __init__(self, build: Callable[[Any], torch.nn.Module], seed: int = 0) -> None:
        self.build = build
        self.seed = int(seed)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or trainer.datamodule is None:
            return
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            pl_module.student = self.build(trainer.datamodule.store)


def export_student(student: Any, folder: Path, provenance: Mapping[str, Any] | None = None) -> Path:
    """Save the student as a shareable folder (model.safetensors, config.json, README.md card;
    see :mod:`hyperkd.hub`), replacing ``folder`` atomically. ``provenance`` (recipe, metrics,
    training data: :func:`hyperkd.hub.run_provenance`) goes into the config and the card."""
    folder = Path(folder)
    with atomic_folder(folder) as tmp:
        student.save_pretrained(tmp, provenance=provenance)
    return folder


class ExportStudent(RunEndReport):
    """Exports ``pl_module.student`` to ``folder`` (:func:`export_student`) when training ends.

    ``run_dir``: a run folder whose recipe and ``metrics.json`` become the export's provenance.
    """

    def __init__(self, folder: str | Path, run_dir: str | Path | None = None) -> None:
        self.folder = Path(folder)
        self.run_dir = Path(run_dir) if run_dir is not None else None

    def write(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from hyperkd import hub

        provenance = hub.run_provenance(self.run_dir) if self.run_dir is not None else None
        export_student(pl_module.student, self.folder, provenance=provenance)
        log.info("exported the student to %s", self.folder)


def _first_val_batch(trainer: L.Trainer) -> Mapping[str, Any] | None:
    if trainer.datamodule is not None:
        loader = trainer.datamodule.val_dataloader()
    else:
        loader = trainer.val_dataloaders
        if isinstance(loader, Sequence):
            loader = loader[0] if loader else None
    return next(iter(loader), None) if loader is not None else None


@torch.no_grad()
def write_figures(module: Any, batch: Mapping[str, Any], figs: Path, metrics_csv: Path | None = None) -> None:
    """Reconstruction figure (and sample) for the batch's first chip; loss curves from ``metrics_csv``."""
    from hyperkd.viz.figures import loss_curves, reconstruction_figure

    figs.mkdir(parents=True, exist_ok=True)
    student = module.student.eval()
    device = next(student.parameters()).device
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    gen = torch.Generator().manual_seed(10_000)
    mask = module.make_mask(batch, gen)  # the module's own rule (distillation masks the aligned view)
    out_ = student(batch["image"], mask, batch.get("valid"))
    recon = student.reconstruct(batch["image"], out_).float().cpu().numpy()
    pix = module.pixel_mask(mask, None).cpu().numpy()
    reconstruction_figure(
        student.sensor,
        batch["image"][0].float().cpu().numpy(),
        pix[0],
        recon[0],
        figs / "reconstruction.png",
        title=f"{student.sensor.name}: masked reconstruction",
    )
    if metrics_csv is not None:
        loss_curves(metrics_csv, figs / "loss.png")
    np.save(figs / "reconstruction_sample.npy", recon[0].astype(np.float16))


class ReconstructionFigures(RunEndReport):
    """``figures/reconstruction.png`` for one validation chip, and loss curves from a CSV log."""

    def __init__(self, folder: str | Path, metrics_csv: str | Path | None = None) -> None:
        self.folder = Path(folder)
        self.metrics_csv = Path(metrics_csv) if metrics_csv is not None else None

    def write(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        batch = _first_val_batch(trainer)
        if batch is None:
            log.warning("no validation data: skipping the reconstruction figure")
            return
        write_figures(pl_module, batch, self.folder, self.metrics_csv)


class DistillReport(RunEndReport):
    """``distill.json`` (teacher, aligner, layer pairs, what the teacher cost and the cache saved)
    and, with ``metrics_csv``, ``figures/distill_loss.png`` (the teacher-comparing loss terms).

    ``info``: the run's fixed facts (teacher section, its weights, aligner section), written as is.
    """

    def __init__(
        self,
        run_dir: str | Path,
        info: Mapping[str, Any] | None = None,
        metrics_csv: str | Path | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.info = dict(info or {})
        self.metrics_csv = Path(metrics_csv) if metrics_csv is not None else None

    def write(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from hyperkd.training.distill import teacher_terms

        stats = {**self.info, "pairs": pl_module.pairs, **pl_module.teacher_stats()}
        if hasattr(pl_module.aligner, "band_report"):  # the missing-band policy and what it applied to
            stats["aligner_bands"] = pl_module.aligner.band_report()
        atomic_write_json(self.run_dir / "distill.json", jsonable(stats))
        if self.metrics_csv is not None:
            from hyperkd.viz.figures import loss_curves

            keys = [f"{split}/loss_{t}" for t in teacher_terms(pl_module) for split in ("train", "val")]
            (self.run_dir / "figures").mkdir(parents=True, exist_ok=True)
            loss_curves(self.metrics_csv, self.run_dir / "figures" / "distill_loss.png", keys=keys or None)


def jsonable(obj: Any) -> Any:
    """Plain JSON types only (recipe values and weight infos may hold paths or tuples)."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, str | int | float | bool) or obj is None:
        return obj
    return str(obj)


class StopOnNonFiniteLoss(L.Callback):
    """Stops training at the first NaN or infinite training loss, before its backward pass and
    optimiser step, so the weights (and any checkpoint) stay finite and no student is exported.

    Raises :class:`~hyperkd.core.errors.TrainingError` naming the step; ``hint`` says what to check
    (the runner gives ``hyperkd data info STORE``).
    """

    def __init__(self, hint: str = "check the chips with `hyperkd data info STORE`") -> None:
        self.hint = hint

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor
    ) -> None:
        if bool(torch.isfinite(loss.detach()).all()):
            return
        from hyperkd.core.errors import TrainingError

        raise TrainingError(
            f"the training loss is {float(loss.detach().float().mean())} at step {trainer.global_step} "
            f"(epoch {trainer.current_epoch}); training stopped before that step's update and nothing was "
            f"exported: {self.hint}, or lower optim.lr"
        )


class ResumeBookkeeping(L.Callback):
    """Rewrites a resumed run's ``recipe.yaml`` with the trainer settings the resume changed
    (``recipe``: the new text) once Lightning has restored the checkpoint and training starts
    (``on_train_start``, global rank 0), so a resume that fails earlier leaves the recipe as it was."""

    def __init__(self, run_dir: str | Path, recipe: str | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.recipe = recipe

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self.recipe is not None:
            from hyperkd.core.io import atomic_write_text

            atomic_write_text(self.run_dir / "recipe.yaml", self.recipe)


def keep_metrics_history(logs: Path) -> Path | None:
    """Move ``metrics.csv`` aside before a resumed run's logger starts (Lightning's CSV logger
    deletes an existing one); returns where it went (None: there was none).

    The earlier part becomes ``metrics.part-N.csv`` and :func:`hyperkd.viz.figures.read_metrics`
    joins the parts.
    """
    current = logs / "metrics.csv"
    if not current.exists():
        return None
    part = logs / f"metrics.part-{len(list(logs.glob('metrics.part-*.csv'))):03d}.csv"
    current.rename(part)
    return part
