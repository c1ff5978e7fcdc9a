"""A downstream task bound to its labels: a chip store's label layer or an aligned label raster.

:func:`bind_labels` turns a task preset (``landcover``...) into the task of *this* data —
its classes (from the store's label layer, or the codes present in a GeoTIFF reprojected
onto the chips by :mod:`hyperkd.data.labels`), or its unit — and returns the per-chip
targets (:class:`TaskLabels`) the datasets and metrics read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hyperkd.core.errors import DataError
from hyperkd.data.store import ChipStore, LabelSpec
from hyperkd.evaluation.metrics import RegressionAccumulator
from hyperkd.evaluation.tasks import SegmentationTask, Task


class TaskLabels:
    """Per-chip targets for a bound task: from a store label layer or an aligned raster.

    Targets are int64 class ids (``ignore_index`` = no label) or float32 values (NaN = no
    label); pixels the chip marks invalid (no image data) are never labelled.
    """

    def __init__(
        self, store: ChipStore, task: Task, raster_values: np.ndarray | None = None, unknown_pixels: int = 0
    ) -> None:
        self.store = store
        self.task = task
        self.raster_values = raster_values
        self.unknown_pixels = unknown_pixels

    def target(self, index: int, item: Mapping[str, Any] | None = None) -> np.ndarray:
        """The ``(S, S)`` target of chip ``index`` (``item``: the chip, if already read)."""
        item = item if item is not None else self.store[index]
        if self.raster_values is not None:
            t = np.asarray(self.raster_values[index])
        else:
            t = np.asarray(item[self.task.label])
        valid = np.asarray(item["valid"], dtype=bool)
        if isinstance(self.task, SegmentationTask):
            t = t.astype(np.int64)
            ign = self.task.ignore_index
            bad = (t != ign) & ((t < 0) | (t >= len(self.task.classes)))
            if bad.any():
                raise DataError(
                    f"{self.store.root}: chip {index} has class ids outside 0..{len(self.task.classes) - 1} "
                    f"in label {self.task.label!r} (e.g. {int(t[bad][0])})"
                )
            return np.where(valid, t, ign)
        t = t.astype(np.float32)
        return np.where(valid, t, np.float32(np.nan))


def bind_labels(
    task: Task,
    store: ChipStore,
    labels: str | Path | None = None,
    cache: Path | None = None,
) -> tuple[Task, TaskLabels]:
    """Bind ``task`` to the store's label layer or to a label raster; returns (task, labels).

    For a class raster, a task that already has ``codes`` (a trained model's) keeps them;
    otherwise the codes present in the raster over the store's chips become the classes.
    """
    if labels is None:
        if task.label not in store.labels:
            have = ", ".join(store.labels) or "none"
            raise DataError(
                f"{store.root} has no label layer {task.label!r} (it has: {have}); pass --labels RASTER "
                "with a GeoTIFF of the labels, or --label NAME to use another layer"
            )
        bound = task.bind(store.labels[task.label])
        if isinstance(task, SegmentationTask) and task.classes and tuple(task.classes) != bound.classes:
            raise DataError(
                f"label {task.label!r} of {store.root} has classes {list(bound.classes)}, but the "
                f"model was trained on {list(task.classes)}"
            )
        return bound, TaskLabels(store, bound)

    from hyperkd.data.labels import NLCD_CLASSES, align_label_raster, class_codes, class_names, encode_classes

    kind = task.label_kind
    values = align_label_raster(labels, store, kind, cache=cache)
    if isinstance(task, SegmentationTask):
        codes = list(task.codes) or class_codes(values)
        if not codes:
            raise DataError(f"label raster {labels} has no labelled pixel over the chips of {store.root}")
        names = (
            list(task.classes)
            if task.codes
            else class_names(codes, NLCD_CLASSES if task.name == "landcover" else None)
        )
        spec = LabelSpec("class", classes=tuple(names), ignore_index=task.ignore_index)
        bound_seg = SegmentationTask(
            label=task.label,
            name=task.name,
            classes=tuple(names),
            ignore_index=task.ignore_index,
            codes=tuple(float(c) for c in codes),
        )
        bound_seg.bind(spec)
        ids, unknown = encode_classes(values, codes, task.ignore_index)
        return bound_seg, TaskLabels(store, bound_seg, ids, unknown)
    if not np.isfinite(values).any():
        raise DataError(f"label raster {labels} has no valid value over the chips of {store.root}")
    bound = task.bind(LabelSpec("continuous", unit=getattr(task, "unit", "")))
    return bound, TaskLabels(store, bound, values)


def target_stats(labels: TaskLabels, indices: Sequence[int]) -> tuple[float, float]:
    """Mean and standard deviation of the labelled target pixels of chips ``indices``
    (what a regression task standardises its targets with)."""
    acc = RegressionAccumulator(sample_size=0)
    for i in indices:
        t = labels.target(i)
        acc.update(t, t)
    m = acc.compute()
    if not m["pixels"]:
        raise DataError(f"the training chips have no labelled pixel for {labels.task.label!r}")
    return float(m["target_mean"]), float(m["target_std"] or 1.0)


__all__ = ["TaskLabels", "bind_labels", "target_stats"]
