"""Does a synthetic label need spatial context? A small numpy check of the ``kd-*`` presets.

Pixels of two crop classes are classified by an L2-regularised logistic regression on the
pixel's spectrum alone, and on the spectrum plus window statistics around it. A pair the
presets meant to need context (``even-stand`` vs ``patchy-stand``) should be near chance per
pixel and separable with context; a spectrally distinct pair should be easy per pixel. Used
by ``tests/test_synth.py`` and ``benchmarks/synth_kd_presets.py``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from hyperkd.core.sensors import Sensor
from hyperkd.synth import Instrument, SceneConfig, generate_scene, render

Chip = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""(pixel features, context features, croptype ids, usable-pixel mask), all flattened."""


def crop_config(crops: Sequence[str]) -> SceneConfig:
    """``kd-eval`` with only ``crops``, all cropland, no water/towns/roads, parcels 6-12 px
    (small parcels: the parcel, not the pixel, is the independent sample)."""
    kd = SceneConfig.preset("kd-eval")
    cfg = kd.with_weights(
        crops={c.name: float(c.name in crops) for c in kd.crops},
        covers={"cropland": 1.0, "grassland": 0.0, "forest": 0.0, "barren": 0.0},
    )
    return dataclasses.replace(cfg, p_water=0.0, p_urban=0.0, roads=(0, 0), parcel_px=(6.0, 12.0))


def window_stats(img: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over the (2r+1)^2 window around each pixel of (C, H, W), mirrored borders."""
    k = 2 * r + 1
    p = np.pad(img.astype(np.float64), ((0, 0), (r, r), (r, r)), mode="reflect")

    def box(a: np.ndarray) -> np.ndarray:
        cs = np.pad(np.cumsum(np.cumsum(a, axis=1), axis=2), ((0, 0), (1, 0), (1, 0)))
        return (cs[:, k:, k:] - cs[:, :-k, k:] - cs[:, k:, :-k] + cs[:, :-k, :-k]) / k**2

    mean = box(p)
    return mean, np.sqrt(np.maximum(box(p * p) - mean**2, 0.0))


def balanced_accuracy(
    xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray, lam: float
) -> float:
    """Balanced test accuracy of an L2-regularised logistic regression fitted by Newton steps."""
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-12
    a = np.c_[(xtr - mu) / sd, np.ones(len(xtr))]
    b = np.c_[(xte - mu) / sd, np.ones(len(xte))]
    w = np.zeros(a.shape[1])
    for _ in range(30):
        p = 1.0 / (1.0 + np.exp(-np.clip(a @ w, -30, 30)))
        hess = (a * (p * (1 - p))[:, None]).T @ a + lam * np.eye(len(w))
        w -= np.linalg.solve(hess, a.T @ (p - ytr) + lam * w)
    pred = b @ w > 0
    return 0.5 * (float((~pred[yte == 0]).mean()) + float(pred[yte == 1].mean()))


def features(
    cfg: SceneConfig,
    sensor: Sensor,
    seed: int,
    n: int,
    size: int,
    instrument: Instrument,
    radius: int,
    with_std: bool,
    interior: bool,
) -> list[Chip]:
    """Per chip of ``n`` scenes: pixel features, context features (window mean, and with
    ``with_std`` the pixel and log window std too), crop ids, and the usable pixels (pure;
    with ``interior`` only those whose 5x5 window lies inside one parcel)."""
    out = []
    for i in range(n):
        sc = generate_scene(cfg, size, seed=seed, index=i)
        img = render(sc, sensor, instrument)
        c = img.shape[0]
        mean, std = window_stats(img, radius)
        pure = sc.unit_fraction[0] == 1.0
        if interior:
            owner = np.where(pure, sc.unit_map, -1).astype(np.float64)[None]
            o_mean, o_std = window_stats(owner, 2)
            pure = pure & (o_std[0] < 1e-9) & (o_mean[0] >= 0)
        pixel = img.reshape(c, -1).T
        ctx = [mean.reshape(c, -1).T] + ([np.log(std.reshape(c, -1).T + 1e-4)] if with_std else [])
        context = np.concatenate([pixel, *ctx], axis=1) if with_std else ctx[0]
        out.append((pixel, context, sc.labels["croptype"].ravel(), pure.ravel()))
    return out


class PairScores(NamedTuple):
    """Balanced accuracies per pixel and with context, and the pixel counts per split and class."""

    pixel: float
    context: float
    counts: tuple[tuple[int, int], tuple[int, int]]  # ((train a, train b), (test a, test b))


def pair_scores(chips: Sequence[Chip], classes: Sequence[str], a: str, b: str, lam: float) -> PairScores:
    """Classify ``a`` vs ``b``: first half of the chips to train, second half to test."""
    ia, ib = classes.index(a), classes.index(b)
    half = len(chips) // 2
    res = []
    counts: list[tuple[int, int]] = []
    for feat in (0, 1):
        parts = []
        for idx in (range(0, half), range(half, len(chips))):
            xs, ys = [], []
            for i in idx:
                m = chips[i][3] & np.isin(chips[i][2], [ia, ib])
                xs.append(chips[i][feat][m])
                ys.append((chips[i][2][m] == ib).astype(float))
            parts.append((np.concatenate(xs), np.concatenate(ys)))
        (xtr, ytr), (xte, yte) = parts
        counts = [(int((1 - ytr).sum()), int(ytr.sum())), (int((1 - yte).sum()), int(yte.sum()))]
        res.append(balanced_accuracy(xtr, ytr, xte, yte, lam))
    return PairScores(res[0], res[1], (counts[0], counts[1]))
