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

Why accumulators: metrics are computed from a confusion matrix or from running sums that
are *added up over the whole evaluation set* and turned into numbers once at the end. A
mean of per-batch accuracies or per-batch mIoUs is not the accuracy or mIoU of the data
set (batches differ in valid pixels and class mix); the accumulated ones are exact and do
not depend on batch size or order.

Conventions (tests/test_tasks.py checks each against hand-computed values):

* pixels whose class is ``ignore_index`` (or a regression target that is NaN) count nowhere;
* a class that is absent from both the truth and the prediction of the evaluated pixels
  has no defined IoU or F1 (0/0): it is reported as ``None`` and left out of mIoU and
  macro F1, rather than counted as 0 (which punishes a model for a class the data set
  does not contain) or 1 (which rewards it). A class present in the truth but never
  predicted, or predicted but absent from the truth, has IoU 0 and F1 0 and counts;
* R2 is ``1 - SSE/SST`` with SST around the *evaluated* targets' own mean, so predicting
  that mean everywhere scores 0; it is ``None`` when the targets are constant.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from hyperkd.core.errors import DataError, HyperKDError
from hyperkd.core.registry import register, registry
from hyperkd.data.store import LabelSpec

ArrayLike = np.ndarray | Tensor


def _np(x: ArrayLike) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


# ----------------------------------------------------------------------------------------------
# Classification metrics
# ----------------------------------------------------------------------------------------------


def confusion_matrix(pred: ArrayLike, target: ArrayLike, num_classes: int, ignore_index: int = -1) -> np.ndarray:
    """``(K, K)`` int64 counts, rows = true class, columns = predicted class.

    Pixels whose target is ``ignore_index`` are skipped. A target or prediction outside
    ``0..K-1`` (other than ``ignore_index``) is a bug upstream and raises.
    """
    p = _np(pred).astype(np.int64).ravel()
    t = _np(target).astype(np.int64).ravel()
    if p.shape != t.shape:
        raise HyperKDError(f"prediction has {p.size} pixels but the target has {t.size}")
    keep = t != ignore_index
    p, t = p[keep], t[keep]
    if t.size and (t.min() < 0 or t.max() >= num_classes):
        raise DataError(f"target class ids must be in 0..{num_classes - 1} or {ignore_index} (ignore), "
                        f"found {int(t.min())}..{int(t.max())}")
    if p.size and (p.min() < 0 or p.max() >= num_classes):
        raise HyperKDError(f"predicted class ids must be in 0..{num_classes - 1}, found {int(p.min())}..{int(p.max())}")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 else None


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def classification_metrics(cm: np.ndarray, classes: Sequence[str] | None = None) -> dict[str, Any]:
    """Metrics of a confusion matrix (rows = truth, columns = prediction).

    Returns ``overall_accuracy``, ``miou``, ``macro_f1`` (``None`` when no pixel was
    evaluated), ``pixels``, ``per_class`` (name -> iou, precision, recall, f1, support;
    ``None`` where 0/0) and the matrix itself as nested lists. See the module docstring
    for how absent classes are treated.
    """
    cm = np.asarray(cm, dtype=np.int64)
    k = cm.shape[0]
    names = list(classes) if classes is not None else [str(i) for i in range(k)]
    if len(names) != k or cm.shape != (k, k):
        raise HyperKDError(f"confusion matrix {cm.shape} does not match {len(names)} class names")
    total = int(cm.sum())
    tp = np.diag(cm).astype(np.float64)
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    per_class: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(names):
        per_class[name] = {
            "iou": _ratio(tp[i], tp[i] + fp[i] + fn[i]),
            "precision": _ratio(tp[i], tp[i] + fp[i]),
            "recall": _ratio(tp[i], tp[i] + fn[i]),
            "f1": _ratio(2 * tp[i], 2 * tp[i] + fp[i] + fn[i]),
            "support": int(cm[i].sum()),
        }
    return {
        "overall_accuracy": _ratio(tp.sum(), total),
        "miou": _mean([c["iou"] for c in per_class.values()]),
        "macro_f1": _mean([c["f1"] for c in per_class.values()]),
        "pixels": total,
        "per_class": per_class,
        "classes": names,
        "confusion_matrix": cm.tolist(),
    }


class ConfusionAccumulator:
    """Adds batches into one confusion matrix; :meth:`compute` gives the data set's metrics."""

    def __init__(self, classes: Sequence[str], ignore_index: int = -1) -> None:
        self.classes = list(classes)
        self.ignore_index = ignore_index
        self.cm = np.zeros((len(self.classes), len(self.classes)), dtype=np.int64)

    def update(self, pred: ArrayLike, target: ArrayLike) -> None:
        """Add predicted and true class ids of the same shape."""
        self.cm += confusion_matrix(pred, target, len(self.classes), self.ignore_index)

    def compute(self) -> dict[str, Any]:
        return classification_metrics(self.cm, self.classes)


# ----------------------------------------------------------------------------------------------
# Regression metrics
# ----------------------------------------------------------------------------------------------


class RegressionAccumulator:
    """Running sums for RMSE, MAE, bias and R2 over every finite target pixel.

    Target mean and spread are merged batch by batch (Chan et al.'s parallel update), so
    R2 stays exact for large data sets where ``sum(y^2) - sum(y)^2/n`` would cancel. A
    uniform random sample of up to ``sample_size`` (truth, prediction) pairs is kept for
    scatter plots (the smallest random keys win, so the sample does not favour early batches).
    """

    def __init__(self, unit: str = "", sample_size: int = 20_000, seed: int = 0) -> None:
        self.unit = unit
        self.n = 0
        self.sse = 0.0
        self.sae = 0.0
        self.se = 0.0
        self.mean_t = 0.0
        self.m2_t = 0.0
        self.sample_size = sample_size
        self._rng = np.random.default_rng(seed)
        self._keys = np.empty(0)
        self._pairs = np.empty((0, 2))

    def update(self, pred: ArrayLike, target: ArrayLike) -> None:
        """Add predictions and targets of the same shape; NaN targets are skipped."""
        p = _np(pred).astype(np.float64).ravel()
        t = _np(target).astype(np.float64).ravel()
        if p.shape != t.shape:
            raise HyperKDError(f"prediction has {p.size} pixels but the target has {t.size}")
        keep = np.isfinite(t)
        p, t = p[keep], t[keep]
        if not t.size:
            return
        e = p - t
        self.sse += float((e**2).sum())
        self.sae += float(np.abs(e).sum())
        self.se += float(e.sum())
        nb = t.size
        mb = float(t.mean())
        m2b = float(((t - mb) ** 2).sum())
        tot = self.n + nb
        delta = mb - self.mean_t
        self.mean_t += delta * nb / tot
        self.m2_t += m2b + delta**2 * self.n * nb / tot
        self.n = tot
        if self.sample_size:
            keys = np.concatenate([self._keys, self._rng.random(nb)])
            pairs = np.concatenate([self._pairs, np.stack([t, p], axis=1)])
            if keys.size > self.sample_size:
                top = np.argpartition(keys, self.sample_size)[: self.sample_size]
                keys, pairs = keys[top], pairs[top]
            self._keys, self._pairs = keys, pairs

    @property
    def sample(self) -> np.ndarray:
        """``(m, 2)`` sampled (truth, prediction) pairs."""
        return self._pairs

    def compute(self) -> dict[str, Any]:
        n = self.n
        if n == 0:
            return {"rmse": None, "mae": None, "r2": None, "bias": None, "pixels": 0, "target_mean": None,
                    "target_std": None, "unit": self.unit}
        return {
            "rmse": math.sqrt(self.sse / n),
            "mae": self.sae / n,
            "r2": 1.0 - self.sse / self.m2_t if self.m2_t > 0 else None,
            "bias": self.se / n,
            "pixels": n,
            "target_mean": self.mean_t,
            "target_std": math.sqrt(self.m2_t / n),
            "unit": self.unit,
        }


def regression_metrics(pred: ArrayLike, target: ArrayLike, unit: str = "") -> dict[str, Any]:
    """RMSE, MAE, R2 and bias of one pair of arrays (NaN targets skipped)."""
    acc = RegressionAccumulator(unit, sample_size=0)
    acc.update(pred, target)
    return acc.compute()


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
    "landcover": _Preset("segmentation", "landcover", "Land cover (NLCD-style classes), pixel-wise segmentation."),
    "croptype": _Preset("segmentation", "croptype", "Crop type (CDL-style classes), pixel-wise segmentation."),
    "soc": _Preset("regression", "soc", "Soil organic carbon (gNATSGO-style, g/kg), pixel-wise regression."),
}
"""The named tasks of the paper's evaluation: kind, default label layer, description."""


def _preset_factory(name: str, preset: _Preset):
    def make(label: str | None = None, **params: Any) -> Task:
        # Entry.build, not create(): the tasks' own ``name`` field would clash with create's
        return registry("task").get(preset.kind).build(label=label or preset.label, name=name,
                                                       **{**preset.params, **params})

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
        raise HyperKDError(f"task {task!r} did not build a hyperkd.evaluation.tasks.Task (got {type(built).__name__})")
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
