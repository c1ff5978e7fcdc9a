"""Downstream tasks: pixel-wise segmentation and regression, their losses and exact metrics.

Two task *kinds* are registered (``hyperkd list task``):

* ``segmentation`` — one class per pixel (land cover, crop type). Metrics: overall
  accuracy, mean IoU, per-class IoU / precision / recall / F1, macro F1 and the confusion
  matrix (rows = truth, columns = prediction).
* ``regression`` — one value per pixel (soil organic carbon). Metrics: RMSE, MAE, R2 and
  bias (mean of prediction - truth), in the label's unit.

and three named presets, which are what ``hyperkd finetune --task`` takes: ``landcover``
(segmentation of the ``landcover`` label), ``croptype`` (segmentation of ``croptype``) and
``soc`` (regression of ``soc``, g/kg).

Metrics (overall accuracy, IoU, F1, RMSE, R2...) are computed exactly over the whole
evaluation set by the accumulators of :mod:`hyperkd.evaluation.metrics` (torchmetrics
metrics, summed over DDP ranks); its docstring states how ignored pixels, absent classes
and constant targets count. They are re-exported here, where they have always been imported from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from hyperkd.core.errors import DataError, HyperKDError
from hyperkd.core.registry import register, registry
from hyperkd.data.store import LabelSpec
from hyperkd.evaluation.metrics import (
    ConfusionAccumulator,
    RegressionAccumulator,
    classification_metrics,
    confusion_matrix,
    regression_metrics,
)

# ----------------------------------------------------------------------------------------------
# Tasks
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Task:
    """A per-pixel prediction problem on one label layer.

    ``name`` is the preset's name (``landcover``) or the kind's; ``label`` the chip-store
    label layer (or the name given to a label raster). A task is *bound* to the label's
    metadata (classes, unit) by :meth:`bind` before training.
    """

    kind: ClassVar[str] = ""
    label_kind: ClassVar[str] = ""
    primary_metric: ClassVar[str] = ""

    label: str
    name: str = ""

    @property
    def out_channels(self) -> int:
        """How many numbers the model predicts per pixel."""
        raise NotImplementedError

    def bind(self, spec: LabelSpec) -> Task:
        """This task with the label layer's metadata; refuses a label of the wrong kind."""
        if spec.kind != self.label_kind:
            raise DataError(
                f"task {self.name or self.kind!r} is {self.kind} and needs a {self.label_kind} label, "
                f"but label {self.label!r} is {spec.kind}; pick a task of the other kind or another --label"
            )
        return self

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        """Training loss of raw model output ``(B, out_channels, H, W)`` against ``(B, H, W)``."""
        raise NotImplementedError

    def predict(self, output: Tensor) -> Tensor:
        """``(B, H, W)`` predictions (class ids or values in the label's unit)."""
        raise NotImplementedError

    def accumulator(self) -> ConfusionAccumulator | RegressionAccumulator:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """JSON-able config; :func:`task_from_dict` rebuilds the task."""
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return {"kind": self.kind, **d}


@register("task", "segmentation")
@dataclass(frozen=True)
class SegmentationTask(Task):
    """Pixel-wise classification: cross-entropy; accuracy, mIoU, per-class F1, confusion matrix.

    ``codes`` (optional) are the raw label-raster values behind class ids ``0..K-1`` (a
    GeoTIFF's NLCD or CDL codes); empty when the labels come from a chip store.
    """

    kind: ClassVar[str] = "segmentation"
    label_kind: ClassVar[str] = "class"
    primary_metric: ClassVar[str] = "miou"

    label: str = "landcover"
    name: str = "segmentation"
    classes: tuple[str, ...] = ()
    ignore_index: int = -1
    codes: tuple[float, ...] = ()

    @property
    def out_channels(self) -> int:
        if not self.classes:
            raise HyperKDError(f"task {self.name!r} is not bound to a label layer yet (no classes)")
        return len(self.classes)

    def bind(self, spec: LabelSpec) -> SegmentationTask:
        super().bind(spec)
        if not spec.classes:
            raise DataError(f"label {self.label!r} declares no classes")
        return replace(self, classes=tuple(spec.classes), ignore_index=spec.ignore_index)

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        if not bool((target != self.ignore_index).any()):
            return output.sum() * 0.0  # a batch without labelled pixels: no signal, keep the graph
        return F.cross_entropy(output.float(), target.long(), ignore_index=self.ignore_index)

    def predict(self, output: Tensor) -> Tensor:
        return output.argmax(1)

    def accumulator(self) -> ConfusionAccumulator:
        return ConfusionAccumulator(self.classes, self.ignore_index)


@register("task", "regression")
@dataclass(frozen=True)
class RegressionTask(Task):
    """Pixel-wise regression: MSE on standardised targets; RMSE, MAE, R2, bias.

    The model predicts ``(y - target_mean) / target_std``; ``target_mean``/``target_std``
    are set from the training pixels (:meth:`with_target_stats`) so the loss has unit scale
    whatever the label's unit. Pixels with a NaN target are ignored.
    """

    kind: ClassVar[str] = "regression"
    label_kind: ClassVar[str] = "continuous"
    primary_metric: ClassVar[str] = "r2"

    label: str = "soc"
    name: str = "regression"
    unit: str = ""
    target_mean: float = 0.0
    target_std: float = 1.0

    @property
    def out_channels(self) -> int:
        return 1

    def bind(self, spec: LabelSpec) -> RegressionTask:
        super().bind(spec)
        return replace(self, unit=spec.unit)

    def with_target_stats(self, mean: float, std: float) -> RegressionTask:
        """This task standardising targets with ``mean`` and ``std`` (std floored at 1e-6)."""
        return replace(self, target_mean=float(mean), target_std=max(float(std), 1e-6))

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        keep = torch.isfinite(target)
        if not bool(keep.any()):
            return output.sum() * 0.0
        z = (target[keep] - self.target_mean) / self.target_std
        return F.mse_loss(output[:, 0][keep].float(), z.float())

    def predict(self, output: Tensor) -> Tensor:
        return output[:, 0] * self.target_std + self.target_mean

    def accumulator(self) -> RegressionAccumulator:
        return RegressionAccumulator(self.unit)


@dataclass(frozen=True)
class _Preset:
    kind: str
    label: str
    description: str
    params: Mapping[str, Any] = field(default_factory=dict)


PRESETS: dict[str, _Preset] = {
    "landcover": _Preset(
        "segmentation", "landcover", "Land cover (NLCD-style classes), pixel-wise segmentation."
    ),
    "croptype": _Preset(
        "segmentation", "croptype", "Crop type (CDL-style classes), pixel-wise segmentation."
    ),
    "soc": _Preset("regression", "soc", "Soil organic carbon (gNATSGO-style, g/kg), pixel-wise regression."),
}
"""The named tasks of the paper's evaluation: kind, default label layer, description."""


def _preset_factory(name: str, preset: _Preset):
    def make(label: str | None = None, **params: Any) -> Task:
        # Entry.build, not create(): the tasks' own ``name`` field would clash with create's
        return (
            registry("task")
            .get(preset.kind)
            .build(label=label or preset.label, name=name, **{**preset.params, **params})
        )

    make.__name__ = f"{name}_task"
    make.__doc__ = preset.description
    return make


for _name, _preset in PRESETS.items():
    register("task", _name)(_preset_factory(_name, _preset))


def get_task(task: str | Task, label: str | None = None) -> Task:
    """A task from a preset or kind name (``landcover``, ``segmentation``...), or ``task`` itself.

    ``label`` overrides the label layer the task reads (a kind name alone defaults to
    ``landcover`` / ``soc``).
    """
    if isinstance(task, Task):
        return replace(task, label=label) if label else task
    from hyperkd.core.plugins import load_plugins

    load_plugins()
    names = registry("task").names()
    if task not in registry("task"):
        raise HyperKDError(f"unknown task {task!r}; choose one of: {', '.join(names)}")
    kwargs: dict[str, Any] = {"label": label} if label else {}
    built = registry("task").get(task).build(**kwargs)
    if not isinstance(built, Task):
        raise HyperKDError(
            f"task {task!r} did not build a hyperkd.evaluation.tasks.Task (got {type(built).__name__})"
        )
    return built


def task_from_dict(d: Mapping[str, Any]) -> Task:
    """Rebuild a task saved with :meth:`Task.to_dict`."""
    d = dict(d)
    kind = d.pop("kind")
    classes = {"segmentation": SegmentationTask, "regression": RegressionTask}
    if kind not in classes:
        raise HyperKDError(f"saved task has unknown kind {kind!r}")
    for k in ("classes", "codes"):
        if k in d:
            d[k] = tuple(d[k])
    return classes[kind](**d)


__all__ = [
    "PRESETS",
    "ConfusionAccumulator",
    "RegressionAccumulator",
    "RegressionTask",
    "SegmentationTask",
    "Task",
    "classification_metrics",
    "confusion_matrix",
    "get_task",
    "regression_metrics",
    "task_from_dict",
]
