#!/usr/bin/env python3
"""The chip store's index at 100 to 10,000 chips, and ``prepare`` on a large product.

Part 1 (index): writes stores of tiny chips (4 bands x 8 x 8 px, so the index, not the pixels,
is what is timed) with the metadata ``hyperkd data prepare`` records per chip and 13 chips per
shard (what 256 MB shards hold at the paper's 224 px x 218 bands), in one run:

* ``v2`` - this hyperkd's :class:`~hyperkd.data.store.ChipStoreWriter`: a shard index file
  per shard, written once; the header written twice;
* ``v1`` - format 1 as the previous writer did it: the whole manifest, with a dict per chip,
  rewritten atomically (and fsynced) after every shard (up to ``--v1-max`` chips: it writes
  a quadratic number of bytes).

and prints, per store size, write time per chip (the fastest of ``--repeats`` writes), index bytes on disk per chip, index bytes
*written* per chip (v1 rewrites them), the time to open the store (fastest of 5), the bytes a DataLoader
worker receives (the pickled store) and the time to read every chip's metadata.

Part 2 (prepare): writes one generated 224-band int16 L2A product of ``--product`` px square
and prepares it in a child process; prints chips/s, MB/s of GeoTIFF and the child's peak RSS
next to the product's size and that of a child that only imports hyperkd and loads plugins:
windows are streamed, so memory stays bounded by a shard, not by the product.

    python benchmarks/store_index.py --quick   # 100 / 1,000 / 3,000 chips, 512 px product
    python benchmarks/store_index.py           # 100 / 1,000 / 10,000 chips, 1024 px product
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARD = 13  # 256 MB / (218 bands x 224 x 224 px x 2 B + mask)


def _meta(k: int) -> dict[str, Any]:
    """Per-chip metadata as ``prepare`` records it."""
    return {
        "source": f"ENMAP01-____L2A-DT0000004242_20230615T103512Z_{k // 100:03d}_V010303_20230620T081545Z",
        "path": f"/data/enmap/ENMAP01-____L2A-DT0000004242_{k // 100:03d}",
        "window": [224 * (k % 10), 224 * (k // 10 % 10), 224, 224],
        "crs": "EPSG:32632",
        "transform": [30.0, 0.0, 628785.0 + 30 * k, 0.0, -30.0, 5294265.0],
        "nodata_fraction": 0.012345,
        "cloud_fraction": 0.0,
    }


def _sensor() -> Any:
    from hyperkd.core.sensors import Band, Sensor

    return Sensor(name="toy", bands=tuple(Band(f"b{i}", 450.0 + 50 * i, 10.0) for i in range(4)), gsd_m=30)


def write_v2(root: Path, n: int) -> float:
    """Seconds to write and seal a store of ``n`` tiny chips with this hyperkd's writer."""
    from hyperkd.data.store import ChipStoreWriter

    img = np.full((4, 8, 8), 0.25, np.float32)
    valid = np.ones((8, 8), bool)
    t0 = time.perf_counter()
    w = ChipStoreWriter(root, _sensor(), 8, shard_size=SHARD)
    for k in range(n):
        meta = _meta(k)
        w.add(img, valid, **meta)
        if k % 100 == 99 or k == n - 1:
            w.mark_source_done(meta["source"])
    w.close()
    return time.perf_counter() - t0


def write_v1(root: Path, n: int) -> tuple[float, int]:
    """Format 1 as the previous writer wrote it: (seconds, manifest bytes written in all)."""
    from hyperkd.core.io import atomic_path, atomic_write_json

    sensor = _sensor().to_dict()
    img = np.full((4, 8, 8), 0.25, np.float16)
    root.mkdir(parents=True)
    written = 0
    chips: list[dict[str, Any]] = []
    shards: list[dict[str, Any]] = []
    done: list[str] = []

    def manifest(complete: bool) -> None:
        nonlocal written
        d = {"format": "hyperkd-chipstore", "version": 1, "complete": complete, "chip_size": 8, "sensor": sensor,
             "num_chips": len(chips), "stats": None, "attrs": {}, "sources_done": done, "shards": shards,
             "chips": chips}  # fmt: skip
        atomic_write_json(root / "manifest.json", d)
        written += (root / "manifest.json").stat().st_size

    t0 = time.perf_counter()
    manifest(False)
    pending: list[dict[str, Any]] = []
    for k in range(n):
        pending.append(_meta(k))
        last = k % 100 == 99 or k == n - 1
        if len(pending) == SHARD or last:
            idx, stem = len(shards), f"shard-{len(shards):05d}"
            for name, arr in (
                ("image", np.stack([img] * len(pending))),
                ("valid", np.ones((len(pending), 8, 8), np.uint8)),
            ):
                with atomic_path(root / f"{stem}.{name}.npy") as tmp:
                    np.save(tmp, arr)
            shards.append({"stem": stem, "count": len(pending)})
            chips.extend({"shard": idx, "row": r, **m} for r, m in enumerate(pending))
            pending = []
            manifest(False)
        if last:  # the old writer flushed and rewrote the manifest when a source was done
            done.append(_meta(k)["source"])
            manifest(False)
    manifest(True)
    return time.perf_counter() - t0, written


def index_part(sizes: list[int], work: Path, v1_max: int, repeats: int) -> None:
    from hyperkd.data.store import ChipStore

    print(f"  index: tiny chips (4 bands x 8 x 8 px), {SHARD} chips per shard, prepare's per-chip metadata")
    head = (
        f"  {'chips':>7} {'fmt':>4} {'write us/chip':>14} {'index B/chip':>13} {'written B/chip':>15} "
        f"{'open ms':>8} {'worker B':>9} {'meta us/chip':>13}"
    )
    print(head)
    rows: dict[str, list[tuple[int, float, float]]] = {"v2": [], "v1": []}
    for n in sizes:
        for fmt in ("v2", "v1") if n <= v1_max else ("v2",):
            times = []
            for rep in range(repeats):  # the fastest of a few writes: the disk is shared
                root = work / f"{fmt}-{n}-{rep}"
                if fmt == "v2":
                    times.append(write_v2(root, n))
                    files = [root / "manifest.json", root / "index.npy", *root.glob("*.index.json")]
                    written = sum(p.stat().st_size for p in files)
                else:
                    t, written = write_v1(root, n)
                    times.append(t)
                    files = [root / "manifest.json"]
                if rep < repeats - 1:
                    shutil.rmtree(root)
            t_write = min(times)
            size = sum(p.stat().st_size for p in files)
            t_open = float("inf")
            for _ in range(5):  # the fastest of a few opens
                t0 = time.perf_counter()
                store = ChipStore(root)
                t_open = min(t_open, time.perf_counter() - t0)
            # what a DataLoader worker receives: the pickled store (format 1's reader sent its
            # whole manifest, chip list included)
            worker = len(pickle.dumps(store if fmt == "v2" else json.loads(files[0].read_text())))
            t0 = time.perf_counter()
            assert len(store.chips) == n
            t_meta = time.perf_counter() - t0
            rows[fmt].append((n, t_write / n, size / n))
            print(
                f"  {n:>7} {fmt:>4} {t_write / n * 1e6:>14.1f} {size / n:>13.1f} {written / n:>15.0f} "
                f"{t_open * 1e3:>8.1f} {worker:>9d} {t_meta / n * 1e6:>13.2f}"
            )
            shutil.rmtree(root)
    for fmt, r in rows.items():
        if len(r) < 2:
            continue
        (n0, t0_, b0), (n1, t1, b1) = r[0], r[-1]
        print(
            f"  {fmt}: from {n0} to {n1} chips, write time per chip x{t1 / t0_:.2f}, "
            f"index bytes per chip x{b1 / b0:.2f}"
        )


_CHILD = """
import json, sys, time
from hyperkd.core.plugins import load_plugins
from hyperkd.data.prepare import prepare
load_plugins()
if sys.argv[1] == "prepare":
    t0 = time.perf_counter()
    store = prepare([sys.argv[2]], sys.argv[3], size=int(sys.argv[4]), max_nodata=0.5, progress=False)
    dt = time.perf_counter() - t0
    n = len(store)
else:
    dt, n = 0.0, 0
# VmHWM: this process's own peak (ru_maxrss would carry the parent's over fork + exec)
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"seconds": dt, "chips": n, "maxrss_kb": hwm}))
"""


def prepare_part(px: int, size: int, work: Path) -> None:
    spec = __import__("importlib.util").util.spec_from_file_location("fx", REPO / "tests/data/enmap/data.py")
    fx = __import__("importlib.util").util.module_from_spec(spec)
    spec.loader.exec_module(fx)
    product = fx.write_l2a_product(work / "products", width=px, height=px, seed=0, corner=px // 4)
    mb = sum(f.stat().st_size for f in product.rglob("*.TIF")) / 2**20

    def child(*args: str, **env: str) -> dict[str, Any]:
        cmd = [sys.executable, "-c", _CHILD, *args]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, **env})
        return json.loads(out.stdout.strip().splitlines()[-1])

    base = child("baseline")
    print(
        f"  prepare: one {px}x{px} px x 224-band int16 product ({mb:.0f} MB GeoTIFF), {size} px chips, shards of "
        f"~256 MB; peak RSS of a child that only imports hyperkd's prepare: {base['maxrss_kb'] / 1024:.0f} MB"
    )
    for label, env in (("GDAL defaults", {}), ("GDAL_CACHEMAX=64 (MB)", {"GDAL_CACHEMAX": "64"})):
        out = work / "prep-store"
        shutil.rmtree(out, ignore_errors=True)
        res = child("prepare", str(product), str(out), str(size), **env)
        store_mb = sum(p.stat().st_size for p in out.iterdir()) / 2**20
        print(
            f"    {label:<22} {res['chips']} chips ({store_mb:.0f} MB store) in {res['seconds']:.1f} s: "
            f"{res['chips'] / res['seconds']:.1f} chips/s, {mb / res['seconds']:.1f} MB/s of GeoTIFF, "
            f"peak RSS {res['maxrss_kb'] / 1024:.0f} MB"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100 / 1,000 / 3,000 chips and a 512 px product")
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="store sizes in chips")
    ap.add_argument("--product", type=int, default=None, help="product width = height in px (0: skip part 2)")
    ap.add_argument(
        "--v1-max", type=int, default=3000, help="largest store written in format 1 (it grows quadratically)"
    )
    ap.add_argument("--repeats", type=int, default=3, help="writes per store size (the fastest is shown)")
    ap.add_argument("--chip", type=int, default=64, help="chip size for part 2")
    args = ap.parse_args(argv)
    sizes = args.sizes or ([100, 1000, 3000] if args.quick else [100, 1000, 10000])
    px = args.product if args.product is not None else (512 if args.quick else 1024)
    work = Path(tempfile.mkdtemp(prefix="hyperkd-index-"))
    print(f"hyperkd chip-store index benchmark{' (--quick)' if args.quick else ''}")
    try:
        index_part(sizes, work, args.v1_max, args.repeats)
        if px:
            prepare_part(px, args.chip, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
