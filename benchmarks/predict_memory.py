#!/usr/bin/env python3
"""Peak memory of ``hyperkd.predict`` on a small and a large scene, side by side.

``predict`` reads, runs and writes a scene block by block, so its memory should not grow with
the scene. This writes two synthetic 224-band EnMAP L2A scenes (default 500 x 500 and
2000 x 2000 px; written tile by tile, so writing them needs little memory either), maps each
in a fresh process with an untrained raw-spectra model (32 px windows; the model's weights do
not change memory use) and prints, per scene, the process's peak RSS, its RSS before
``predict`` ran (Python, torch, the model) and the growth during ``predict``, then the ratio of
the peaks::

    python benchmarks/predict_memory.py            # 500 px vs 2000 px
    python benchmarks/predict_memory.py --sizes 300 1200 --block 128
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CHIP = 32


def _fixtures():
    spec = importlib.util.spec_from_file_location("enmap_fixtures", REPO / "tests/data/enmap/data.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def write_scene(root: Path, size: int, tile: int = 256) -> Path:
    """A ``size`` x ``size`` px, 224-band L2A product with a nodata corner, written tile by tile."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    fx = _fixtures()
    centers, fwhms = fx.inflight_table()
    n = len(centers)
    product = fx.PRODUCT
    folder = root / product
    folder.mkdir(parents=True)
    xml = fx.l2a_metadata_xml(
        product, centers, fwhms, [1e-4] * n, [0.0] * n, vnir=list(fx.INFLIGHT_VNIR), width=size, height=size
    )
    (folder / f"{product}-METADATA.XML").write_bytes(xml)
    profile = dict(
        driver="GTiff", dtype="int16", count=n, width=size, height=size, crs=fx.CRS_UTM32,
        transform=from_origin(*fx.ORIGIN, 30.0, 30.0), nodata=fx.NODATA, tiled=True,
        blockxsize=tile, blockysize=tile, compress="deflate", zlevel=1, predictor=2, BIGTIFF="IF_SAFER",
    )  # fmt: skip
    x = np.linspace(0, 1, n, dtype=np.float32)[:, None, None]
    with rasterio.open(folder / f"{product}-SPECTRAL_IMAGE.TIF", "w", **profile) as dst:
        for r in range(0, size, tile):
            for c in range(0, size, tile):
                h, w = min(tile, size - r), min(tile, size - c)
                rr, cc = np.mgrid[r : r + h, c : c + w].astype(np.float32)
                veg = (0.5 + 0.5 * np.sin(rr / 37.0) * np.cos(cc / 53.0))[None]
                dn = np.round(400 + 2500 * veg * (x > 0.25) + 900 * (1 - veg) * x).astype(np.int16)
                dn[:, (rr + cc) < size // 8] = fx.NODATA  # the background corner of a rotated swath
                dst.write(dn, window=Window(c, r, w, h))
    return folder


def child(scene: str, out: str, block: int) -> None:
    """Map ``scene`` in this process and print its memory figures as JSON."""
    import torch

    from hyperkd.core.sensors import get_sensor
    from hyperkd.evaluation.predict import predict
    from hyperkd.evaluation.tasks import SegmentationTask
    from hyperkd.models.pixel import PixelModel

    torch.manual_seed(0)
    task = SegmentationTask(
        label="landcover", classes=tuple(f"class {i}" for i in range(1, 7)), codes=(1, 2, 3, 4, 5, 6)
    )
    # the raw-spectra model of the `frozen` protocol (a pixel CNN head): the model the figures in
    # docs/tasks.md were measured with; the weights do not change memory use
    model = PixelModel.build(task, sensor=get_sensor("enmap", "all"), img_size=CHIP, protocol="frozen").eval()
    before = _rss_mb("VmRSS")
    t0 = time.perf_counter()
    (res,) = predict(model, [scene], out, block=block, progress=False, device="cpu")
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"before_mb": before, "peak_mb": peak, "seconds": seconds, "windows": res.windows}))


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs=2, default=(500, 2000), metavar=("SMALL", "LARGE"))
    ap.add_argument("--block", type=int, default=256, help="predict's block size (px)")
    ap.add_argument("--child", nargs=2, metavar=("SCENE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child, args.block)
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            root = Path(tmp) / f"s{size}"
            scene = write_scene(root, size)
            cube_mb = 224 * size * size * 4 / 2**20
            cmd = [
                sys.executable,
                __file__,
                "--child",
                str(scene),
                str(root / "maps"),
                "--block",
                str(args.block),
            ]
            got = json.loads(
                subprocess.run(cmd, check=True, capture_output=True, text=True)
                .stdout.strip()
                .splitlines()[-1]
            )
            rows.append((size, cube_mb, got))
    print(f"hyperkd.predict peak memory (224 bands, {CHIP} px windows, overlap 8, block {args.block} px)")
    print(
        f"{'scene':>12} {'cube float32':>13} {'RSS before':>11} {'peak RSS':>9} {'growth':>8} {'windows':>8} {'time':>7}"
    )
    for size, cube, g in rows:
        print(
            f"{size:>5} x {size:<5} {cube:>10.0f} MB {g['before_mb']:>8.0f} MB {g['peak_mb']:>6.0f} MB "
            f"{g['peak_mb'] - g['before_mb']:>5.0f} MB {g['windows']:>8} {g['seconds']:>6.1f}s"
        )
    (s, cs, a), (big, cl, b) = rows
    print(
        f"scene area x{(big / s) ** 2:.0f}, float32 cube x{cl / cs:.0f}; peak RSS x{b['peak_mb'] / a['peak_mb']:.2f}, "
        f"growth during predict x{(b['peak_mb'] - b['before_mb']) / max(a['peak_mb'] - a['before_mb'], 1e-9):.2f}"
    )


if __name__ == "__main__":
    main()
