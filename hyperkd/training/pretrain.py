"""The training engine: one LightningModule family for MAE pretraining and distillation.

Lightning provides precision (``bf16-mixed`` on GPU and CPU), devices, DDP/FSDP,
``num_nodes``, loggers and progress bars; recipes pass those settings straight through.
hyperkd adds: recipe-driven assembly of student, masker and loss terms; masked
reconstruction metrics; safetensors checkpoints written atomically
(:mod:`hyperkd.training.checkpoint`); figures.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from torch import Tensor

from hyperkd.components.losses import LossTerm
from hyperkd.components.metrics import reconstruction_metrics
from hyperkd.models.mae import HyperspectralMAE, MAEOutput


class MAEModule(L.LightningModule):
    """Masked-autoencoder pretraining of a student (the no-KD baseline).

    ``losses`` maps a term name to ``(weight, term)``. Subclasses (distillation) add a
    teacher through :meth:`extra_context`.
    """

    def __init__(
        self,
        student: HyperspectralMAE,
        masker: Any,
        losses: Mapping[str, tuple[float, LossTerm]],
        mask_ratio: float = 0.75,
        optim: Mapping[str, Any] | None = None,
        feature_layers: tuple[int, ...] = (),
    ) -> None:
        super().__init__()
        self.student = student
        self.masker = masker
        self.loss_terms = dict(losses)
        self.mask_ratio = mask_ratio
        self.optim_cfg = dict(optim or {})
        self.feature_layers = tuple(feature_layers)

    # -- one step ---------------------------------------------------------------------------
    def make_mask(self, batch: Mapping[str, Tensor], generator: torch.Generator | None = None) -> Tensor:
        return self.masker(batch["image"], self.student.grid, self.mask_ratio, generator)

    def extra_context(self, batch: Mapping[str, Tensor], out: MAEOutput) -> dict[str, Any]:
        """Hook for subclasses: more inputs for loss terms (e.g. teacher features)."""
        return {}

    def shared_step(self, batch: Mapping[str, Tensor], generator: torch.Generator | None = None
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
        loss, parts, _, _ = self.shared_step(batch)
        bs = batch["image"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs, sync_dist=False)
        for k, v in parts.items():
            self.log(f"train/loss_{k}", v, batch_size=bs)
        return loss

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
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
        cfg = self.optim_cfg
        decay, no_decay = [], []
        for name, p in self.student.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim < 2 or name.endswith(("cls_token", "mask_token")) else decay).append(p)
        for name, p in self.named_parameters():  # trainable parts outside the student (projectors)
            if not name.startswith("student.") and p.requires_grad:
                (no_decay if p.ndim < 2 else decay).append(p)
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": float(cfg.get("weight_decay", 0.05))},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=float(cfg.get("lr", 1e-3)),
            betas=tuple(cfg.get("betas", (0.9, 0.95))),
        )
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        warmup = min(int(cfg.get("warmup_steps", 0)), max(total - 1, 0))

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / max(warmup, 1)
            progress = (step - warmup) / max(total - warmup, 1)
            return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
