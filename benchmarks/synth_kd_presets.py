#!/usr/bin/env python3
"""Do the ``kd-*`` synthetic presets do what docs/synthetic-data.md says? Numbers for that page.

Three measurements, numpy only:

1. ``twins``: the spatial-context crop pair (``even-stand`` vs ``patchy-stand``) against a
   spectrally distinct control pair (``maize`` vs ``wheat``). ``kd-eval`` scenes restricted
   to those crops, all cropland, parcels 6-12 px, 32 px chips rendered for HLS; train on
   the first half of the scenes, test on the second; pixels whose 5x5 window lies inside
   one parcel (``--all-pure``: every pure pixel). Balanced accuracy of an L2-regularised
   logistic regression on the pixel's spectrum vs the spectrum plus 5x5 window mean and
   log-std, per seed. The test in tests/test_synth.py is seed 11 of this.
2. ``snr``: what the student's low-SNR instrument (``--snr-scale``) costs single pixels:
   close crop pairs on EnMAP (202 bands), per-pixel spectrum vs 3x3 window mean, at SNR
   x1, x0.25, x0.1.
3. ``timing``: wall time of :func:`hyperkd.data.synth.kd_stores` at its defaults
   (256 HLS + 48 EnMAP + 64 EnMAP/HLS chips of 64 px) into a temporary folder.

    python benchmarks/synth_kd_presets.py --quick    # seed 11, SNR x1 and x0.25, timing (~1-2 min)
    python benchmarks/synth_kd_presets.py            # seeds 1-6 and 11, three SNRs, timing
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import tempfile
import time
from collections.abc import Sequence

import numpy as np

from hyperkd.data.synth import Instrument, SceneConfig, generate_scene, kd_stores, render
from hyperkd.sensors import Sensor, get_sensor


def window_stats(img: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std over the (2r+1)^2 window around each pixel of (C, H, W), mirrored borders."""
    k = 2 * r + 1
    p = np.pad(img.astype(np.float64), ((0, 0), (r, r), (r, r)), mode="reflect")

    def box(a: np.ndarray) -> np.ndarray:
        cs = np.pad(np.cumsum(np.cumsum(a, axis=1), axis=2), ((0, 0), (1, 0), (1, 0)))
        return (cs[:, k:, k:] - cs[:, :-k, k:] - cs[:, k:, :-k] + cs[:, :-k, :-k]) / k**2

    mean = box(p)
    return mean, np.sqrt(np.maximum(box(p * p) - mean**2, 0.0))


def balanced_accuracy(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray, lam: float) -> float:
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


def crop_config(crops: Sequence[str]) -> SceneConfig:
    """``kd-eval`` with only ``crops``, all cropland, no water/towns/roads, parcels 6-12 px."""
    kd = SceneConfig.preset("kd-eval")
    cfg = kd.with_weights(crops={c.name: float(c.name in crops) for c in kd.crops},
                          covers={"cropland": 1.0, "grassland": 0.0, "forest": 0.0, "barren": 0.0})
    return dataclasses.replace(cfg, p_water=0.0, p_urban=0.0, roads=(0, 0), parcel_px=(6.0, 12.0))


def features(cfg: SceneConfig, sensor: Sensor, seed: int, n: int, size: int, instrument: Instrument,
             radius: int, with_std: bool, interior: bool) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per chip: (pixel features, context features, croptype, usable-pixel mask), all flattened."""
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


def pair_scores(chips: list, classes: Sequence[str], a: str, b: str, lam: float) -> tuple[float, float, int]:
    """(per-pixel, context) balanced accuracy, first half of the chips to train, second to test."""
    ia, ib = classes.index(a), classes.index(b)
    half = len(chips) // 2
    res = []
    n_train = 0
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
        n_train = len(ytr)
        res.append(balanced_accuracy(xtr, ytr, xte, yte, lam))
    return res[0], res[1], n_train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="seed 11 only, two SNRs")
    ap.add_argument("--all-pure", action="store_true", help="twins: every pure pixel, not only interior ones")
    ap.add_argument("--skip", nargs="*", default=[], choices=["twins", "snr", "timing"])
    args = ap.parse_args()
    print(f"# {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")

    if "twins" not in args.skip:
        cfg = crop_config(["even-stand", "patchy-stand", "maize", "wheat"])
        hls = get_sensor("hls")
        print("\n## twins (HLS, 64 chips of 32 px; balanced accuracy per-pixel / + 5x5 mean, log-std)")
        print("| seed | even vs patchy | maize vs wheat | train px (twins) |\n|---|---|---|---|")
        for seed in ([11] if args.quick else [1, 2, 3, 4, 5, 6, 11]):
            chips = features(cfg, hls, seed, 64, 32, Instrument(), 2, True, not args.all_pure)
            tp, tc, n = pair_scores(chips, cfg.crop_classes, "even-stand", "patchy-stand", 1e-2)
            cp, cc, _ = pair_scores(chips, cfg.crop_classes, "maize", "wheat", 1e-2)
            print(f"| {seed} | {tp:.3f} / {tc:.3f} | {cp:.3f} / {cc:.3f} | {n} |")

    if "snr" not in args.skip:
        pairs = [("maize", "alfalfa"), ("soybean", "alfalfa")]
        cfg = crop_config([x for p in pairs for x in p])
        enmap = get_sensor("enmap")
        print("\n## low-SNR instrument (EnMAP, 48 chips of 32 px, seed 2; per-pixel / 3x3 window mean)")
        print("| SNR scale | " + " | ".join(f"{a} vs {b}" for a, b in pairs) + " |")
        print("|---|" + "---|" * len(pairs))
        for snr in ([1.0, 0.25] if args.quick else [1.0, 0.25, 0.1]):
            chips = features(cfg, enmap, 2, 48, 32, Instrument(snr_scale=snr), 1, False, True)
            cells = []
            for a, b in pairs:
                p, c, _ = pair_scores(chips, cfg.crop_classes, a, b, 1.0)
                cells.append(f"{p:.3f} / {c:.3f}")
            print(f"| {snr:g} | " + " | ".join(cells) + " |")

    if "timing" not in args.skip:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            stores = kd_stores(tmp)
            seconds = time.perf_counter() - t0
        sizes = ", ".join(f"{k} {len(v)}" for k, v in stores.items())
        print(f"\n## kd_stores at defaults: {seconds:.1f} s ({sizes} chips of 64 px)")


if __name__ == "__main__":
    main()
