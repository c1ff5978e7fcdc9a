"""Exact downstream metrics: a confusion matrix for classes, running sums for values.

Metrics are computed from a confusion matrix or from running sums that are *added up over
the whole evaluation set* and turned into numbers once at the end. A mean of per-batch
accuracies or per-batch mIoUs is not the accuracy or mIoU of the data set (batches differ in
valid pixels and class mix); the accumulated ones are exact and do not depend on batch size
or order.

Both accumulators are ``torchmetrics`` metrics: their state follows the module to its
device and is summed over DDP ranks before :meth:`compute` (validation on many GPUs scores
the whole validation set, not one rank's share). The confusion matrix is torchmetrics'
own (:class:`~torchmetrics.classification.MulticlassConfusionMatrix`); IoU, precision,
recall and F1 are read from it with the conventions below, which torchmetrics' per-metric
classes do not all share (they score a class absent from truth and prediction as 0).
R2 keeps Chan et al.'s merge of target means and spreads, which stays exact where
torchmetrics' ``sum(y^2) - sum(y)^2/n`` cancels (targets with a large offset).

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
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.classification import MulticlassConfusionMatrix
from torchmetrics.functional.classification import multiclass_confusion_matrix

from hyperkd.core.errors import DataError, HyperKDError

ArrayLike = np.ndarray | Tensor


def _tensor(x: ArrayLike, device: torch.device, dtype: torch.dtype) -> Tensor:
    t = x.detach() if isinstance(x, Tensor) else torch.from_numpy(np.asarray(x))
    return t.to(device=device, dtype=dtype).flatten()


# ----------------------------------------------------------------------------------------------
# Classification
# ----------------------------------------------------------------------------------------------


class ConfusionAccumulator(MulticlassConfusionMatrix):
    """Adds batches into one confusion matrix (rows = truth, columns = prediction);
    :meth:`compute` gives the data set's metrics (:func:`classification_metrics`).

    Pixels whose target is ``ignore_index`` are skipped. A target outside ``0..K-1`` raises
    :class:`DataError` (bad labels), a prediction outside it :class:`HyperKDError` (a bug).
    """

    def __init__(self, classes: Sequence[str], ignore_index: int = -1) -> None:
        super().__init__(num_classes=len(classes), ignore_index=ignore_index, validate_args=False)
        self.classes = list(classes)

    def update(self, pred: ArrayLike, target: ArrayLike) -> None:  # type: ignore[override]
        """Add predicted and true class ids of the same shape (arrays or tensors)."""
        k, dev = self.num_classes, self.confmat.device
        p, t = _tensor(pred, dev, torch.int64), _tensor(target, dev, torch.int64)
        if p.shape != t.shape:
            raise HyperKDError(f"prediction has {p.numel()} pixels but the target has {t.numel()}")
        keep = t != self.ignore_index
        p, t = p[keep], t[keep]
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= k):
            raise DataError(
                f"target class ids must be in 0..{k - 1} or {self.ignore_index} (ignore), "
                f"found {int(t.min())}..{int(t.max())}"
            )
        if p.numel() and (int(p.min()) < 0 or int(p.max()) >= k):
            raise HyperKDError(
                f"predicted class ids must be in 0..{k - 1}, found {int(p.min())}..{int(p.max())}"
            )
        self.confmat += multiclass_confusion_matrix(p, t, k, validate_args=False)

    def compute(self) -> dict[str, Any]:  # type: ignore[override]
        """:func:`classification_metrics` of the (DDP-summed) confusion matrix."""
        return classification_metrics(self.confmat.cpu().numpy(), self.classes)


def confusion_matrix(
    pred: ArrayLike, target: ArrayLike, num_classes: int, ignore_index: int = -1
) -> np.ndarray:
    """``(K, K)`` int64 counts, rows = true class, columns = predicted class.

    Pixels whose target is ``ignore_index`` are skipped. A target or prediction outside
    ``0..K-1`` (other than ``ignore_index``) is a bug upstream and raises.
    """
    acc = ConfusionAccumulator([str(i) for i in range(num_classes)], ignore_index)
    acc.update(pred, target)
    return acc.confmat.cpu().numpy().astype(np.int64)


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


# ----------------------------------------------------------------------------------------------
# Regression
# ----------------------------------------------------------------------------------------------


def _merge_moments(rows: Tensor) -> tuple[float, float, float]:
    """Chan et al.'s merge of ``(n, mean, m2)`` rows into one (count, mean, sum of squares)."""
    n, mean, m2 = 0.0, 0.0, 0.0
    for nb, mb, m2b in rows.reshape(-1, 3).tolist():
        if nb <= 0:
            continue
        tot = n + nb
        delta = mb - mean
        mean += delta * nb / tot
        m2 += m2b + delta**2 * n * nb / tot
        n = tot
    return n, mean, m2


class RegressionAccumulator(Metric):
    """Running sums for RMSE, MAE, bias and R2 over every finite target pixel.

    Target mean and spread are merged batch by batch (and over DDP ranks) with Chan et al.'s
    parallel update, so R2 stays exact for large data sets where ``sum(y^2) - sum(y)^2/n``
    would cancel. A uniform random sample of up to ``sample_size`` (truth, prediction) pairs
    is kept on this process for scatter plots (the smallest random keys win, so the sample
    does not favour early batches).
    """

    full_state_update = False
    higher_is_better = None
    sums: Tensor
    moments: Tensor

    def __init__(self, unit: str = "", sample_size: int = 20_000, seed: int = 0) -> None:
        super().__init__()
        self.unit = unit
        self.sample_size = sample_size
        self.seed = seed
        # sse, sae, sum of errors; (n, target mean, target m2) merged with Chan's update
        self.add_state("sums", torch.zeros(3, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("moments", torch.zeros(3, dtype=torch.float64), dist_reduce_fx=None)
        self._reset_sample()

    def _reset_sample(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        self._keys = np.empty(0)
        self._pairs = np.empty((0, 2))

    def reset(self) -> None:
        """Clear the sums and the scatter sample."""
        super().reset()
        self._reset_sample()

    def update(self, pred: ArrayLike, target: ArrayLike) -> None:  # type: ignore[override]
        """Add predictions and targets of the same shape; NaN targets are skipped."""
        dev = self.sums.device
        p, t = _tensor(pred, dev, torch.float64), _tensor(target, dev, torch.float64)
        if p.shape != t.shape:
            raise HyperKDError(f"prediction has {p.numel()} pixels but the target has {t.numel()}")
        keep = torch.isfinite(t)
        p, t = p[keep], t[keep]
        if not t.numel():
            return
        e = p - t
        self.sums += torch.stack([(e**2).sum(), e.abs().sum(), e.sum()])
        mb = t.mean()
        batch = torch.stack(
            [torch.tensor(float(t.numel()), dtype=torch.float64, device=dev), mb, ((t - mb) ** 2).sum()]
        )
        self.moments = torch.tensor(
            _merge_moments(torch.stack([self.moments, batch])), dtype=torch.float64, device=dev
        )
        if self.sample_size:
            keys = np.concatenate([self._keys, self._rng.random(t.numel())])
            pairs = np.concatenate([self._pairs, torch.stack([t, p], dim=1).cpu().numpy()])
            if keys.size > self.sample_size:
                top = np.argpartition(keys, self.sample_size)[: self.sample_size]
                keys, pairs = keys[top], pairs[top]
            self._keys, self._pairs = keys, pairs

    @property
    def sample(self) -> np.ndarray:
        """``(m, 2)`` sampled (truth, prediction) pairs."""
        return self._pairs

    def compute(self) -> dict[str, Any]:  # type: ignore[override]
        """RMSE, MAE, R2, bias, pixel count, target mean and std, and the unit."""
        n, mean_t, m2_t = _merge_moments(self.moments)
        if n == 0:
            return {
                "rmse": None,
                "mae": None,
                "r2": None,
                "bias": None,
                "pixels": 0,
                "target_mean": None,
                "target_std": None,
                "unit": self.unit,
            }
        sse, sae, se = self.sums.tolist()
        return {
            "rmse": math.sqrt(sse / n),
            "mae": sae / n,
            "r2": 1.0 - sse / m2_t if m2_t > 0 else None,
            "bias": se / n,
            "pixels": int(n),
            "target_mean": mean_t,
            "target_std": math.sqrt(m2_t / n),
            "unit": self.unit,
        }


def regression_metrics(pred: ArrayLike, target: ArrayLike, unit: str = "") -> dict[str, Any]:
    """RMSE, MAE, R2 and bias of one pair of arrays (NaN targets skipped)."""
    acc = RegressionAccumulator(unit, sample_size=0)
    acc.update(pred, target)
    return acc.compute()


__all__ = [
    "ConfusionAccumulator",
    "RegressionAccumulator",
    "classification_metrics",
    "confusion_matrix",
    "regression_metrics",
]
