"""Scene maps: the colours of a class map and its quick-look figure (``hyperkd predict``).

Built on :class:`matplotlib.figure.Figure` without pyplot. The class colours are the ones the
fine-tuning figures use (:mod:`hyperkd.viz.task_figures`), so a map and a run's figures agree.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from hyperkd.viz.task_figures import _class_cmap


def class_colors(k: int, given: Sequence[Sequence[int]] | None = None) -> list[tuple[int, int, int]]:
    """``k`` RGB colours (0-255): ``given`` (e.g. from a legend) when it has one per class, else the palette."""
    if given is not None and len(given) == k:
        return [(int(c[0]), int(c[1]), int(c[2])) for c in given]
    cmap = _class_cmap(k)
    return [(round(255 * r), round(255 * g), round(255 * b)) for r, g, b, _a in (cmap(i) for i in range(k))]


def map_figure(
    arr: np.ndarray,
    title: str,
    classes: Sequence[str] | None = None,
    values: np.ndarray | None = None,
    colors: Sequence[Sequence[int]] | None = None,
    unit: str = "",
) -> Figure:
    """A quick look of a map (NaN = no data, light grey): classes with a legend, or values with a colour bar.

    ``values`` are the map values of the classes (``values[i]`` is class ``classes[i]``).
    """
    h, w = arr.shape
    fig = Figure(figsize=(min(12.0, max(4.0, 7.0 * w / max(h, 1))) + 2.5, 7.0))
    ax = fig.subplots()
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    if classes is not None:
        vals = np.asarray(values if values is not None else range(len(classes)), dtype=np.float64)
        ids = np.full(arr.shape, np.nan)
        for i, v in enumerate(vals):
            ids[arr == v] = i
        rgb = [(r / 255, g / 255, b / 255) for r, g, b in class_colors(len(classes), colors)]
        cmap = ListedColormap(rgb).with_extremes(bad="lightgrey")
        ax.imshow(
            np.ma.masked_invalid(ids), cmap=cmap, vmin=-0.5, vmax=len(classes) - 0.5, interpolation="nearest"
        )
        handles = [
            Patch(color=rgb[i], label=f"{v:g} {name}")
            for i, (v, name) in enumerate(zip(vals, classes, strict=True))
        ]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    else:
        finite = arr[np.isfinite(arr)]
        lo, hi = (
            (float(np.percentile(finite, 2)), float(np.percentile(finite, 98))) if finite.size else (0.0, 1.0)
        )
        cmap = matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey")
        im = ax.imshow(np.ma.masked_invalid(arr), cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
        fig.colorbar(im, ax=ax, fraction=0.046, label=unit)
    fig.tight_layout()
    return fig


__all__ = ["class_colors", "map_figure"]
