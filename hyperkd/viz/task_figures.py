"""Figures for downstream tasks: confusion matrix, truth-vs-prediction scatter, predicted maps.

Built on :class:`matplotlib.figure.Figure` without pyplot (no backend choice, no global state).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from hyperkd.core.sensors import Sensor
from hyperkd.viz.figures import composite, rgb_bands


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return path


def confusion_figure(cm: np.ndarray, classes: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (recall per true class), with counts when it is small."""
    cm = np.asarray(cm, dtype=np.float64)
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    k = len(classes)
    side = max(4.0, 0.55 * k + 2.5)
    fig = Figure(figsize=(side + 1, side))
    ax = fig.subplots()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 12:
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(
                        j,
                        i,
                        f"{int(cm[i, j])}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black",
                    )
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of true class")
    ax.set_title(title or "confusion matrix (rows: truth)")
    fig.tight_layout()
    return _save(fig, path)


def scatter_figure(
    pairs: np.ndarray,
    path: str | Path,
    unit: str = "",
    title: str = "",
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Predicted vs true values (a sample of pixels) with the 1:1 line and the metrics."""
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    if len(pairs):
        t, p = pairs[:, 0], pairs[:, 1]
        lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
        ax.hexbin(t, p, gridsize=40, mincnt=1, cmap="viridis", bins="log")
        ax.plot([lo, hi], [lo, hi], color="red", lw=1, label="1:1")
        ax.legend(loc="upper left")
    u = f" ({unit})" if unit else ""
    ax.set_xlabel(f"true{u}")
    ax.set_ylabel(f"predicted{u}")
    if metrics:
        txt = "\n".join(
            f"{k.upper()} {metrics[k]:.3g}" for k in ("rmse", "mae", "r2") if metrics.get(k) is not None
        )
        ax.text(
            0.97,
            0.03,
            txt,
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize=9,
            bbox={"facecolor": "white", "alpha": 0.8},
        )
    ax.set_title(title or "truth vs prediction (sampled pixels)")
    fig.tight_layout()
    return _save(fig, path)


def _class_cmap(k: int) -> ListedColormap:
    base = matplotlib.colormaps["tab20" if k > 10 else "tab10"]
    return ListedColormap([base(i % base.N) for i in range(k)])


def maps_figure(
    sensor: Sensor,
    images: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    preds: Sequence[np.ndarray],
    path: str | Path,
    classes: Sequence[str] | None = None,
    unit: str = "",
    titles: Sequence[str] | None = None,
    ignore_index: int = -1,
) -> Path:
    """One row per chip: false-colour composite, true map, predicted map (no-label pixels grey)."""
    n = len(images)
    fig = Figure(figsize=(10, 3.2 * n + 0.6))
    axes = fig.subplots(n, 3, squeeze=False)
    idx = rgb_bands(sensor)
    if classes is not None:
        cmap = _class_cmap(len(classes)).with_extremes(bad="lightgrey")
        vmin, vmax = -0.5, len(classes) - 0.5
    else:
        cmap = matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey")
        vals = np.concatenate([np.asarray(t, float)[np.isfinite(t)] for t in truths] or [np.zeros(1)])
        vmin, vmax = (float(np.percentile(vals, 2)), float(np.percentile(vals, 98))) if vals.size else (0, 1)
    im = None
    for r in range(n):
        axes[r, 0].imshow(composite(images[r], idx))
        truth = np.asarray(truths[r], dtype=float)
        if classes is not None:
            truth = np.where(truth == ignore_index, np.nan, truth)
        axes[r, 1].imshow(
            np.ma.masked_invalid(truth), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest"
        )
        pred = np.asarray(preds[r], dtype=float)
        if classes is None:
            pred = np.where(np.isfinite(truth), pred, np.nan)  # no value to compare where truth is missing
        im = axes[r, 2].imshow(
            np.ma.masked_invalid(pred), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest"
        )
        for c, t in enumerate(("image", "truth", "prediction")):
            axes[r, c].set_title(f"{titles[r]}: {t}" if titles and c == 0 else t, fontsize=9)
            axes[r, c].axis("off")
    if classes is not None:
        from matplotlib.patches import Patch

        cm = _class_cmap(len(classes))
        fig.legend(
            handles=[Patch(color=cm(i), label=c) for i, c in enumerate(classes)],
            loc="lower center",
            ncol=min(len(classes), 6),
            fontsize=8,
        )
        fig.tight_layout(rect=(0, 0.06, 1, 1))
    else:
        fig.tight_layout()
        if im is not None:
            fig.colorbar(im, ax=axes[:, 2].tolist(), fraction=0.03, label=unit or "value")
    return _save(fig, path)


__all__ = ["confusion_figure", "maps_figure", "scatter_figure"]
