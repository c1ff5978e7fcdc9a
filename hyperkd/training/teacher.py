"""Pretrain a small teacher on a multispectral chip store (its own MAE objective).

Real HyperKD uses NASA/IBM's Prithvi-EO, pretrained on millions of HLS chips. Offline,
with no such weights, the quickstart trains a *tiny Prithvi-architecture* teacher on a
large synthetic multispectral set instead, so the distillation path runs end to end.
It is named honestly everywhere: it is not NASA/IBM's Prithvi.

Any registered teacher that implements :meth:`hyperkd.core.interfaces.Teacher.mae_loss` and
``save_weights`` can be pretrained this way.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch

from hyperkd.core.errors import HyperKDError
from hyperkd.core.io import atomic_write_json
from hyperkd.core.registry import create
from hyperkd.data.loader import ChipDataModule
from hyperkd.data.store import ChipStore
from hyperkd.training.optim import OptimConfig, configure_optimizers
from hyperkd.training.parts import plain_hparams, split_spec

DEFAULT_OPTIM: dict[str, Any] = {"lr": 1e-3, "weight_decay": 0.05, "betas": (0.9, 0.95)}
"""Teacher pretraining's optimiser settings (MAE-style AdamW)."""


class TeacherMAEModule(L.LightningModule):
    """Trains a teacher (built with its decoder) on its masked-reconstruction loss.

    ``teacher``: a built teacher, or a name / ``{"name", **architecture}`` section built from
    random init with its decoder (``create("teacher", name, weights=None, keep_decoder=True,
    frozen=False, ...)``); named teachers are recorded with ``save_hyperparameters``.
    ``optim``: an :class:`~hyperkd.training.optim.OptimConfig` mapping over
    :data:`DEFAULT_OPTIM`.
    """

    def __init__(
        self, teacher: Any, mask_ratio: float = 0.75, optim: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__()
        self.save_hyperparameters(plain_hparams(teacher=teacher, mask_ratio=mask_ratio, optim=optim))
        if isinstance(teacher, str | Mapping):
            name, cfg = split_spec(teacher, "teacher")
            teacher = create(
                "teacher", name, **{"weights": None, "keep_decoder": True, "frozen": False, **cfg}
            )
        self.teacher = teacher
        self.mask_ratio = mask_ratio
        self.optim_cfg = OptimConfig.from_mapping({**DEFAULT_OPTIM, **(optim or {})})

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.teacher.mae_loss(batch["image"], self.mask_ratio)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        torch.manual_seed(batch_idx)
        loss = self.teacher.mae_loss(batch["image"], self.mask_ratio)
        self.log("val/loss", loss, batch_size=batch["image"].shape[0])

    def configure_optimizers(self) -> dict[str, Any]:
        """The shared AdamW + warmup-cosine recipe (:mod:`hyperkd.training.optim`)."""
        return configure_optimizers(self, self.optim_cfg, int(self.trainer.estimated_stepping_batches))


def pretrain_teacher(
    store: str | Path | ChipStore,
    out: str | Path,
    *,
    teacher: str = "prithvi-eo-tiny",
    epochs: int = 5,
    batch_size: int = 16,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = False,
    **architecture: Any,
) -> Path:
    """Train ``teacher`` from random init on ``store``; returns the weights file written.

    ``out`` is a folder; it receives ``teacher.safetensors`` (load it with
    ``create("teacher", teacher, weights=PATH, **architecture)``) and ``teacher.json``
    (architecture, data, losses).
    """
    store = store if isinstance(store, ChipStore) else ChipStore(store)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    L.seed_everything(seed, workers=True, verbose=False)
    model = create(
        "teacher",
        teacher,
        weights=None,
        keep_decoder=True,
        frozen=False,
        img_size=store.chip_size,
        **architecture,
    )
    if [b.name for b in model.sensor.bands] != store.sensor.band_names:
        raise HyperKDError(
            f"teacher {teacher!r} expects bands {model.sensor.band_names} but {store.root} holds "
            f"{store.sensor.band_names}; synthesise the teacher's view with `hyperkd data synth --sensor "
            f"{model.sensor.name}`"
        )
    module = TeacherMAEModule(model, optim={"lr": lr})
    dm = ChipDataModule(store, batch_size=batch_size, val_fraction=0.1, seed=seed)
    trainer = L.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="auto",
        devices=1,
    )
    trainer.fit(module, datamodule=dm)
    weights = out / "teacher.safetensors"
    model.save_weights(str(weights))
    atomic_write_json(
        out / "teacher.json",
        {
            "teacher": teacher,
            "architecture": {"img_size": store.chip_size, **architecture},
            "note": "a small Prithvi-architecture teacher trained by hyperkd; NOT NASA/IBM's Prithvi-EO weights",
            "data": {"store": str(store.root), "chips": len(store), "synthetic": store.synthetic},
            "epochs": epochs,
            "final": {k: float(v) for k, v in trainer.callback_metrics.items()},
        },
    )
    return weights
