"""The training engine: one LightningModule family for MAE pretraining and distillation.

Lightning provides precision (``bf16-mixed`` on GPU and CPU), devices, DDP/FSDP,
``num_nodes``, loggers and progress bars; recipes pass those settings straight through.
hyperkd adds: assembly of student, masker and loss terms from names (recipe sections,
:mod:`hyperkd.training.parts`) or built objects; masked reconstruction metrics; the one
optimiser recipe (:mod:`hyperkd.training.optim`). Checkpoint format, exports, figures and
reports live outside the module (:mod:`hyperkd.training.checkpoint`,
:mod:`hyperkd.training.callbacks`), so it trains under any ``lightning.Trainer``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor

from hyperkd import recipes as recipes_mod
from hyperkd.components.metrics import reconstruction_metrics
from hyperkd.models.mae import HyperspectralMAE, MAEOutput
from hyperkd.training.optim import OptimConfig, configure_optimizers
from hyperkd.training.parts import Spec, build_losses, build_masker, build_student, plain_hparams


class MAEModule(L.LightningModule):
    """Masked-autoencoder pretraining of a student (the no-KD baseline).

    Every part may be given by name, as in a recipe, or already built::

        MAEModule(student={"name": "enmap-mae-tiny", "img_size": 64}, masker={"name": "random", "ratio": 0.75},
                  losses={"mse": {"weight": 1.0}, "ssim": {"weight": 0.1}}, optim={"lr": 1e-3})

    ``losses`` maps a term name to a recipe entry (``{weight, term, **kwargs}``) or to a
    built ``(weight, term)``; ``optim`` is an :class:`~hyperkd.training.optim.OptimConfig`
    mapping. Named parts are recorded with ``save_hyperparameters`` so
    ``MAEModule.load_from_checkpoint(path)`` rebuilds the module; pre-built parts are not
    recorded and must be passed again to ``load_from_checkpoint``. Subclasses
    (distillation) add a teacher through :meth:`extra_context`. Unnamed ``masker`` and
    ``losses`` are those of the built-in recipe :attr:`RECIPE` (``mae``: random masking,
    MSE).
    """

    RECIPE = "mae"
    binder: Any = None
    """A :class:`~hyperkd.data.multistore.StoreBinder` (set by the runner for several stores or band
    dropout): binds the student to each batch's store (and kept bands) before the step."""

    def __init__(
        self,
        student: HyperspectralMAE | Spec,
        masker: Any = None,
        losses: Mapping[str, Any] | None = None,
        mask_ratio: float | None = None,
        optim: Mapping[str, Any] | None = None,
        feature_layers: Sequence[int] = (),
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            plain_hparams(
                student=student,
                masker=masker,
                losses=losses,
                mask_ratio=mask_ratio,
                optim=optim,
                feature_layers=list(feature_layers),
            )
        )
        self.student = build_student(student)
        if masker is None or losses is None:
            defaults = recipes_mod.load_recipe(self.RECIPE)
            if masker is None:  # the recipe's masker; an explicit mask_ratio overrides its ratio
                masker = {k: v for k, v in defaults["masker"].items() if k != "ratio" or mask_ratio is None}
            losses = defaults["losses"] if losses is None else losses
        self.masker, self.mask_ratio = build_masker(masker, mask_ratio)
        self.loss_terms = build_losses(losses)
        self.optim_cfg = OptimConfig.from_mapping(optim)
        self.feature_layers = tuple(feature_layers)

    # -- one step ---------------------------------------------------------------------------
    def prepare_batch(self, batch: Mapping[str, Any], train: bool) -> Mapping[str, Any]:
        """The batch as the step reads it: with a :attr:`binder`, the student is bound to the batch's
        store (a training batch may lose bands to band dropout); otherwise unchanged."""
        if self.binder is None:
            return batch
        return self.binder(self.student, dict(batch), self.global_step if train else None)

    def on_train_end(self) -> None:
        """Bind the student back to the first store's full band table (what is exported)."""
        if self.binder is not None:
            self.binder.bind(self.student, 0)

    def make_mask(self, batch: Mapping[str, Tensor], generator: torch.Generator | None = None) -> Tensor:
        return self.masker(batch["image"], self.student.grid, self.mask_ratio, generator)

    def extra_context(self, batch: Mapping[str, Tensor], out: MAEOutput) -> dict[str, Any]:
        """Hook for subclasses: more inputs for loss terms (e.g. teacher features)."""
        return {}

    def shared_step(
        self, batch: Mapping[str, Tensor], generator: torch.Generator | None = None
    ) -> tuple[Tensor, dict[str, Tensor], MAEOutput, Tensor]:
        mask = self.make_mask(batch, generator)
        out = self.student(batch["image"], mask, batch.get("valid"), layers=self.feature_layers)
        ctx = {"batch": batch, "student": self.student, **self.extra_context(batch, out)}
        parts: dict[str, Tensor] = {}
        total = torch.zeros((), device=batch["image"].device)
        for name, (weight, term) in self.loss_terms.items():
            if weight == 0:
                continue
            value = term(out, ctx)
            parts[name] = value.detach()
            total = total + weight * value
        return total, parts, out, mask

    def training_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        batch = self.prepare_batch(batch, train=True)
        loss, parts, _, _ = self.shared_step(batch)
        bs = batch["image"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs, sync_dist=False)
        for k, v in parts.items():
            self.log(f"train/loss_{k}", v, batch_size=bs)
        return loss

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        batch = self.prepare_batch(batch, train=False)
        gen = torch.Generator().manual_seed(10_000 + batch_idx)  # same masks every epoch
        loss, parts, out, mask = self.shared_step(batch, gen)
        bs = batch["image"].shape[0]
        self.log("val/loss", loss, prog_bar=True, batch_size=bs, sync_dist=True)
        for k, v in parts.items():
            self.log(f"val/loss_{k}", v, batch_size=bs, sync_dist=True)
        recon = self.student.reconstruct(batch["image"], out).float()
        pix = self.pixel_mask(mask, batch.get("valid"))
        for k, v in reconstruction_metrics(recon, batch["image"].float(), pix).items():
            if math.isfinite(v):
                self.log(f"val/{k}", v, batch_size=bs, sync_dist=True)

    def pixel_mask(self, mask: Tensor, valid: Tensor | None) -> Tensor:
        """``(B, N)`` patch mask -> ``(B, H, W)`` pixel mask (masked and valid)."""
        p = self.student.patch_size
        gh, gw = self.student.grid
        pix = mask.view(-1, gh, gw).repeat_interleave(p, 1).repeat_interleave(p, 2)
        return pix & valid if valid is not None else pix

    # -- optimisation -----------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW + warmup-cosine over every trainable part (student, projectors, a learned aligner)."""
        return configure_optimizers(self, self.optim_cfg, int(self.trainer.estimated_stepping_batches))
