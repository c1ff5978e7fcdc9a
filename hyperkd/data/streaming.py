"""Streaming a chip store to many GPUs and nodes: WebDataset tar shards.

A chip store is random-access and local (memory-mapped ``.npy``). For training on many
nodes, or from object storage, :func:`export_webdataset` writes its chips as WebDataset
tar shards (``hyperkd data export STORE --format webdataset --out DIR``), and
:class:`StreamingChipDataset` reads them back with WebDataset's own readers, so a shard
URL may be a local path, ``https://...``, ``gs://...`` or ``pipe:aws s3 cp s3://b/x.tar -``
(anything ``webdataset.gopen`` opens). Needs the ``stream`` extra (``pip install
hyperkd[stream]``).

Layout of an export folder::

    OUT/
      hyperkd-stream.json     # format, sensor (with the store's statistics), chip size, labels,
                              # shards [{"url", "count"}], num_chips, the source store
      chips-00000.tar         # per chip: KEY.image.npy (C,S,S) float16, KEY.valid.npy (S,S)
      ...                     # uint8, KEY.<label>.npy, KEY.json (metadata); KEY = chip index

Chips are dealt to shards in a seeded random order with equal counts (+-1), so each shard
is a sample of the whole store and shard-level shuffling is enough.

Who reads what: every epoch the shard list is permuted with ``(seed, epoch)`` — the same on
every rank — and rank ``r`` of ``w`` takes shards ``r, r+w, ...``; inside a rank, DataLoader
worker ``k`` of ``n`` takes every ``n``-th of those. Ranks and workers read disjoint shards,
so with a shard count that is a multiple of ``world_size x num_workers`` every chip is seen
exactly once per epoch. Otherwise each rank stops at the smallest rank's chip count (DDP
needs equal step counts), and a warning says how many chips an epoch skips.

``repeats=k`` yields each loaded chip ``k`` times, each a fresh random ``crop`` (and
dihedral view with ``augment``), so the masker draws ``k`` masks per read: ``k`` times fewer
bytes per training sample.
"""

from __future__ import annotations

import io
import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from hyperkd.core.errors import DataError
from hyperkd.core.io import atomic_folder, atomic_write_json
from hyperkd.core.sensors import Sensor
from hyperkd.data.loader import NUM_TRANSFORMS, apply_spatial, dihedral, label_tensor
from hyperkd.data.store import ChipStore, LabelSpec

log = logging.getLogger(__name__)

STREAM_FORMAT = "hyperkd-webdataset"
STREAM_INDEX = "hyperkd-stream.json"
SHARD_BYTES = 256 << 20


def _webdataset() -> Any:
    try:
        import webdataset
    except ImportError:
        raise DataError("streaming needs the webdataset package: pip install 'hyperkd[stream]'") from None
    return webdataset


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def export_webdataset(
    store: ChipStore | str | Path,
    out: str | Path,
    *,
    shards: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write every chip of ``store`` as WebDataset tar shards in ``out``; returns the index.

    ``shards``: how many (default: about 256 MB each); pick a multiple of the number of
    GPUs x DataLoader workers that will read them, so each chip is read exactly once per
    epoch. The folder is written aside and swapped in when complete.
    """
    wds = _webdataset()
    store = store if isinstance(store, ChipStore) else ChipStore(store)
    out = Path(out).expanduser()
    if out.exists() and not overwrite:
        raise DataError(f"{out} exists; choose another --out or pass --overwrite")
    n = len(store)
    per_chip = int(store[0]["image"].size * 2 + store.chip_size**2)
    count = shards or max(1, math.ceil(n * per_chip / SHARD_BYTES))
    if not 1 <= count <= n:
        raise DataError(f"--shards must be between 1 and the store's {n} chips, got {count}")
    order = np.random.default_rng(seed).permutation(n)
    parts = np.array_split(order, count)
    entries = []
    with atomic_folder(out) as tmp:
        for k, part in enumerate(parts):
            name = f"chips-{k:05d}.tar"
            with wds.TarWriter(str(tmp / name), encoder=False) as sink:
                for i in sorted(int(j) for j in part):  # shard-local order follows the store's files
                    item = store[i]  # checked on read (shard shapes, NaN/inf masked)
                    sample = {
                        "__key__": f"{i:09d}",
                        "image.npy": _npy(item["image"].astype(np.float16)),  # exact: stored as float16
                        "valid.npy": _npy(item["valid"].astype(np.uint8)),
                        "json": json.dumps({"index": i, **store.chips[i]}).encode(),
                    }
                    for lab in store.labels:
                        sample[f"{lab}.npy"] = _npy(item[lab])
                    sink.write(sample)
            entries.append({"url": name, "count": len(part)})
        index = {
            "format": STREAM_FORMAT,
            "version": 1,
            "num_chips": n,
            "chip_size": store.chip_size,
            "sensor": store.sensor.to_dict(),
            "labels": {k: v.to_dict() for k, v in store.labels.items()},
            "stats": store.stats,
            "synthetic": store.synthetic,
            "source_store": str(store.root),
            "seed": seed,
            "shards": entries,
        }
        atomic_write_json(tmp / STREAM_INDEX, index)
    log.info("exported %d chips of %s to %d WebDataset shards in %s", n, store.root, count, out)
    return index


def _dist() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def read_stream_index(location: str | Path) -> tuple[dict[str, Any], list[str]]:
    """An export's index and its shards' URLs; ``location`` is a folder, or a URL/path of its
    ``hyperkd-stream.json`` (shard URLs are taken relative to it)."""
    loc = str(location)
    if not loc.endswith(".json"):
        loc = loc.rstrip("/") + "/" + STREAM_INDEX
    try:
        if "://" in loc or loc.startswith("pipe:"):
            with _webdataset().gopen(loc) as fh:
                index = json.loads(fh.read())
        else:
            index = json.loads(Path(loc).read_text())
    except FileNotFoundError:
        raise DataError(
            f"{loc}: not found: not a hyperkd WebDataset export (make one with `hyperkd data export`)"
        ) from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{loc}: cannot read a hyperkd WebDataset export's index ({exc})") from None
    if not isinstance(index, dict) or index.get("format") != STREAM_FORMAT or "shards" not in index:
        raise DataError(f"{loc}: not a hyperkd WebDataset export (run `hyperkd data export` first)")
    base = loc.rsplit("/", 1)[0] if "/" in loc else "."
    urls = [
        e["url"] if "://" in e["url"] or e["url"].startswith("/") else f"{base}/{e['url']}"
        for e in index["shards"]
    ]
    return index, urls


class StreamingChipDataset(IterableDataset):
    """Chips streamed from a WebDataset export, split by rank and DataLoader worker.

    Items are those of :class:`~hyperkd.data.loader.ChipDataset` (``image`` float32,
    ``valid`` bool, labels, ``index``), plus ``repeat`` (0..repeats-1). ``shuffle`` permutes
    shards per epoch and samples in a buffer of ``buffer`` chips; ``crop`` (px) cuts a random
    square; ``augment`` applies a random dihedral transform (code in ``augment``).
    ``rank``/``world_size`` default to torch.distributed's.
    """

    def __init__(
        self,
        location: str | Path,
        *,
        shuffle: bool = True,
        seed: int = 0,
        buffer: int = 64,
        repeats: int = 1,
        crop: int | None = None,
        augment: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__()
        self.index, self.urls = read_stream_index(location)
        self.counts = [int(e["count"]) for e in self.index["shards"]]
        self.chip_size = int(self.index["chip_size"])
        if repeats < 1:
            raise DataError(f"repeats must be >= 1, got {repeats}")
        if crop is not None and not 1 <= crop <= self.chip_size:
            raise DataError(f"crop must be between 1 and the chip size {self.chip_size}, got {crop}")
        self.shuffle, self.seed, self.buffer = shuffle, seed, max(1, buffer)
        self.repeats, self.crop, self.augment = repeats, crop, augment
        self.labels = {k: LabelSpec.from_dict(v) for k, v in self.index.get("labels", {}).items()}
        self._rank, self._world = rank, world_size
        self.epoch = 0
        self._warned = False

    @property
    def sensor(self) -> Sensor:
        """The chips' band table with the store's per-band statistics."""
        s = Sensor.from_dict(self.index["sensor"])
        st = self.index.get("stats") or {}
        return s.with_stats(st["mean"], st["std"]) if st.get("mean") is not None else s

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch``'s shard order (otherwise each iteration advances the epoch by one)."""
        self.epoch = epoch

    def _world_info(self) -> tuple[int, int]:
        rank, world = _dist()
        return (rank if self._rank is None else self._rank), (world if self._world is None else self._world)

    def shard_plan(self, epoch: int) -> list[list[int]]:
        """Shard numbers per rank for ``epoch`` (the same permutation on every rank)."""
        _, world = self._world_info()
        if world > len(self.urls):
            raise DataError(
                f"the export has {len(self.urls)} shard(s) for {world} ranks, so some rank would read nothing; "
                "re-export with --shards a multiple of the number of ranks x workers"
            )
        order = list(range(len(self.urls)))
        if self.shuffle:
            order = [int(i) for i in np.random.default_rng((self.seed, epoch)).permutation(len(order))]
        return [order[r::world] for r in range(world)]

    def _rank_quota(self, plan: list[list[int]]) -> int:
        totals = [sum(self.counts[s] for s in p) for p in plan]
        if len(set(totals)) > 1 and not self._warned:
            self._warned = True
            log.warning(
                "%d shards do not split evenly over %d ranks: each rank reads %d chips per epoch and %d are "
                "skipped; export with --shards a multiple of the number of ranks x workers",
                len(self.urls),
                len(plan),
                min(totals),
                sum(totals) - len(plan) * min(totals),
            )
        return min(totals)

    def __len__(self) -> int:
        """Samples this rank yields per epoch (chips x repeats)."""
        return self._rank_quota(self.shard_plan(self.epoch)) * self.repeats

    def __iter__(self) -> Iterator[dict[str, Any]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        rank, _ = self._world_info()
        plan = self.shard_plan(epoch)
        quota = self._rank_quota(plan)
        mine = plan[rank]
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        # a worker's share of the rank's quota: its shards' chips, capped so the rank total is the quota
        shards = mine[wid::nw]
        ahead = sum(sum(self.counts[s] for s in mine[w::nw]) for w in range(wid))
        cap = max(0, min(sum(self.counts[s] for s in shards), quota - ahead))
        rng = np.random.default_rng((self.seed, epoch, rank, wid))
        yield from self._samples([self.urls[s] for s in shards], cap, rng)

    def _samples(self, urls: list[str], cap: int, rng: np.random.Generator) -> Iterator[dict[str, Any]]:
        wds = _webdataset()
        raw = wds.tarfile_samples([{"url": u} for u in urls])
        buf: list[dict[str, Any]] = []
        for seen, sample in enumerate(raw):
            if seen >= cap:
                break
            buf.append(sample)
            if len(buf) >= (self.buffer if self.shuffle else 1):
                yield from self._expand(buf.pop(int(rng.integers(len(buf)))), rng)
        while buf:
            yield from self._expand(buf.pop(int(rng.integers(len(buf))) if self.shuffle else 0), rng)

    def _expand(self, sample: dict[str, Any], rng: np.random.Generator) -> Iterator[dict[str, Any]]:
        arrays = {k[: -len(".npy")]: np.load(io.BytesIO(v)) for k, v in sample.items() if k.endswith(".npy")}
        index = int(sample["__key__"])
        for rep in range(self.repeats):
            out: dict[str, Any] = {
                "image": torch.from_numpy(arrays["image"]).float(),  # torch's half-to-float: faster
                "valid": torch.from_numpy(arrays["valid"].astype(bool)),
                "index": index,
                "repeat": rep,
            }
            for k, spec in self.labels.items():
                out[k] = label_tensor(arrays[k], spec)
            if self.crop is not None and self.crop < self.chip_size:
                y, x = (int(v) for v in rng.integers(0, self.chip_size - self.crop + 1, size=2))
                c = self.crop
                out = apply_spatial(out, lambda v: v[..., y : y + c, x : x + c])  # noqa: B023 (used at once)
            if self.augment:
                code = int(rng.integers(NUM_TRANSFORMS))
                out = apply_spatial(out, lambda v: dihedral(v, code))  # noqa: B023 (used at once)
                out["augment"] = code
            yield out


class StreamingChipDataModule(L.LightningDataModule):
    """Training batches streamed from a WebDataset export (no validation split: pass a chip
    store to validate on). ``sensor`` and ``chip_size`` describe the chips the student sees
    (``crop`` if given); workers are persistent, so each advances its epoch counter."""

    def __init__(
        self,
        location: str | Path,
        batch_size: int = 8,
        num_workers: int = 0,
        seed: int = 0,
        *,
        repeats: int = 1,
        crop: int | None = None,
        augment: bool = False,
        buffer: int = 64,
    ) -> None:
        super().__init__()
        self.dataset = StreamingChipDataset(
            location, seed=seed, repeats=repeats, crop=crop, augment=augment, buffer=buffer
        )
        self.batch_size, self.num_workers = batch_size, num_workers

    @property
    def sensor(self) -> Sensor:
        """The chips' band table, with the store's per-band statistics."""
        return self.dataset.sensor

    @property
    def chip_size(self) -> int:
        """Chip width and height the student receives."""
        return self.dataset.crop or self.dataset.chip_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )


__all__ = [
    "StreamingChipDataModule",
    "StreamingChipDataset",
    "export_webdataset",
    "read_stream_index",
]
