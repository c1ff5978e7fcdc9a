"""The prepared chip store: sharded, memory-mappable, resumable, with an index that scales.

Layout of a store folder (format version 2)::

    STORE/
      manifest.json              # header: format, sensor (full band table), labels, stats, attrs
      index.npy                  # (N, 2) int32 (shard, row) of every chip, written at close
      shard-00000.image.npy      # (n, C, S, S) float16 surface reflectance
      shard-00000.valid.npy      # (n, S, S) uint8, 1 where every band is valid
      shard-00000.<label>.npy    # (n, S, S) per-pixel labels (int16 classes / float32 values)
      shard-00000.index.json     # that shard's chip metadata (source, window, crs ...), written once

Why this shape: training reads random chips many times per run; a memory-mapped
``.npy`` costs one page-cache hit per chip, where re-reading GeoTIFF windows costs a
decode per band per read. float16 reflectance keeps L2A precision (DN x 1e-4 has 4
digits) at half the bytes of float32.

Why the index is split: format 1 kept one ``manifest.json`` holding a dict per chip,
rewritten and fsynced after every shard, so writing cost grew with the square of the
store and every DataLoader worker was sent the whole chip list. Now each shard's chip
metadata goes into its own ``shard-NNNNN.index.json``, written once when the shard is
flushed; the header is written when the store is started and when it is sealed; readers
map ``index.npy`` (8 bytes per chip) and read a shard's metadata only when someone asks
for :attr:`ChipStore.chips`. A pickled :class:`ChipStore` (what a worker receives) holds
the band table and the folder, never the chips. Format 1 stores are still read.

Writing is crash-safe: shard arrays are written atomically, then the shard's index file
(the commit point: arrays without an index file are ignored and overwritten on resume).
A source (product) is done once all its chips are added; the next shard index (or the
sealed manifest) records it. On ``resume`` the chips of sources not recorded as done are
forgotten (their rows stay as dead space in a shard) and the source is processed again,
so a crash costs at most one shard of work. Per-band mean/std are computed at
:meth:`ChipStoreWriter.close` in one streaming pass over the valid pixels of every chip.

Bad stores are refused in one line naming the file: a manifest missing a key, a shard
with another band count or chip size than the manifest, a shard shorter than its index.
A chip holding NaN/inf is masked when it is written (one warning naming the source and
window) and, if a store holds one anyway, masked on read with one warning naming the shard
and chip (:meth:`ChipStore.nonfinite_chips` lists them all for ``hyperkd data info``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hyperkd.core.errors import DataError, HyperKDError
from hyperkd.core.io import atomic_path, atomic_write_json, atomic_write_text
from hyperkd.core.sensors import Sensor
from hyperkd.data.store_index import (
    FLOAT16_MAX,
    FORMAT,
    INDEX,
    MANIFEST,
    SHARD_INDEX,
    VERSION,
    LabelSpec,
    damaged_store,
    has_nonfinite,
    jsonable,
    read_manifest,
    read_shard_index,
    save_rows,
    scan_shards,
    shard_stem,
    streaming_stats,
)

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    images: list[np.ndarray] = field(default_factory=list)
    valids: list[np.ndarray] = field(default_factory=list)
    labels: dict[str, list[np.ndarray]] = field(default_factory=dict)
    metas: list[dict[str, Any]] = field(default_factory=list)

    def keep(self, rows: Sequence[int]) -> _Pending:
        """A copy holding only ``rows``."""
        return _Pending(
            [self.images[i] for i in rows],
            [self.valids[i] for i in rows],
            {k: [v[i] for i in rows] for k, v in self.labels.items()},
            [self.metas[i] for i in rows],
        )


class ChipStoreWriter:
    """Append chips to a store; :meth:`close` computes statistics and seals it.

    Parameters
    ----------
    root: the store folder (created).
    sensor: the sensor *with the band selection the chips have* (its band table is saved).
    chip_size: chip height and width in pixels.
    labels: per-pixel label layers every chip carries, by name.
    shard_size: chips per shard file.
    synthetic: mark the store as synthetic data (shown in every manifest and listing).
    attrs: free-form provenance saved in the manifest (e.g. the command line).
    resume: continue an unfinished store at ``root`` instead of refusing to touch it.
    """

    def __init__(
        self,
        root: str | Path,
        sensor: Sensor,
        chip_size: int,
        *,
        labels: Mapping[str, LabelSpec] | None = None,
        shard_size: int = 256,
        synthetic: bool = False,
        attrs: Mapping[str, Any] | None = None,
        resume: bool = False,
    ) -> None:
        self.root = Path(root)
        self.sensor = sensor
        self.chip_size = int(chip_size)
        self.labels = dict(labels or {})
        self.shard_size = int(shard_size)
        self._pending = _Pending(labels={k: [] for k in self.labels})
        self._live: list[tuple[int, int, str | None]] = []  # (shard, row, source) of every kept chip
        self._shards: list[dict[str, Any]] = []
        self._sources_done: list[str] = []
        self._done_set: set[str] = set()  # the same, for O(1) lookups (stores of 100k+ sources)
        self._unrecorded_done: list[str] = []  # done since the last index file was written
        self._dead: list[list[int]] = []  # (shard, row) forgotten since the last index file
        self._source_info: dict[str, Any] = {}
        self._nonfinite_chips = 0
        manifest_path = self.root / MANIFEST
        if manifest_path.exists():
            old = read_manifest(manifest_path)
            if old.get("complete"):
                raise DataError(
                    f"{self.root} already holds a complete chip store; choose another --out "
                    "or delete it first"
                )
            if not resume:
                raise DataError(
                    f"{self.root} holds an unfinished chip store; pass --resume to continue it "
                    "or delete the folder to start over"
                )
            if int(old["version"]) < VERSION:
                raise DataError(
                    f"cannot resume {self.root}: it was started by an older hyperkd (store format "
                    f"{old['version']}); finish it with that version or delete it and start over"
                )
            if old["sensor"].get("bands") != sensor.to_dict()["bands"] or old["chip_size"] != self.chip_size:
                raise DataError(
                    f"cannot resume {self.root}: it was started with another sensor band table "
                    "or chip size; delete it or pick another --out"
                )
            state = scan_shards(self.root, cleanup=True)
            self._shards = state.shards
            done = set(state.sources_done)  # chips of sources not done are forgotten (and redone)
            for c in state.chips:
                loc = (int(c["shard"]), int(c["row"]))
                if c.get("source") is None or c.get("source") in done:
                    self._live.append((*loc, c.get("source")))
                else:  # recorded as dead with the next index file, so a second resume agrees
                    self._dead.append(list(loc))
            self._sources_done = state.sources_done
            self._done_set = set(state.sources_done)
            self._source_info = state.source_info
            self._attrs = dict(old.get("attrs") or {})
            self._attrs.update(attrs or {})
            if state.source_info and isinstance(self._attrs.get("products", {}), dict):
                self._attrs.setdefault("products", {}).update(state.source_info)
            self.synthetic = bool(old.get("synthetic", synthetic))
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            self._attrs = dict(attrs or {})
            self.synthetic = synthetic
            self._write_manifest(complete=False, stats=None)

    # -- writing -----------------------------------------------------------------------------
    @property
    def sources_done(self) -> set[str]:
        """Sources (products) whose chips were all added (the writer's own set: read, do not
        modify); a crash before the next shard is flushed makes resume redo the ones not yet
        recorded."""
        return self._done_set

    def __len__(self) -> int:
        return len(self._live) + len(self._pending.images)

    def add(
        self,
        image: np.ndarray,
        valid: np.ndarray | None = None,
        labels: Mapping[str, np.ndarray] | None = None,
        **meta: Any,
    ) -> None:
        """Add one chip: ``image`` (C, S, S) reflectance, ``valid`` (S, S) bool, labels, metadata.

        Metadata (``source``, ``window``, ``crs``, ``transform`` ...) is stored per chip.
        Pixels where a band is NaN/inf are stored as 0 and marked invalid (warned once per
        store); a finite value too large for float16 (> 65504) is refused, as it means the
        input is not reflectance.
        """
        c, s = self.sensor.num_bands, self.chip_size
        if image.shape != (c, s, s):
            raise DataError(f"chip has shape {image.shape}, store expects {(c, s, s)}")
        labels = dict(labels or {})
        if set(labels) != set(self.labels):
            raise DataError(f"chip labels {sorted(labels)} differ from the store's {sorted(self.labels)}")
        with np.errstate(over="ignore"):  # values beyond float16 are refused below
            img = image.astype(np.float16)
        finite = np.isfinite(image)
        if not finite.all():
            bad = ~finite.all(axis=0)
            if valid is None:  # no mask given: NaN/inf is the no-data marker
                valid = ~bad
            else:
                hidden = bad & np.asarray(valid, bool)
                if hidden.any():
                    self._nonfinite_chips += 1
                    if self._nonfinite_chips == 1:
                        log.warning(
                            "%s: chip %d (source %s, window %s) holds NaN/inf in %d pixel(s) marked valid; "
                            "they are stored as no data (said once; attrs.nonfinite_chips in the manifest "
                            "counts such chips)",
                            self.root,
                            len(self),
                            meta.get("source"),
                            meta.get("window"),
                            int(hidden.sum()),
                        )
                valid = np.asarray(valid, bool) & ~bad
            img = np.where(finite, img, np.float16(0))
        if not np.isfinite(img).all():
            big = float(np.abs(image[np.isfinite(image)]).max())
            raise DataError(
                f"{meta.get('source') or self.root}: chip at window {meta.get('window')} holds the value "
                f"{big:.6g}, too large for the store's float16 (max {FLOAT16_MAX:g}): the input is not "
                "surface reflectance (check the reader's scale factor)"
            )
        if valid is None:
            valid = np.ones((s, s), dtype=bool)
        self._pending.images.append(img)
        self._pending.valids.append(np.asarray(valid).astype(np.uint8))
        for k, v in labels.items():
            if v.shape != (s, s):
                raise DataError(f"label {k!r} has shape {v.shape}, expected {(s, s)}")
            self._pending.labels[k].append(v.astype(self.labels[k].dtype))
        self._pending.metas.append(jsonable(meta))
        if len(self._pending.images) >= self.shard_size:
            self.flush()

    def mark_source_done(self, source: str) -> None:
        """Record that every chip of ``source`` was added (resume skips it once recorded).

        The record goes into the next shard index written (or the sealed manifest), so a
        source costs no write of its own; provenance in ``attrs["products"][source]`` at
        this moment is recorded with it and restored on resume.
        """
        if source in self._done_set:
            return
        self._sources_done.append(source)
        self._done_set.add(source)
        self._unrecorded_done.append(source)
        products = self._attrs.get("products")
        if isinstance(products, dict) and source in products:
            self._source_info[source] = jsonable(products[source])

    @property
    def attrs(self) -> dict[str, Any]:
        """Free-form provenance saved in the manifest when the store is sealed."""
        return self._attrs

    def discard_unfinished(self) -> None:
        """Forget every chip of a source not marked done, whether pending or already in a shard.

        For a source that turns out to be bad half-way through: afterwards the store holds
        exactly the finished sources. Trailing shards that held only forgotten chips are
        deleted (index file first); earlier ones keep them as dead space, as on resume. What
        was forgotten is recorded at once (an index file without rows if need be), so a
        resume after this sees the same store.
        """
        done = self._done_set

        def keep(source: str | None) -> bool:
            return source is None or source in done

        self._pending = self._pending.keep(
            [i for i, m in enumerate(self._pending.metas) if keep(m.get("source"))]
        )
        dead = [[sh, r] for sh, r, src in self._live if not keep(src)]
        self._live = [t for t in self._live if keep(t[2])]
        used = {sh for sh, _, _ in self._live}
        dropped: list[tuple[int, dict[str, Any]]] = []
        while self._shards and len(self._shards) - 1 not in used:
            idx = len(self._shards) - 1
            dropped.append((idx, self._shards.pop()))
        for _, shard in dropped:
            record = read_shard_index(self.root, shard["stem"])
            for src in record.get("done", []):  # re-record the done marks that file held
                if src not in self._unrecorded_done:
                    self._unrecorded_done.append(src)
            (self.root / f"{shard['stem']}.{SHARD_INDEX}").unlink(missing_ok=True)
            for path in self.root.glob(f"{shard['stem']}.*.npy"):
                path.unlink(missing_ok=True)
        gone = {idx for idx, _ in dropped}
        self._dead = [d for d in self._dead + dead if d[0] not in gone]
        if self._dead or self._unrecorded_done:
            self._write_shard_index(len(self._shards), [], count=0)

    def flush(self) -> None:
        """Write pending chips as a new shard (atomically), then its index file."""
        p = self._pending
        if not p.images:
            return
        idx = len(self._shards)
        stem = shard_stem(idx)
        for name, rows in {"image": p.images, "valid": p.valids, **p.labels}.items():
            with atomic_path(self.root / f"{stem}.{name}.npy") as tmp:
                save_rows(tmp, rows)
        self._write_shard_index(idx, p.metas, count=len(p.images))
        for row, meta in enumerate(p.metas):
            self._live.append((idx, row, meta.get("source")))
        self._pending = _Pending(labels={k: [] for k in self.labels})

    def _write_shard_index(self, idx: int, metas: list[dict[str, Any]], *, count: int) -> None:
        stem = shard_stem(idx)
        record = {
            "stem": stem,
            "count": count,
            "chips": metas,
            "done": self._unrecorded_done,
            "info": {s: self._source_info[s] for s in self._unrecorded_done if s in self._source_info},
            "dead": self._dead,
        }
        atomic_write_text(self.root / f"{stem}.{SHARD_INDEX}", json.dumps(record, separators=(",", ":")))
        self._shards.append({"stem": stem, "count": count})
        self._unrecorded_done, self._dead = [], []

    def close(self) -> ChipStore:
        """Flush, compute per-band statistics in one streaming pass, seal the store."""
        self.flush()
        if not self._live:
            raise DataError(
                f"no chips were written to {self.root}: every chip was dropped (nodata/cloud "
                "fraction too high?) or no input was given"
            )
        locs = np.asarray([(sh, r) for sh, r, _ in self._live], dtype=np.int32).reshape(-1, 2)
        stats = streaming_stats(self.root, self._shards, locs, self.sensor.num_bands)
        with atomic_path(self.root / INDEX) as tmp:
            np.save(tmp, locs)
        if self._nonfinite_chips:
            self._attrs["nonfinite_chips"] = self._nonfinite_chips
        products = self._attrs.get("products")
        if isinstance(products, dict):
            for src, info in self._source_info.items():
                products.setdefault(src, info)
        self._write_manifest(complete=True, stats=stats)
        return ChipStore(self.root)

    def _write_manifest(self, *, complete: bool, stats: dict[str, Any] | None) -> None:
        header: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "complete": complete,
            "synthetic": self.synthetic,
            "chip_size": self.chip_size,
            "dtype": "float16",
            "unit": "surface reflectance",
            "sensor": self.sensor.to_dict(),
            "labels": {k: v.to_dict() for k, v in self.labels.items()},
            "stats": stats,
            "attrs": self._attrs,
        }
        if complete:
            header.update(num_chips=len(self._live), sources_done=self._sources_done, shards=self._shards)
        atomic_write_json(self.root / MANIFEST, header)


def read_index(root: str | Path) -> dict[str, Any]:
    """A store's manifest with its ``shards``, live ``chips`` and ``sources_done``, whether it is
    sealed or not (for tools and tests that inspect an unfinished store)."""
    root = Path(root)
    m = read_manifest(root / MANIFEST)
    if m.get("complete"):
        store = ChipStore(root)
        return {**m, "chips": store.chips}
    if int(m["version"]) < 2:
        return m
    state = scan_shards(root)
    return {**m, "shards": state.shards, "chips": state.chips, "sources_done": state.sources_done}


class ChipStore(Sequence[dict[str, Any]]):
    """Read-only access to a sealed chip store; items are dicts of numpy arrays.

    ``store[i]`` gives ``{"image": (C,S,S) float32, "valid": (S,S) bool, <label>: (S,S), "index": i}``.
    Opening reads the manifest's header and maps ``index.npy``; chip metadata
    (:attr:`chips`) is read only when asked for. Pickling (a DataLoader worker) keeps the
    band table and the folder only; the worker maps what it reads itself.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        path = self.root / MANIFEST
        if not path.exists():
            from hyperkd.data.streaming import STREAM_INDEX, read_stream_index

            if (self.root / STREAM_INDEX).exists():  # `hyperkd data export`'s output: not wired to runs
                source = read_stream_index(self.root)[0].get("source_store")
                raise DataError(
                    f"{self.root} is a WebDataset export (`hyperkd data export`), not a chip store: "
                    f"give hyperkd commands the store it was exported from ({source}); the export is "
                    "read from Python by hyperkd.data.streaming.StreamingChipDataModule"
                )
            raise DataError(
                f"{self.root} is not a chip store (no {MANIFEST}); create one with "
                "`hyperkd data prepare` or `hyperkd data synth`"
            )
        m = read_manifest(path)
        if not m.get("complete"):
            raise DataError(
                f"{self.root} is an unfinished chip store; finish it with `hyperkd data prepare ... --resume`"
            )
        self._manifest: dict[str, Any] | None = m
        self.version = int(m["version"])
        try:
            self.sensor = Sensor.from_dict(m["sensor"])
            stats = m.get("stats") or {}
            if stats.get("mean") is not None:
                self.sensor = self.sensor.with_stats(stats["mean"], stats["std"])
            self.labels = {k: LabelSpec.from_dict(v) for k, v in (m.get("labels") or {}).items()}
            self.chip_size = int(m["chip_size"])
        except (KeyError, TypeError, ValueError, AttributeError, HyperKDError) as exc:
            what = f"key {exc}" if isinstance(exc, KeyError) else str(exc)
            raise damaged_store(path, f"cannot read its sensor, labels or chip size ({what})") from None
        self.synthetic = bool(m.get("synthetic"))
        self._len = len(m["chips"]) if self.version == 1 else int(m["num_chips"])
        self._locs: np.ndarray | None = None
        self._chips: list[dict[str, Any]] | None = None
        self._arrays: dict[tuple[int, str], np.ndarray] = {}
        self._warned = False
        self.locations()  # check the index now, not in the middle of an epoch

    @property
    def manifest(self) -> dict[str, Any]:
        """The manifest (format 2: the header, with ``shards``; format 1: also every chip)."""
        if self._manifest is None:
            self._manifest = read_manifest(self.root / MANIFEST)
        return self._manifest

    def locations(self) -> np.ndarray:
        """``(N, 2)`` int array: the (shard, row) of every chip (memory-mapped for format 2)."""
        if self._locs is None:
            if self.version == 1:
                try:
                    locs = np.asarray([(c["shard"], c["row"]) for c in self.manifest["chips"]], np.int64)
                except (KeyError, TypeError) as exc:
                    raise damaged_store(self.root / MANIFEST, f"a chip entry lacks {exc}") from None
                self._locs = locs.reshape(-1, 2)
            else:
                path = self.root / INDEX
                try:
                    locs = np.load(path, mmap_mode="r")
                except (OSError, ValueError) as exc:
                    raise damaged_store(path, f"cannot read the chip index ({exc})") from None
                if locs.shape != (self._len, 2):
                    raise damaged_store(
                        path, f"the index has shape {locs.shape}, the manifest says {self._len} chips"
                    )
                self._locs = locs
        return self._locs

    @property
    def chips(self) -> list[dict[str, Any]]:
        """Every chip's metadata (``shard``, ``row``, ``source``, ``window`` ...), read on first use."""
        if self._chips is None:
            if self.version == 1:
                self._chips = list(self.manifest["chips"])
            else:
                records: dict[int, list[dict[str, Any]]] = {}
                out = []
                for s, r in self.locations().tolist():
                    if s not in records:
                        records[s] = read_shard_index(self.root, self._stem(s))["chips"]
                    if r >= len(records[s]):
                        raise damaged_store(
                            self.root / f"{self._stem(s)}.{SHARD_INDEX}",
                            f"lists {len(records[s])} chips but {INDEX} names row {r}",
                        )
                    out.append({"shard": s, "row": r, **records[s][r]})
                self._chips = out
        return self._chips

    def _stem(self, shard: int) -> str:
        if self.version >= 2:
            return shard_stem(shard)
        shards = self.manifest["shards"]
        if not 0 <= shard < len(shards) or "stem" not in shards[shard]:
            raise damaged_store(
                self.root / MANIFEST, f"a chip names shard {shard}, which 'shards' does not describe"
            )
        return str(shards[shard]["stem"])

    def shard_array(self, shard: int, name: str) -> np.ndarray:
        """Shard ``shard``'s layer ``name`` (``image``, ``valid`` or a label), memory-mapped and
        checked against the manifest's band count and chip size."""
        key = (shard, name)
        if key not in self._arrays:
            path = self.root / f"{self._stem(shard)}.{name}.npy"
            try:
                arr = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise DataError(f"{path}: cannot read chip-store shard ({exc})") from None
            count = self._shard_count(shard)
            if arr.shape[0] < count:
                raise DataError(
                    f"{path}: the shard holds {arr.shape[0]} chips but the store's index lists {count}: "
                    "the shard is truncated; re-create the store"
                )
            s, c = self.chip_size, self.sensor.num_bands
            want = (c, s, s) if name == "image" else (s, s)
            if arr.shape[1:] != want:
                if name == "image" and arr.ndim == 4 and arr.shape[2:] == (s, s):
                    what = f"holds chips of {arr.shape[1]} bands, the store's {MANIFEST} says {c}"
                else:
                    what = f"holds arrays of shape {arr.shape[1:]}, the store's {MANIFEST} says {want}"
                raise DataError(
                    f"{path}: this shard {what} ({self.sensor.name}); it does not belong to this store "
                    "(copied from another?): re-create the store"
                )
            self._arrays[key] = arr
        return self._arrays[key]

    def _shard_count(self, shard: int) -> int:
        shards = self.manifest["shards"]
        try:
            return int(shards[shard]["count"])
        except (IndexError, KeyError, TypeError, ValueError):
            raise damaged_store(
                self.root / MANIFEST, f"'shards' does not give the chip count of shard {shard}"
            ) from None

    def _row(self, shard: int, name: str, row: int, i: int) -> np.ndarray:
        arr = self.shard_array(shard, name)
        if row >= arr.shape[0]:
            raise DataError(
                f"{self.root / f'{self._stem(shard)}.{name}.npy'}: the shard holds {arr.shape[0]} chips but "
                f"chip {i} is indexed at row {row}: the shard is truncated; re-create the store"
            )
        return arr[row]

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i: int) -> dict[str, Any]:  # type: ignore[override]
        return self.read(i)

    def read(self, i: int, dtype: Any = np.float32) -> dict[str, Any]:
        """``store[i]`` with the image as ``dtype``; ``np.float16`` hands over the stored values
        for a caller that converts faster (torch's half-to-float is several times numpy's)."""
        n = self._len
        if not -n <= i < n:
            raise IndexError(i)
        i %= n
        s, r = (int(v) for v in self.locations()[i])
        raw = self._row(s, "image", r, i)
        valid = np.asarray(self._row(s, "valid", r, i)).astype(bool)
        if has_nonfinite(raw):
            img, valid = self._mask_nonfinite(np.asarray(raw, dtype=np.float32), valid, s, r, i)
            img = img.astype(dtype, copy=False)
        else:
            img = np.array(raw, dtype=dtype)
        item: dict[str, Any] = {"image": img, "valid": valid, "index": i}
        for k in self.labels:
            item[k] = np.asarray(self._row(s, k, r, i))
        return item

    def read_batch(self, indices: Sequence[int], dtype: Any = np.float32) -> dict[str, np.ndarray]:
        """Chips ``indices`` stacked, grouped by shard: ``image`` (B,C,S,S) as ``dtype``, ``valid``
        (B,S,S) bool, labels and ``index`` (B,) giving each row's chip (rows come shard by shard,
        not in the order asked). One fancy-index per shard touched and one copy per layer;
        ``dtype=np.float16`` hands over the stored bytes as they are (convert on the device):
        the fast path under :func:`hyperkd.data.loader.batch_loader`. Checked like ``store[i]``."""
        n = self._len
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and not (-n <= idx.min() and idx.max() < n):
            raise IndexError(f"chip index out of range for a store of {n} chips")
        idx %= max(n, 1)
        locs = np.asarray(self.locations()[idx], dtype=np.int64).reshape(-1, 2)
        order = np.argsort(locs[:, 0], kind="stable")
        idx, locs = idx[order], locs[order]
        b, s, c = len(idx), self.chip_size, self.sensor.num_bands
        out: dict[str, np.ndarray] = {
            "image": np.empty((b, c, s, s), dtype),
            "valid": np.empty((b, s, s), bool),
        }
        for k, spec in self.labels.items():
            out[k] = np.empty((b, s, s), spec.dtype)
        starts = np.flatnonzero(np.diff(locs[:, 0], prepend=-1))
        for a, z in zip(starts, [*starts[1:], b], strict=True):
            shard, rows = int(locs[a, 0]), locs[a:z, 1]
            for name, dst in out.items():
                arr = self.shard_array(shard, name)
                if rows.max() >= arr.shape[0]:
                    self._row(shard, name, int(rows.max()), int(idx[a + int(rows.argmax())]))  # raises
                if arr.dtype == dst.dtype:
                    np.take(arr, rows, axis=0, out=dst[a:z])
                else:
                    dst[a:z] = arr[rows]
        if has_nonfinite(out["image"]):
            for j in range(b):
                if has_nonfinite(out["image"][j]):
                    img, val = self._mask_nonfinite(
                        out["image"][j].astype(np.float32),
                        out["valid"][j],
                        int(locs[j, 0]),
                        int(locs[j, 1]),
                        int(idx[j]),
                    )
                    out["image"][j], out["valid"][j] = img, val
        out["index"] = idx
        return out

    def _mask_nonfinite(
        self, img: np.ndarray, valid: np.ndarray, shard: int, row: int, i: int
    ) -> tuple[np.ndarray, np.ndarray]:
        bad = ~np.isfinite(img).all(axis=0)
        if not self._warned:
            self._warned = True
            log.warning(
                "%s: chip %d (row %d) holds NaN/inf in %d pixel(s); they are read as no data (said once; "
                "`hyperkd data info` lists every such chip)",
                self.root / f"{self._stem(shard)}.image.npy",
                i,
                row,
                int(bad.sum()),
            )
        return np.nan_to_num(img, nan=0.0, posinf=0.0, neginf=0.0), valid & ~bad

    def nonfinite_chips(self) -> list[dict[str, Any]]:
        """Chips holding NaN/inf: ``{"chip", "shard", "row", "pixels"}`` each (reads every image once)."""
        out = []
        for i, (s, r) in enumerate(self.locations().tolist()):
            img = self._row(s, "image", r, i)
            if has_nonfinite(img):
                bad = int((~np.isfinite(img).all(axis=0)).sum())
                out.append({"chip": i, "shard": f"{self._stem(s)}.image.npy", "row": r, "pixels": bad})
        return out

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            yield self[i]

    def __getstate__(self) -> dict[str, Any]:
        """Only what opening the store again needs: memory maps, index and chip list are reopened lazily."""
        d = self.__dict__.copy()
        d.update(_arrays={}, _locs=None, _chips=None, _manifest=None)
        return d

    @property
    def stats(self) -> dict[str, Any]:
        """``{"count", "mean", "std"}`` per band, over valid pixels."""
        return dict(self.manifest["stats"])

    def summary(self) -> str:
        """One line describing the store."""
        kind = "SYNTHETIC " if self.synthetic else ""
        return (
            f"{kind}chip store {self.root}: {len(self)} chips of {self.chip_size}x{self.chip_size} px, "
            f"sensor {self.sensor.name} ({self.sensor.num_bands} bands, {self.sensor.selection}), "
            f"labels: {', '.join(self.labels) or 'none'}"
        )


def nbytes_per_chip(bands: int, size: int) -> int:
    """Bytes one chip occupies in a store (image + valid mask, labels excluded)."""
    return bands * size * size * 2 + size * size


__all__ = [
    "FORMAT",
    "INDEX",
    "MANIFEST",
    "VERSION",
    "ChipStore",
    "ChipStoreWriter",
    "LabelSpec",
    "nbytes_per_chip",
    "read_index",
    "shard_stem",
]
