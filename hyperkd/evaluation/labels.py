"""A downstream task bound to its labels: a chip store's label layer or labels aligned onto the chips.

:func:`bind_labels` turns a task preset (``landcover``...) into the task of *this* data —
its classes (from the store's label layer, or the codes present in a GeoTIFF reprojected
onto the chips by :mod:`hyperkd.data.labels`), or its unit — and returns the per-chip
targets (:class:`TaskLabels`) the datasets and metrics read.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hyperkd.core.errors import DataError
from hyperkd.data.store import ChipStore, LabelSpec
from hyperkd.evaluation.metrics import RegressionAccumulator
from hyperkd.evaluation.tasks import SegmentationTask, Task

logger = logging.getLogger(__name__)


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

    def record(self) -> dict[str, Any]:
        """What a run records about the training labels it used: all of them (no label fraction)."""
        return {"label_fraction": None}

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


def _legend_names(legend: str | Path | Mapping[int, str] | None) -> dict[int, str]:
    if legend is None:
        return {}
    if isinstance(legend, Mapping):
        return {int(k): str(v) for k, v in legend.items()}
    from hyperkd.data.labels import read_legend

    return read_legend(legend)[0]


def bind_labels(
    task: Task,
    store: ChipStore,
    labels: str | Path | None = None,
    cache: Path | None = None,
    *,
    nodata: float | None = None,
    field: str | None = None,
    legend: str | Path | Mapping[int, str] | None = None,
    held_out: str | None = None,
) -> tuple[Task, TaskLabels]:
    """Bind ``task`` to the store's label layer or to labels aligned onto its chips; returns (task, labels).

    ``labels`` is a raster, a folder of raster tiles or a vector file
    (:func:`hyperkd.data.labels.align_labels`); ``nodata`` the ignore value (default: the
    raster's nodata), ``field`` a vector file's attribute, ``legend`` a CSV path (or a
    mapping) of code -> class name. For class labels, a task that already has ``codes`` (a
    trained model's) keeps them; with a legend its codes are the classes (a labelled code
    missing from it is refused); otherwise the codes present over the store's chips are the
    classes, named by the legend, the source's own names (category names, a vector field's
    text), NLCD's (task ``landcover``, all codes NLCD) or ``class <code>``. Codes the given
    codes lack are not scored, with a warning; with ``held_out`` (``"evaluation"``: a store's
    labels checked against the training labels' codes before training) they are refused.
    """
    if labels is None:
        if task.label not in store.labels:
            have = ", ".join(store.labels) or "none"
            raise DataError(
                f"{store.root} has no label layer {task.label!r} (it has: {have}); pass --labels with a "
                "raster, a folder of label rasters or a vector file, or --label NAME to use another layer"
            )
        bound = task.bind(store.labels[task.label])
        if isinstance(task, SegmentationTask) and task.classes and tuple(task.classes) != bound.classes:
            raise DataError(
                f"label {task.label!r} of {store.root} has classes {list(bound.classes)}, but the "
                f"model was trained on {list(task.classes)}"
            )
        return bound, TaskLabels(store, bound)

    from hyperkd.data.labels import (
        NLCD_CLASSES,
        align_labels,
        background_warning,
        class_codes,
        class_names,
        encode_classes,
        source_nodata,
    )

    names = _legend_names(legend)
    if nodata is not None and nodata in names:
        names.pop(int(nodata))  # the ignore value is no class, even if the legend names it
    seg = isinstance(task, SegmentationTask)
    if seg and task.codes and task.classes:  # a trained model's codes and names: text values keep them
        names = names or {int(c): n.rsplit(" (", 1)[0] for c, n in zip(task.codes, task.classes, strict=True)}
    values, own = align_labels(
        labels, store, task.label_kind, cache=cache, nodata=nodata, field=field, legend=names
    )
    if isinstance(task, SegmentationTask):
        if task.codes:
            codes = [int(c) for c in task.codes]
        else:
            present = class_codes(values)
            if names:
                missing = sorted(set(present) - set(names))
                if missing:
                    raise DataError(
                        f"labels {labels} hold codes {missing} that legend {legend} does not list; add "
                        "them to the legend, or pass --label-nodata CODE if one means 'no label'"
                    )
                codes = sorted(names)
            else:
                codes = present
            if nodata is None and source_nodata(labels) is None:
                msg = background_warning(values, {**own, **names}, labels)
                if msg:
                    logger.warning(msg)
        if not codes:
            raise DataError(f"labels {labels} have no labelled pixel over the chips of {store.root}")
        nlcd = NLCD_CLASSES if task.name == "landcover" and all(c in NLCD_CLASSES for c in codes) else None
        classes = tuple(task.classes) if task.codes else tuple(class_names(codes, names, own, nlcd))
        spec = LabelSpec("class", classes=classes, ignore_index=task.ignore_index)
        bound_seg = SegmentationTask(
            label=task.label,
            name=task.name,
            classes=classes,
            ignore_index=task.ignore_index,
            codes=tuple(float(c) for c in codes),
        )
        bound_seg.bind(spec)
        ids, unknown = encode_classes(values, codes, task.ignore_index)
        scored = bool((ids != task.ignore_index).any())
        if unknown:  # only given codes (a trained model's, a legend's) can miss some
            _unknown_codes(labels, store, values, codes, scored, nodata, held_out)
        if not scored:  # e.g. labels beside the chips: metrics would read "pixels: 0"
            raise DataError(f"labels {labels} have no labelled pixel over the chips of {store.root}")
        return bound_seg, TaskLabels(store, bound_seg, ids, unknown)
    if not np.isfinite(values).any():
        raise DataError(f"labels {labels} have no valid value over the chips of {store.root}")
    bound = task.bind(LabelSpec("continuous", unit=getattr(task, "unit", "")))
    return bound, TaskLabels(store, bound, values)


def _unknown_codes(
    labels: str | Path,
    store: ChipStore,
    values: np.ndarray,
    codes: Sequence[int],
    scored: bool,
    nodata: float | None,
    held_out: str | None = None,
) -> None:
    """Refuse labels none of whose codes the model knows (nothing would be ``scored``, and the
    metrics would read "pixels: 0"); when only some are unknown, refuse ``held_out`` labels (a
    fine-tune's, before it trains: a class it cannot learn) and otherwise warn, naming the codes."""
    from hyperkd.data.labels import class_codes

    extra = sorted(set(class_codes(values)) - {int(c) for c in codes})
    known = [int(c) for c in codes]
    if not scored:
        hint = "" if nodata is not None else ", or pass --label-nodata CODE if one of them means 'no label'"
        raise DataError(
            f"labels {labels} hold codes {extra[:20]} over the chips of {store.root}, none of which the model "
            f"was trained on (its codes: {known}); give labels with the model's codes{hint}"
        )
    if held_out:
        raise DataError(
            f"{held_out} labels {labels} hold codes {extra[:20]} over the chips of {store.root} that the "
            f"training labels do not have (their codes: {known}); pass --legend CSV listing every class, "
            "or make those pixels the raster's nodata value (or --label-nodata CODE) if they mean 'no label'"
        )
    logger.warning(
        "labels %s: %d pixel(s) hold codes %s the model was not trained on (its codes: %s); they are not scored",
        labels,
        int(np.isin(values, extra).sum()),
        extra[:20],
        known,
    )


class FractionLabels(TaskLabels):
    """Training targets thinned to a fixed fraction of their labelled pixels (the label-scarce protocol).

    Built by :func:`label_fraction_subset`; wraps the full :class:`TaskLabels` (whose ``task``
    it shares) and marks every pixel outside the subset "no label". Only the training loader
    reads it: validation and test targets are never thinned.
    """

    def __init__(
        self,
        base: TaskLabels,
        fraction: float,
        seed: int,
        threshold: float,
        class_floor: Mapping[int, float],
        labelled: int,
        kept: int,
    ) -> None:
        self.base = base
        self.store = base.store
        self.raster_values = base.raster_values
        self.unknown_pixels = base.unknown_pixels
        self.fraction, self.seed = fraction, seed
        self.threshold, self.class_floor = threshold, dict(class_floor)
        self.labelled, self.kept = labelled, kept

    @property  # type: ignore[override]
    def task(self) -> Task:
        """The full labels' task (a regression task's target statistics set later apply here too)."""
        return self.base.task

    @task.setter
    def task(self, task: Task) -> None:
        self.base.task = task

    def keep(self, index: int, target: np.ndarray) -> np.ndarray:
        """Which labelled pixels of chip ``index`` (its full ``target``) are in the subset."""
        key = pixel_keys(self.seed, index, target.shape)
        keep = _labelled(target, self.task) & (key <= self.threshold)
        if isinstance(self.task, SegmentationTask):
            for c, floor in self.class_floor.items():
                keep |= (target == c) & (key <= floor)
        return keep

    def target(self, index: int, item: Mapping[str, Any] | None = None) -> np.ndarray:
        t = self.base.target(index, item)
        no_label = self.task.ignore_index if isinstance(self.task, SegmentationTask) else np.nan
        return np.where(self.keep(index, t), t, np.asarray(no_label, dtype=t.dtype))

    def record(self) -> dict[str, Any]:
        """What a run records about its subset (``finetune.json``, ``metrics.json``, the model config)."""
        return {
            "label_fraction": self.fraction,
            "label_subset_seed": self.seed,
            "train_pixels": self.kept,
            "train_pixels_labelled": self.labelled,
        }


def pixel_keys(seed: int, index: int, shape: tuple[int, ...]) -> np.ndarray:
    """A fixed uniform key per pixel of chip ``index``, from ``seed`` alone (not the run's seed or the
    other chips): the label-scarce subset of fraction ``f`` is the labelled pixels with the smallest
    keys, so subsets are nested (1 % inside 5 % inside 25 %) and equal across rows and seeds."""
    return np.random.default_rng([int(seed), 0x5CA2CE, int(index)]).random(shape)


def _labelled(target: np.ndarray, task: Task) -> np.ndarray:
    if isinstance(task, SegmentationTask):
        return np.asarray(target != task.ignore_index)
    return np.isfinite(target)


def label_fraction_subset(
    labels: TaskLabels, indices: Sequence[int], fraction: float | None, seed: int
) -> TaskLabels:
    """``labels`` thinned to ``fraction`` of the labelled pixels of chips ``indices`` (``None``: all of them).

    The subset is the ``max(1, round(fraction * N))`` labelled pixels (of ``N``) with the smallest
    :func:`pixel_keys` drawn from ``seed`` (fine-tuning's ``split_seed``), plus, for a class
    present in the training pixels but not in that subset, its pixel with the smallest key, so
    every class keeps at least one labelled pixel. Raises :class:`DataError` for a fraction
    outside (0, 1] or training chips without a labelled pixel.
    """
    if fraction is None:
        return labels
    if not 0.0 < fraction <= 1.0:
        raise DataError(
            f"--label-fraction {fraction:g} must be above 0 and at most 1 (a share of the labelled pixels)"
        )
    task = labels.task
    keys: list[np.ndarray] = []
    class_min: dict[int, float] = {}
    for i in indices:
        t = labels.target(i)
        k = pixel_keys(seed, i, t.shape)
        lab = _labelled(t, task)
        keys.append(k[lab])
        if isinstance(task, SegmentationTask):
            for c in np.unique(t[lab]).tolist():
                class_min[int(c)] = min(class_min.get(int(c), 1.0), float(k[lab & (t == c)].min()))
    all_keys = np.concatenate(keys) if keys else np.zeros(0)
    n = int(all_keys.size)
    if not n:
        raise DataError(f"the training chips have no labelled pixel for {task.label!r} to take a fraction of")
    k = max(1, round(fraction * n))
    threshold = float(np.partition(all_keys, k - 1)[k - 1])
    floor = {c: m for c, m in class_min.items() if m > threshold}  # classes the subset would miss
    sub = FractionLabels(labels, fraction, seed, threshold, floor, labelled=n, kept=k + len(floor))
    logger.info(
        "label-scarce: training on %d of %d labelled pixels (fraction %g, split seed %d)%s",
        sub.kept,
        n,
        fraction,
        seed,
        f"; {len(floor)} class(es) kept by one pixel each" if floor else "",
    )
    return sub


def has_labelled(labels: TaskLabels, indices: Sequence[int]) -> bool:
    """Whether any pixel of chips ``indices`` is labelled (stops at the first chip with one)."""
    return any(bool(_labelled(labels.target(i), labels.task).any()) for i in indices)


def no_labelled_pixel(store: ChipStore, labels: str | Path | None, task: Task, chips: str) -> DataError:
    """The one-line error for chips with nothing to score: every pixel is the no-label value."""
    source = f"labels {labels}" if labels else f"label layer {task.label!r} of the store"
    return DataError(
        f"{chips} of {store.root} have no labelled pixel in {source} (every pixel is the no-label "
        "value or has no image data), so there is nothing to score; give labels that cover them "
        "(--labels, --label-nodata) or other chips"
    )


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


__all__ = [
    "FractionLabels",
    "TaskLabels",
    "bind_labels",
    "has_labelled",
    "label_fraction_subset",
    "no_labelled_pixel",
    "pixel_keys",
    "target_stats",
]
