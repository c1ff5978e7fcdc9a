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
3. ``timing``: wall time of :func:`hyperkd.synth.kd_stores` at its defaults
   (256 HLS + 48 EnMAP + 64 EnMAP/HLS chips of 64 px) into a temporary folder.

    python benchmarks/synth_kd_presets.py --quick    # seed 11, SNR x1 and x0.25, timing (~1-2 min)
    python benchmarks/synth_kd_presets.py            # seeds 1-6 and 11, three SNRs, timing
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

from hyperkd.core.sensors import get_sensor
from hyperkd.synth import Instrument, kd_stores
from hyperkd.synth.separability import crop_config, features, pair_scores


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
        for seed in [11] if args.quick else [1, 2, 3, 4, 5, 6, 11]:
            chips = features(cfg, hls, seed, 64, 32, Instrument(), 2, True, not args.all_pure)
            tp, tc, counts = pair_scores(chips, cfg.crop_classes, "even-stand", "patchy-stand", 1e-2)
            cp, cc, _ = pair_scores(chips, cfg.crop_classes, "maize", "wheat", 1e-2)
            n = sum(counts[0])
            print(f"| {seed} | {tp:.3f} / {tc:.3f} | {cp:.3f} / {cc:.3f} | {n} |")

    if "snr" not in args.skip:
        pairs = [("maize", "alfalfa"), ("soybean", "alfalfa")]
        cfg = crop_config([x for p in pairs for x in p])
        enmap = get_sensor("enmap")
        print("\n## low-SNR instrument (EnMAP, 48 chips of 32 px, seed 2; per-pixel / 3x3 window mean)")
        print("| SNR scale | " + " | ".join(f"{a} vs {b}" for a, b in pairs) + " |")
        print("|---|" + "---|" * len(pairs))
        for snr in [1.0, 0.25] if args.quick else [1.0, 0.25, 0.1]:
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
