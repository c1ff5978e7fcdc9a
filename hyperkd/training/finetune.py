"""The Lightning module that fine-tunes a :class:`~hyperkd.models.pixel.PixelModel` on one task.

It runs under any ``lightning.Trainer``: :func:`hyperkd.evaluation.finetune.finetune` is one
caller (splits, seeds, logs, evaluation), a notebook is another::

    from hyperkd.training.finetune import FinetuneModule
    from hyperkd.evaluation.tasks import SegmentationTask

    task = SegmentationTask(classes=("water", "forest", "crops"))
    module = FinetuneModule(task=task, encoder=student, protocol="frozen", lr=1e-3)
    lightning.Trainer(max_epochs=5).fit(module, train_loader, val_loader)
    module.model.save("my-model")

Batches are what :class:`~hyperkd.evaluation.datasets.TaskDataset` yields: ``image``,
``target`` and the chip ``index``. With a fixed encoder (``frozen``, ``linear``) a chip's
encoder output never changes (no augmentation), so it is computed once and kept on the
CPU (:class:`~hyperkd.data.cache.FeatureCache`, up to ``cache_mb``); later epochs only
train the head. Validation logs ``val/loss`` and the headline metrics of the whole
validation set, summed over DDP ranks (:mod:`hyperkd.evaluation.metrics`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from torch import Tensor

from hyperkd.core.errors import HyperKDError
from hyperkd.core.sensors import Sensor
from hyperkd.data.cache import FeatureCache
from hyperkd.evaluation.compare import headline
from hyperkd.evaluation.tasks import Task, task_from_dict
from hyperkd.models.mae import HyperspectralMAE
from hyperkd.models.pixel import PixelModel
from hyperkd.training.optim import adamw_warmup_cosine


class FinetuneModule(L.LightningModule):
    """Trains a :class:`PixelModel`'s head (and, for ``full``, its encoder) on one task.

    Give either ``model`` (a :class:`PixelModel`, or its config mapping) or the plain
    arguments :meth:`PixelModel.build` takes (``task`` bound to its classes or unit,
    ``encoder`` or ``sensor`` + ``img_size``, ``protocol``, ``layers``, ``hidden``).
    The head learns at ``lr``, a trained encoder at ``lr * encoder_lr_scale``; AdamW with a
    linear warmup of ``warmup_steps`` and a cosine decay (:mod:`hyperkd.training.optim`).
    ``save_hyperparameters`` records the optimiser settings and the model's config, so
    ``FinetuneModule.load_from_checkpoint(path)`` rebuilds the module with its weights.
    """

    def __init__(
        self,
        model: PixelModel | Mapping[str, Any] | None = None,
        *,
        task: Task | Mapping[str, Any] | None = None,
        encoder: HyperspectralMAE | None = None,
        sensor: Sensor | None = None,
        img_size: int | None = None,
        protocol: str = "frozen",
        layers: Sequence[int] | int = (-1,),
        hidden: int = 128,
        lr: float = 1e-3,
        encoder_lr_scale: float = 0.1,
        weight_decay: float = 1e-4,
        warmup_steps: int = 0,
        cache_mb: float = 1024.0,
    ) -> None:
        super().__init__()
        if model is None:
            if task is None:
                raise HyperKDError("FinetuneModule needs a model (PixelModel or its config) or a bound task")
            bound = task if isinstance(task, Task) else task_from_dict(task)
            model = PixelModel.build(
                bound,
                encoder=encoder,
                sensor=sensor,
                img_size=img_size,
                protocol=protocol,
                layers=layers,
                hidden=hidden,
            )
        elif task is not None or encoder is not None or sensor is not None:
            raise HyperKDError("FinetuneModule: pass either model= or task=/encoder=/sensor=, not both")
        self.model = model if isinstance(model, PixelModel) else PixelModel(model)
        self.save_hyperparameters("lr", "encoder_lr_scale", "weight_decay", "warmup_steps", "cache_mb")
        # the model's whole construction (load_from_checkpoint passes it back as ``model``)
        self.hparams["model"] = {**self.model.config, "task": self.model.task.to_dict()}
        self.lr, self.encoder_lr_scale, self.weight_decay = lr, encoder_lr_scale, weight_decay
        self.warmup_steps = warmup_steps
        cacheable = self.model.encoder_frozen and self.model.encoder is not None and cache_mb > 0
        self.cache = FeatureCache(cache_mb) if cacheable else None
        self._val_acc: Any = None

    def _features(self, batch: Mapping[str, Any]) -> Tensor:
        """Head inputs of a batch; a fixed encoder's are cached per chip."""
        image = batch["image"]
        if self.cache is None:
            return self.model.features(image)
        keys = [int(i) for i in batch["index"]]
        return self.cache.fetch(keys, lambda missing: [self.model.features(image[missing])], image.device)[0]

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        out = self.model.head_forward(self._features(batch))
        loss = self.model.task.loss(out, batch["target"])
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    def on_validation_epoch_start(self) -> None:
        # on the module's device, so DDP ranks can sum it (float64 states: not on MPS)
        dev = self.device if self.device.type != "mps" else torch.device("cpu")
        self._val_acc = self.model.task.accumulator().to(dev)

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        out = self.model.head_forward(self._features(batch))
        self.log("val/loss", self.model.task.loss(out, batch["target"]), batch_size=batch["image"].shape[0])
        self._val_acc.update(self.model.task.predict(out), batch["target"])

    def on_validation_epoch_end(self) -> None:
        for k, v in headline(self._val_acc.compute()).items():
            if math.isfinite(v):
                self.log(f"val/{k}", v)

    def configure_optimizers(self) -> dict[str, Any]:
        head, enc = self.model.trainable_groups()
        groups = [{"params": head, "lr": self.lr}]
        if enc:
            groups.append({"params": enc, "lr": self.lr * self.encoder_lr_scale})
        return adamw_warmup_cosine(
            groups,
            int(self.trainer.estimated_stepping_batches),
            lr=self.lr,
            weight_decay=self.weight_decay,
            warmup_steps=self.warmup_steps,
        )


__all__ = ["FinetuneModule"]
