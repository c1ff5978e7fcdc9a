"""The Lightning module that fine-tunes a :class:`~hyperkd.models.pixel.PixelModel` on one task.

It runs under any ``lightning.Trainer``: :func:`hyperkd.evaluation.finetune.finetune` is one
caller (splits, seeds, logs, evaluation), a notebook is another::

    from hyperkd.training.finetune import FinetuneModule
    from hyperkd.evaluation.tasks import SegmentationTask

    task = SegmentationTask(classes=("water", "forest", "crops"))
    module = FinetuneModule(task=task, encoder=student, protocol="fused", lr=1e-3, loss="weighted")
    lightning.Trainer(max_epochs=5).fit(module, train_loader, val_loader)
    module.model.save("my-model")

Batches are what :class:`~hyperkd.evaluation.datasets.TaskDataset` yields: ``image``,
``target`` and the chip ``index``. With a fixed encoder (every protocol but ``full`` and
``fused-full``) a chip's encoder output never changes (no augmentation), so it is computed
once and kept on the CPU (:class:`~hyperkd.data.cache.FeatureCache`, up to ``cache_mb``);
later epochs only train the head. The pixel-resolution heads read the spectra from the
batch itself, next to the cached encoder features. Validation logs ``val/loss`` and the
headline metrics of the whole validation set, summed over DDP ranks
(:mod:`hyperkd.evaluation.metrics`).

Losses for segmentation (``loss=``, :data:`LOSSES`); the task's ignore index is never scored:

``auto`` (the default)
    ``weighted`` for segmentation, the task's own loss (MSE) for regression: on the real EnMAP
    tiles the weighted loss lifts the rare classes that mIoU averages over (docs/tasks.md,
    "Why these defaults").
``ce``
    plain cross-entropy (the task's own loss).
``weighted``
    cross-entropy with class weights from the training labels' pixel frequencies
    (:func:`class_weights_from_counts`: inverse square root of the frequency, normalised to a mean weight
    of 1 over the training pixels, clipped to at most ``10``), so a class with 1/100 of the
    pixels counts 10 times as much per pixel as an average one, not 100 times.
``focal``
    focal loss (Lin et al. 2017), ``(1 - p_t)**2 * -log p_t``: confidently right pixels
    count little, hard ones fully; no class weights.

Regression tasks always use their MSE on standardised targets.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, cast

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from hyperkd.core.errors import HyperKDError
from hyperkd.core.sensors import Sensor
from hyperkd.data.cache import FeatureCache
from hyperkd.evaluation.compare import headline
from hyperkd.evaluation.tasks import SegmentationTask, Task, task_from_dict
from hyperkd.models.mae import HyperspectralMAE
from hyperkd.models.pixel import DEFAULT_FUSION, DEFAULT_PROTOCOL, PixelModel
from hyperkd.training.optim import adamw_warmup_cosine

log = logging.getLogger(__name__)

LOSSES = ("auto", "ce", "weighted", "focal")
"""Segmentation losses :class:`FinetuneModule` trains with (see the module docstring)."""
DEFAULT_LOSS = "auto"
MIN_EPOCHS = 20
MIN_STEPS = 120
"""``epochs=None`` trains for :func:`default_epochs`: at least ``MIN_EPOCHS`` epochs and at least
``MIN_STEPS`` optimiser steps, so a few dozen labelled chips (2 batches an epoch) still get 120
steps instead of 40 (docs/tasks.md, "Why these defaults")."""
MAX_CLASS_WEIGHT = 10.0
FOCAL_GAMMA = 2.0


def check_loss(loss: str, task: Task) -> str:
    """``loss`` if known and usable for ``task``, else a :class:`HyperKDError` saying what to do."""
    if loss not in LOSSES:
        raise HyperKDError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
    if loss not in ("ce", "auto") and not isinstance(task, SegmentationTask):
        raise HyperKDError(
            f"loss {loss!r} is for segmentation tasks; task {task.name or task.kind!r} is "
            f"{task.kind} and trains with MSE (use --loss ce)"
        )
    return loss


def resolve_loss(loss: str, task: Task) -> str:
    """The loss actually trained: ``auto`` -> ``weighted`` for segmentation, ``ce`` (the task's own
    MSE) for regression; any other name checked by :func:`check_loss`."""
    check_loss(loss, task)
    if loss == "auto":
        return "weighted" if isinstance(task, SegmentationTask) else "ce"
    return loss


def default_epochs(batches_per_epoch: int) -> int:
    """Epochs for ``epochs=None``: ``max(MIN_EPOCHS, ceil(MIN_STEPS / batches_per_epoch))``."""
    return max(MIN_EPOCHS, math.ceil(MIN_STEPS / max(int(batches_per_epoch), 1)))


def class_weights_from_counts(
    counts: Sequence[float] | Tensor, max_weight: float = MAX_CLASS_WEIGHT
) -> Tensor:
    """Per-class loss weights from training pixel counts: ``w_c = 1 / sqrt(f_c)`` (``f_c`` the
    class's share of the labelled pixels), scaled so that the average weight over the
    training pixels ``sum_c f_c w_c`` is 1, then clipped to ``max_weight``. Classes without
    a training pixel get ``max_weight`` (they never occur in the loss anyway)."""
    n = torch.as_tensor(counts, dtype=torch.float64).clamp_min(0)
    if not bool((n > 0).any()):
        raise HyperKDError("no labelled training pixel to compute class weights from")
    f = n / n.sum()
    w = torch.where(f > 0, f.clamp_min(1e-12).rsqrt(), torch.zeros_like(f))
    w = w / (f * w).sum()
    w = torch.where(f > 0, w, torch.full_like(w, max_weight)).clamp(max=max_weight)
    return w.float()


def class_weights_of(labels: Any, chips: Sequence[int]) -> list[float]:
    """:func:`class_weights_from_counts` of the classes' pixel counts on the training ``chips``
    (``labels``: :class:`~hyperkd.evaluation.labels.TaskLabels`, its targets per chip)."""
    k = labels.task.out_channels
    counts = torch.zeros(k, dtype=torch.float64)
    for i in chips:
        t = torch.as_tensor(labels.target(i)).flatten().long()
        counts += torch.bincount(t[(t >= 0) & (t < k)], minlength=k)[:k].double()
    weights = class_weights_from_counts(counts).tolist()
    log.info("class weights (inverse sqrt frequency, clipped): %s", ", ".join(f"{w:.2f}" for w in weights))
    return weights


def segmentation_loss(
    output: Tensor,
    target: Tensor,
    ignore_index: int,
    loss: str = "ce",
    weight: Tensor | None = None,
    gamma: float = FOCAL_GAMMA,
) -> Tensor:
    """Mean ``loss`` (``ce``, ``weighted`` with ``weight``, ``focal``) over the labelled pixels."""
    keep = target != ignore_index
    if not bool(keep.any()):
        return output.sum() * 0.0  # a batch without labelled pixels: no signal, keep the graph
    logits, t = output.float(), target.long()
    if loss == "focal":
        logp = F.log_softmax(logits, dim=1)
        tt = torch.where(keep, t, torch.zeros_like(t))
        logp_t = logp.gather(1, tt[:, None])[:, 0][keep]
        return (-((1 - logp_t.exp()) ** gamma) * logp_t).mean()
    w = weight.to(logits.device) if (loss == "weighted" and weight is not None) else None
    return F.cross_entropy(logits, t, weight=w, ignore_index=ignore_index)


Window = tuple[int, int, int, int]
"""``(y0, y1, x0, x1)``: rows ``y0:y1`` and columns ``x0:x1`` of a chip."""

VAL_POINTS = 10
"""About how many times a fine-tune validates during training (only the val/loss curve)."""


def val_every(epochs: int) -> int:
    """Validate every this many epochs: :data:`VAL_POINTS` times over ``epochs``, at least every epoch."""
    return max(1, epochs // VAL_POINTS)


class FinetuneModule(L.LightningModule):
    """Trains a :class:`PixelModel`'s head (and, for ``full``/``fused-full``, its encoder) on one task.

    Give either ``model`` (a :class:`PixelModel`, or its config mapping) or the plain
    arguments :meth:`PixelModel.build` takes (``task`` bound to its classes or unit,
    ``encoder`` or ``sensor`` + ``img_size``, ``protocol``, ``layers``, ``hidden``).
    The head learns at ``lr``, a trained encoder at ``lr * encoder_lr_scale``; AdamW with a
    linear warmup of ``warmup_steps`` and a cosine decay (:mod:`hyperkd.training.optim`).
    ``loss`` is one of :data:`LOSSES` (segmentation); ``weighted`` uses ``class_weights``
    (one per class), or, if not given, :func:`class_weights_from_counts` of the training loader's
    labels, counted once when fitting starts.
    ``save_hyperparameters`` records the optimiser and loss settings and the model's
    config, so ``FinetuneModule.load_from_checkpoint(path)`` rebuilds the module with its weights.
    """

    def __init__(
        self,
        model: PixelModel | Mapping[str, Any] | None = None,
        *,
        task: Task | Mapping[str, Any] | None = None,
        encoder: HyperspectralMAE | None = None,
        sensor: Sensor | None = None,
        img_size: int | None = None,
        protocol: str = DEFAULT_PROTOCOL,
        layers: Sequence[int] | int | None = None,
        hidden: int = 128,
        fusion: str = DEFAULT_FUSION,
        lr: float = 1e-3,
        encoder_lr_scale: float = 0.1,
        weight_decay: float = 1e-4,
        warmup_steps: int = 0,
        cache_mb: float = 1024.0,
        loss: str = DEFAULT_LOSS,
        class_weights: Sequence[float] | None = None,
        train_crop: int | None = None,
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
                fusion=fusion,
            )
        elif task is not None or encoder is not None or sensor is not None:
            raise HyperKDError("FinetuneModule: pass either model= or task=/encoder=/sensor=, not both")
        self.model = model if isinstance(model, PixelModel) else PixelModel(model)
        self.loss_name = resolve_loss(loss, self.model.task)
        if class_weights is not None:
            k = self.model.task.out_channels
            if len(class_weights) != k:
                raise HyperKDError(f"class_weights has {len(class_weights)} values; the task has {k} classes")
            class_weights = [float(w) for w in class_weights]
        self.class_weights = class_weights
        if train_crop is not None and train_crop < 1:
            raise HyperKDError(f"train_crop must be a positive number of pixels or None, got {train_crop}")
        self.train_crop = train_crop
        self.save_hyperparameters(
            "lr",
            "encoder_lr_scale",
            "weight_decay",
            "warmup_steps",
            "cache_mb",
            "loss",
            "class_weights",
            "train_crop",
        )
        # the model's whole construction (load_from_checkpoint passes it back as ``model``)
        self.hparams["model"] = {**self.model.config, "task": self.model.task.to_dict()}
        self.lr, self.encoder_lr_scale, self.weight_decay = lr, encoder_lr_scale, weight_decay
        self.warmup_steps = warmup_steps
        cacheable = self.model.encoder_frozen and self.model.encoder is not None and cache_mb > 0
        self.cache = FeatureCache(cache_mb) if cacheable else None
        self._val_acc: Any = None

    def _features(self, batch: Mapping[str, Any]) -> Tensor | None:
        """The encoder's part of a batch's head input; a fixed encoder's is cached per chip."""
        image = batch["image"]
        if self.cache is None:
            return self.model.features(image)
        keys = [int(i) for i in batch["index"]]

        def encode(missing: list[int]) -> list[Tensor]:
            # the cache exists only with an encoder, whose features are tokens, never None
            return [cast(Tensor, self.model.features(image[missing]))]

        return self.cache.fetch(keys, encode, image.device)[0]

    def forward_batch(self, batch: Mapping[str, Any], window: Window | None = None) -> Tensor:
        """Raw model outputs for a batch (cached encoder features + the batch's own spectra); with
        ``window`` ``(y0, y1, x0, x1)`` only that window's (the features stay the whole chip's)."""
        image = batch["image"]
        if window is not None:
            image = image[..., window[0] : window[1], window[2] : window[3]]
        return self.model.head_forward(self._features(batch), image, window)

    def criterion(self, output: Tensor, target: Tensor) -> Tensor:
        """The training loss (:data:`LOSSES` for segmentation; the task's MSE for regression)."""
        task = self.model.task
        if not isinstance(task, SegmentationTask):
            return task.loss(output, target)
        weight = torch.tensor(self.class_weights) if self.class_weights is not None else None
        return segmentation_loss(output, target, task.ignore_index, self.loss_name, weight)

    def on_fit_start(self) -> None:
        if self.loss_name == "weighted" and self.class_weights is None:
            k = self.model.task.out_channels
            counts = torch.zeros(k, dtype=torch.float64)
            ignore = getattr(self.model.task, "ignore_index", -1)
            loader = self.trainer.train_dataloader
            if loader is None:
                raise HyperKDError("loss 'weighted' without class_weights needs a training dataloader")
            for batch in loader:
                t = batch["target"].reshape(-1)
                t = t[(t != ignore) & (t >= 0) & (t < k)]
                counts += torch.bincount(t.long(), minlength=k).double()
            self.class_weights = class_weights_from_counts(counts).tolist()
            self.hparams["class_weights"] = self.class_weights

    def crop_windows(self, height: int, width: int) -> tuple[Window, Window] | None:
        """A random training crop of ``train_crop`` px and the window the head reads around it
        (the crop plus the head's :attr:`~hyperkd.models.pixel.PixelModel.crop_margin`, cut at
        the chip's edges), both ``(y0, y1, x0, x1)``; ``None``: train on the whole chip (no
        ``train_crop``, a head that cannot, or a chip no larger than the crop)."""
        c, margin = self.train_crop, self.model.crop_margin
        if not c or margin is None or (c >= height and c >= width):
            return None
        ch, cw = min(c, height), min(c, width)
        y0 = int(torch.randint(0, height - ch + 1, ()).item())
        x0 = int(torch.randint(0, width - cw + 1, ()).item())
        crop = (y0, y0 + ch, x0, x0 + cw)
        read = (
            max(0, y0 - margin),
            min(height, y0 + ch + margin),
            max(0, x0 - margin),
            min(width, x0 + cw + margin),
        )
        return crop, read

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        image, target = batch["image"], batch["target"]
        windows = self.crop_windows(*image.shape[-2:])
        if windows is None:
            output = self.forward_batch(batch)
        else:
            # the head reads the crop plus its margin; the encoder features are those of the
            # whole chip (cached), cut to the same window: inside the crop the outputs equal
            # the whole chip's, at a fraction of the pixels
            (y0, y1, x0, x1), (ry0, _, rx0, _) = windows
            output = self.forward_batch(batch, windows[1])[..., y0 - ry0 : y1 - ry0, x0 - rx0 : x1 - rx0]
            target = target[..., y0:y1, x0:x1]
        loss = self.criterion(output, target)
        self.log("train/loss", loss, prog_bar=True, batch_size=image.shape[0])
        return loss

    def on_validation_epoch_start(self) -> None:
        # on the module's device, so DDP ranks can sum it (float64 states: not on MPS)
        dev = self.device if self.device.type != "mps" else torch.device("cpu")
        self._val_acc = self.model.task.accumulator().to(dev)

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        out = self.forward_batch(batch)
        self.log("val/loss", self.criterion(out, batch["target"]), batch_size=batch["image"].shape[0])
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


__all__ = [
    "DEFAULT_LOSS",
    "LOSSES",
    "MIN_EPOCHS",
    "MIN_STEPS",
    "FinetuneModule",
    "check_loss",
    "class_weights_from_counts",
    "default_epochs",
    "resolve_loss",
    "segmentation_loss",
    "val_every",
]
