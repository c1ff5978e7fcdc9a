"""Figures worth looking at: false-colour composites and reconstructed spectra.

Figures are built as :class:`matplotlib.figure.Figure` objects, never through pyplot: importing
hyperkd does not pick a matplotlib backend for the user's process or touch pyplot's global figure
list (notebooks keep their inline backend), and figures need no display.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from hyperkd.core.sensors import Sensor

RGB_NM = (650.0, 550.0, 470.0)


def rgb_bands(sensor: Sensor, targets: Sequence[float] = RGB_NM) -> list[int]:
    """Indices of the bands closest to red, green and blue (false colour for any sensor)."""
    c = np.asarray(sensor.centers_nm)
    return [int(np.argmin(np.abs(c - t))) for t in targets]


def composite(
    img: np.ndarray, idx: Sequence[int], lo: float = 2.0, hi: float = 98.0, ref: np.ndarray | None = None
) -> np.ndarray:
    """``(C,H,W)`` reflectance -> ``(H,W,3)`` in [0,1], percentile-stretched (stretch of ``ref`` if given)."""
    rgb = np.stack([img[i] for i in idx], axis=-1).astype(np.float64)
    base = rgb if ref is None else np.stack([ref[i] for i in idx], axis=-1)
    a, b = np.percentile(base, lo), np.percentile(base, hi)
    return np.clip((rgb - a) / max(b - a, 1e-6), 0, 1)


def reconstruction_figure(
    sensor: Sensor,
    image: np.ndarray,
    masked_pixels: np.ndarray,
    recon: np.ndarray,
    path: str | Path,
    title: str = "",
    n_spectra: int = 3,
    seed: int = 0,
) -> Path:
    """Input, masked input and reconstruction composites, plus spectra of a few masked pixels."""
    idx = rgb_bands(sensor)
    fig = Figure(figsize=(16, 4))
    axes = fig.subplots(1, 4, gridspec_kw={"width_ratios": [1, 1, 1, 1.6]})
    inp = composite(image, idx)
    masked = inp.copy()
    masked[masked_pixels] = 0.5
    rec = composite(recon, idx, ref=image)
    for ax, im, t in zip(
        axes[:3], (inp, masked, rec), ("input", "masked input", "reconstruction"), strict=True
    ):
        ax.imshow(im)
        ax.set_title(t)
        ax.axis("off")
    rng = np.random.default_rng(seed)
    ys, xs = np.nonzero(masked_pixels)
    wl = np.asarray(sensor.centers_nm)
    ax = axes[3]
    for k in rng.choice(len(ys), size=min(n_spectra, len(ys)), replace=False) if len(ys) else []:
        y, x = ys[k], xs[k]
        line = ax.plot(wl, image[:, y, x], lw=1.5, label=f"pixel ({y},{x}) original")[0]
        ax.plot(wl, recon[:, y, x], lw=1.2, ls="--", color=line.get_color(), label="reconstructed")
    ax.set_xlabel("wavelength (nm)")
    ax.set_ylabel("reflectance")
    ax.set_title("spectra of masked pixels")
    ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return path


def read_metrics(metrics_csv: str | Path) -> list[dict[str, str]]:
    """Rows of a run's CSV log, including the parts kept aside by earlier resumes
    (``metrics.part-NNN.csv``, oldest first)."""
    import csv

    metrics_csv = Path(metrics_csv)
    files = [*sorted(metrics_csv.parent.glob("metrics.part-*.csv")), metrics_csv]
    rows: list[dict[str, str]] = []
    for f in files:
        if f.exists():
            with f.open() as fh:
                rows.extend(csv.DictReader(fh))
    return rows


def loss_curves(metrics_csv: str | Path, path: str | Path, keys: Sequence[str] | None = None) -> Path | None:
    """Plot training/validation losses from Lightning's CSV log (all resumed parts)."""
    rows = read_metrics(metrics_csv)
    if not rows:
        return None
    keys = keys or sorted({k for r in rows for k in r if k.startswith(("train/loss", "val/loss"))})
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    for k in keys:
        pts = [(float(r["step"]), float(r[k])) for r in rows if r.get(k) not in (None, "")]
        if pts:
            s, v = zip(*pts, strict=True)
            ax.plot(s, v, marker="." if k.startswith("val") else None, label=k)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    return path
