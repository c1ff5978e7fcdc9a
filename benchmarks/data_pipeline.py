#!/usr/bin/env python3
"""Chips per second: prepared chip store vs on-the-fly reads of the same EnMAP L2A products.

Writes generated 224-band int16 L2A products (the official layout, via
``tests/data/enmap/data.py``), prepares a chip store from them, then times, in one run and on
the same chip size, batch size and worker count:

1. ``store``:    a torch ``DataLoader`` over :class:`~hyperkd.data.loader.ChipDataset` (what
   training reads: memory-mapped float16 shards, shuffled, chip by chip);
   ``store-batch-f16``: the same chips read a batch at a time (:func:`hyperkd.data.loader.batch_loader`:
   one fancy-index per shard), handing over the stored float16 (a GPU run converts on the device);
   ``webdataset`` / ``webdataset-repeats``: the store exported with ``hyperkd data export`` and
   streamed from its tar shards (:class:`hyperkd.data.streaming.StreamingChipDataset`), each
   chip used once or ``--repeats`` times per read (when the ``stream`` extra is installed);
2. ``rasterio``: random windows read on the fly with the L2A reader (rasterio windowed reads,
   gain/offset, no-data + quality masks) inside a ``DataLoader``;
3. ``torchgeo``: torchgeo's ``RandomGeoSampler`` over ``EnMAPL2A`` (the torchgeo
   ``RasterDataset`` adapter: reflectance + valid mask);
4. ``torchgeo-dn``: the same sampler over torchgeo's own ``EnMAP`` dataset (raw DNs, no
   masks), to show what the adapter itself costs.

and prints chips/s, MB/s delivered per worker (float32 images; float16 for ``-f16``), MB/s read
per worker (less than delivered when a read is used several times), each method's ratio to
torchgeo's sampler and the per-chip store's ratio to it. All files were just written, so
they sit in the OS page cache: this compares decoding and assembly work, not disk speed
(a cold disk widens the gap further, as on-the-fly reads touch whole strips of all bands).

    python benchmarks/data_pipeline.py --quick     # ~1 minute on 2 CPU cores
    python benchmarks/data_pipeline.py             # larger products, more chips
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

REPO = Path(__file__).resolve().parents[1]


def _fixtures() -> Any:
    """The fake-product writer shared with the tests (``tests/data/enmap/data.py``)."""
    spec = importlib.util.spec_from_file_location("enmap_fixtures", REPO / "tests/data/enmap/data.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


class OnTheFlyWindows(Dataset):
    """Random ``size`` x ``size`` windows read from the products at every access (seeded)."""

    def __init__(self, paths: list[Path], bands: list[str], size: int, length: int, seed: int = 0) -> None:
        self.paths, self.bands, self.size, self.length, self.seed = paths, bands, size, length, seed
        self._products: list[Any] | None = None

    def _open(self) -> list[Any]:
        if self._products is None:  # opened lazily, so each DataLoader worker has its own handles
            from hyperkd_enmap.l2a import open_l2a

            self._products = [open_l2a(p) for p in self.paths]
        return self._products

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        from rasterio.windows import Window

        products = self._open()
        rng = np.random.default_rng((self.seed, i))
        p = products[int(rng.integers(len(products)))]
        col = int(rng.integers(0, p.width - self.size + 1))
        row = int(rng.integers(0, p.height - self.size + 1))
        w = p.read(Window(col, row, self.size, self.size), self.bands)
        return {"image": torch.from_numpy(w.image), "valid": torch.from_numpy(w.valid)}

    def __getstate__(self) -> dict[str, Any]:
        d = self.__dict__.copy()
        d["_products"] = None
        return d


def collate(samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Batch ``image`` (and ``valid`` where present) with ``np.stack``, identically for every method.

    Neither default_collate nor torchgeo's stack_samples is used: both call ``torch.stack``,
    which with the CPU torch build of our development container was several times slower than ``np.stack`` for
    these arrays; the script prints both costs so the choice is visible.
    """
    out: dict[str, torch.Tensor] = {}
    for key in ("image", "valid"):
        if key in samples[0]:
            arrs = [s[key].numpy() if isinstance(s[key], torch.Tensor) else s[key] for s in samples]
            out[key] = torch.from_numpy(np.stack(arrs))
    return out


def collate_costs(store: Any, batch: int) -> tuple[float, float]:
    """Milliseconds per batch for ``torch.stack`` and ``np.stack`` of ``batch`` store chips."""
    items = [store[i % len(store)]["image"] for i in range(batch)]
    t0 = time.perf_counter()
    for _ in range(5):
        torch.stack([torch.from_numpy(a) for a in items])
    t1 = time.perf_counter()
    for _ in range(5):
        np.stack(items)
    t2 = time.perf_counter()
    return (t1 - t0) / 5 * 1000, (t2 - t1) / 5 * 1000


def chips_per_second(make_loader: Callable[[], Iterable[dict[str, Any]]], n_chips: int) -> float:
    """Throughput over ``n_chips`` chips after one warm-up batch (file opening, first decode).

    The loader is restarted when it runs out (another epoch of a small store).
    """

    def stream() -> Iterator[dict[str, Any]]:
        while True:
            yield from make_loader()

    it = stream()
    next(it)
    seen, t0 = 0, time.perf_counter()
    for b in it:
        seen += int(b["image"].shape[0])
        if seen >= n_chips:
            break
    return seen / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small products and few chips (~1 minute)")
    ap.add_argument("--products", type=int, default=2, help="number of generated products")
    ap.add_argument("--width", type=int, default=None, help="product width in px (default 512, quick 256)")
    ap.add_argument("--height", type=int, default=None, help="product height in px (default 512, quick 256)")
    ap.add_argument("--size", type=int, default=64, help="chip size in px")
    ap.add_argument("--batch", type=int, default=16, help="batch size")
    ap.add_argument(
        "--chips", type=int, default=None, help="chips timed per method (default 1024, quick 192)"
    )
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers for every method")
    ap.add_argument(
        "--interleave",
        choices=("pixel", "band"),
        default="pixel",
        help="GeoTIFF interleave of the generated products (GDAL's default: pixel)",
    )
    ap.add_argument(
        "--repeats", type=int, default=4, help="crops per loaded chip for the webdataset-repeats row"
    )
    ap.add_argument("--workdir", type=Path, default=None, help="keep products and store here")
    args = ap.parse_args(argv)
    width = args.width or (256 if args.quick else 512)
    height = args.height or (256 if args.quick else 512)
    n_chips = args.chips or (192 if args.quick else 1024)
    S, B = args.size, args.batch

    from hyperkd.core.plugins import load_plugins
    from hyperkd.data.prepare import prepare

    load_plugins()
    fx = _fixtures()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="hyperkd-bench-"))
    try:
        prod_root = work / "products"
        if prod_root.exists():
            shutil.rmtree(prod_root)
        products = []
        for k in range(args.products):
            name = fx.PRODUCT.replace("_002_", f"_{k + 1:03d}_")
            origin = (fx.ORIGIN[0], fx.ORIGIN[1] - 30.0 * height * k)
            products.append(
                fx.write_l2a_product(
                    prod_root,
                    product=name,
                    width=width,
                    height=height,
                    seed=k,
                    corner=width // 4,
                    origin=origin,
                    interleave=args.interleave,
                )
            )
        store_dir = work / "store"
        if store_dir.exists():
            shutil.rmtree(store_dir)
        t0 = time.perf_counter()
        store = prepare(products, store_dir, size=S, max_nodata=0.5, progress=False)
        t_prep = time.perf_counter() - t0
        bands = store.sensor.band_names
        mb = sum(f.stat().st_size for f in prod_root.rglob("*.TIF")) / 2**20

        results: dict[str, float] = {}
        gen = torch.Generator().manual_seed(0)
        # the store is small, so it is read for several epochs: one loader, persistent workers
        from hyperkd.data.loader import ChipDataset, batch_loader

        store_loader = DataLoader(
            ChipDataset(store),  # what training reads: float16 rows converted by torch
            batch_size=B,
            shuffle=True,
            num_workers=args.workers,
            generator=gen,
            collate_fn=collate,
            persistent_workers=args.workers > 0,
        )
        from hyperkd.data.streaming import StreamingChipDataset, export_webdataset

        batched = batch_loader(store, B, num_workers=args.workers, generator=torch.Generator().manual_seed(0))
        loaders: dict[str, Callable[[], Iterable[dict[str, Any]]]] = {
            "store": lambda: store_loader,
            "store-batch-f16": lambda: batched,
            "rasterio": lambda: DataLoader(
                OnTheFlyWindows(products, bands, S, n_chips + 2 * B),
                batch_size=B,
                num_workers=args.workers,
                collate_fn=collate,
            ),
        }

        def torchgeo_loader(raw: bool) -> Iterable[dict[str, Any]]:
            from hyperkd_enmap.torchgeo_l2a import EnMAPL2A
            from torchgeo.datasets import EnMAP
            from torchgeo.samplers import RandomGeoSampler

            ds = EnMAP(paths=[str(p) for p in products], bands=bands) if raw else EnMAPL2A(paths=products)
            sampler = RandomGeoSampler(
                ds, size=S, length=n_chips + 2 * B, generator=torch.Generator().manual_seed(0)
            )
            return DataLoader(ds, sampler=sampler, batch_size=B, collate_fn=collate, num_workers=args.workers)

        streamed = {}
        if importlib.util.find_spec("webdataset") is not None:
            wds_dir = work / "webdataset"
            if wds_dir.exists():
                shutil.rmtree(wds_dir)
            export_webdataset(store, wds_dir, shards=max(1, args.workers) * 2)
            for k in (1, args.repeats):
                ds = StreamingChipDataset(wds_dir, repeats=k, buffer=2 * B)
                streamed[k] = DataLoader(
                    ds,
                    batch_size=B,
                    num_workers=args.workers,
                    collate_fn=collate,
                    persistent_workers=args.workers > 0,
                )
            loaders["webdataset"] = lambda: streamed[1]
            loaders["webdataset-repeats"] = lambda: streamed[args.repeats]
        loaders["torchgeo"] = lambda: torchgeo_loader(raw=False)
        loaders["torchgeo-dn"] = lambda: torchgeo_loader(raw=True)
        for name, make in loaders.items():
            results[name] = chips_per_second(make, n_chips)
        ms_torch, ms_np = collate_costs(store, B)

        print(f"hyperkd data-pipeline benchmark{' (--quick)' if args.quick else ''}")
        print(
            f"  {args.products} generated L2A products {width}x{height} px x 224 bands int16 "
            f"({mb:.0f} MB GeoTIFF, {args.interleave}-interleaved strips, uncompressed), in page cache"
        )
        print(
            f"  chips {S}x{S} px x {len(bands)} bands ({store.sensor.selection}), batch {B}, "
            f"workers {args.workers}, {n_chips} chips timed per method after 1 warm-up batch"
        )
        print(f"  prepare: {len(store)} chips in {t_prep:.1f} s ({len(store) / t_prep:.0f} chips/s)")
        print(f"  batches built with np.stack ({ms_np:.0f} ms/batch here; torch.stack: {ms_torch:.0f} ms)")
        print(
            f"  machine: {platform.machine()}, {torch.get_num_threads()} torch threads, "
            f"python {platform.python_version()}, torch {torch.__version__}"
        )
        labels = {
            "store": "chip store, per chip (ChipDataset, as training reads)",
            "store-batch-f16": "chip store, batched reads, float16 (batch_loader)",
            "webdataset": "WebDataset export, streamed (StreamingChipDataset)",
            "webdataset-repeats": f"WebDataset export, each read used {args.repeats}x",
            "rasterio": "rasterio windows on the fly (L2A reader)",
            "torchgeo": "torchgeo RandomGeoSampler + EnMAPL2A",
            "torchgeo-dn": "torchgeo RandomGeoSampler + EnMAP (raw DN)",
        }
        chip_mb = len(bands) * S * S * 4 / 2**20  # float32 image as delivered
        per = max(1, args.workers)
        print(
            f"  {'method':<52}{'chips/s':>9}{'MB/s/worker':>12}{'read MB/s/w':>12}{'x torchgeo':>11}{'store is':>9}"
        )
        for name, cps in results.items():
            mb_chip = chip_mb / 2 if name.endswith("f16") else chip_mb
            reads = cps / (args.repeats if name == "webdataset-repeats" else 1)
            print(
                f"  {labels[name]:<52}{cps:>9.1f}{cps * mb_chip / per:>12.1f}{reads * mb_chip / per:>12.1f}"
                f"{cps / results['torchgeo']:>10.1f}x{results['store'] / cps:>8.1f}x"
            )
        best = max(("store", "store-batch-f16"), key=lambda k: results[k])
        print(
            f"  fastest store path ({labels[best]}): {results[best] / results['torchgeo']:.1f}x torchgeo's "
            "RandomGeoSampler on the same products, measured in this run"
        )
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
