"""The prepared chip store: sharded, memory-mappable, resumable.

Layout of a store folder::

    STORE/
      manifest.json            # format, sensor (full band table), chips, stats, labels
      shard-00000.image.npy    # (n, C, S, S) float16 surface reflectance
      shard-00000.valid.npy    # (n, S, S) uint8, 1 where every band is valid
      shard-00000.<label>.npy  # (n, S, S) per-pixel labels (int16 classes / float32 values)

Why this shape: training reads random chips many times per run; a memory-mapped
``.npy`` costs one page-cache hit per chip, where re-reading GeoTIFF windows costs a
decode per band per read. float16 reflectance keeps L2A precision (DN x 1e-4 has 4
digits) at half the bytes of float32.

Writing is crash-safe: shard files are written atomically, and the manifest (rewritten
atomically after every shard) lists only chips whose shard is on disk. A source (product)
is marked done only after all its chips are flushed; on ``resume`` the chips of sources
that were not done are forgotten (their rows stay as dead space in a shard) and the
source is processed again. Per-band mean/std are computed at :meth:`ChipStoreWriter.close`
in one streaming pass over the valid pixels of every indexed chip.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hyperkd.core.errors import DataError
from hyperkd.core.io import atomic_path, atomic_write_json
from hyperkd.core.sensors import Sensor

FORMAT = "hyperkd-chipstore"
VERSION = 1
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class LabelSpec:
    """A per-pixel label layer stored with the chips.

    ``kind`` is ``"class"`` (integer class ids, ``classes`` gives their names) or
    ``"continuous"`` (float values in ``unit``). ``ignore_index`` marks unlabelled class
    pixels; continuous layers use NaN.
    """

    kind: str
    classes: tuple[str, ...] = ()
    unit: str = ""
    ignore_index: int = -1
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("class", "continuous"):
            raise DataError(f"label kind must be 'class' or 'continuous', got {self.kind!r}")

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.int16) if self.kind == "class" else np.dtype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["classes"] = list(self.classes)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LabelSpec:
        return cls(
            kind=d["kind"],
            classes=tuple(d.get("classes", ())),
            unit=d.get("unit", ""),
            ignore_index=int(d.get("ignore_index", -1)),
            description=d.get("description", ""),
        )


@dataclass
class _Pending:
    images: list[np.ndarray] = field(default_factory=list)
    valids: list[np.ndarray] = field(default_factory=list)
    labels: dict[str, list[np.ndarray]] = field(default_factory=dict)
    metas: list[dict[str, Any]] = field(default_factory=list)


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
        manifest_path = self.root / MANIFEST
        if manifest_path.exists():
            old = _read_manifest(manifest_path)
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
            if old["sensor"]["bands"] != sensor.to_dict()["bands"] or old["chip_size"] != self.chip_size:
                raise DataError(
                    f"cannot resume {self.root}: it was started with another sensor band table "
                    "or chip size; delete it or pick another --out"
                )
            done = set(old.get("sources_done", []))
            self._chips = [c for c in old["chips"] if c.get("source") in done or c.get("source") is None]
            self._shards = list(old["shards"])
            self._sources_done = list(old.get("sources_done", []))
            self._attrs = dict(old.get("attrs", {}))
            self._attrs.update(attrs or {})
            self.synthetic = bool(old.get("synthetic", synthetic))
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            self._chips: list[dict[str, Any]] = []
            self._shards: list[dict[str, Any]] = []
            self._sources_done: list[str] = []
            self._attrs = dict(attrs or {})
            self.synthetic = synthetic
            self._write_manifest(complete=False, stats=None)

    # -- writing -----------------------------------------------------------------------------
    @property
    def sources_done(self) -> set[str]:
        """Sources (products) whose chips are all safely on disk."""
        return set(self._sources_done)

    def __len__(self) -> int:
        return len(self._chips) + len(self._pending.images)

    def add(
        self,
        image: np.ndarray,
        valid: np.ndarray | None = None,
        labels: Mapping[str, np.ndarray] | None = None,
        **meta: Any,
    ) -> None:
        """Add one chip: ``image`` (C, S, S) reflectance, ``valid`` (S, S) bool, labels, metadata.

        Metadata (``source``, ``window``, ``crs``, ``transform`` ...) is stored per chip.
        """
        c, s = self.sensor.num_bands, self.chip_size
        if image.shape != (c, s, s):
            raise DataError(f"chip has shape {image.shape}, store expects {(c, s, s)}")
        if valid is None:
            valid = np.isfinite(image).all(axis=0)
        labels = dict(labels or {})
        if set(labels) != set(self.labels):
            raise DataError(f"chip labels {sorted(labels)} differ from the store's {sorted(self.labels)}")
        img = np.nan_to_num(image, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float16)
        self._pending.images.append(img)
        self._pending.valids.append(valid.astype(np.uint8))
        for k, v in labels.items():
            if v.shape != (s, s):
                raise DataError(f"label {k!r} has shape {v.shape}, expected {(s, s)}")
            self._pending.labels[k].append(v.astype(self.labels[k].dtype))
        self._pending.metas.append(_jsonable(meta))
        if len(self._pending.images) >= self.shard_size:
            self.flush()

    def mark_source_done(self, source: str) -> None:
        """Flush, then record that every chip of ``source`` is stored (resume skips it)."""
        self.flush()
        if source not in self._sources_done:
            self._sources_done.append(source)
        self._write_manifest(complete=False, stats=None)

    @property
    def attrs(self) -> dict[str, Any]:
        """Free-form provenance saved in the manifest; edits are saved with the next manifest write."""
        return self._attrs

    def discard_unfinished(self) -> None:
        """Forget every chip of a source not marked done, whether pending or already in a shard.

        For a source that turns out to be bad half-way through: afterwards the store holds
        exactly the finished sources. The manifest is rewritten first (so it never names a
        missing file), then trailing shards that held only forgotten chips are deleted;
        earlier ones stay as dead space, as on resume.
        """
        self._pending = _Pending(labels={k: [] for k in self.labels})
        done = set(self._sources_done)
        self._chips = [c for c in self._chips if c.get("source") in done or c.get("source") is None]
        used = {int(c["shard"]) for c in self._chips}
        dropped: list[str] = []
        while self._shards and len(self._shards) - 1 not in used:
            dropped.append(self._shards.pop()["stem"])
        self._write_manifest(complete=False, stats=None)
        for stem in dropped:
            for path in self.root.glob(f"{stem}.*.npy"):
                path.unlink(missing_ok=True)

    def flush(self) -> None:
        """Write pending chips as a new shard (atomically) and update the manifest."""
        p = self._pending
        if not p.images:
            return
        idx = len(self._shards)
        stem = f"shard-{idx:05d}"
        arrays = {"image": np.stack(p.images), "valid": np.stack(p.valids)}
        for k, v in p.labels.items():
            arrays[k] = np.stack(v)
        for name, arr in arrays.items():
            with atomic_path(self.root / f"{stem}.{name}.npy") as tmp:
                np.save(tmp, arr)
        self._shards.append({"stem": stem, "count": len(p.images)})
        for row, meta in enumerate(p.metas):
            self._chips.append({"shard": idx, "row": row, **meta})
        self._pending = _Pending(labels={k: [] for k in self.labels})
        self._write_manifest(complete=False, stats=None)

    def close(self) -> ChipStore:
        """Flush, compute per-band statistics in one streaming pass, seal the store."""
        self.flush()
        if not self._chips:
            raise DataError(
                f"no chips were written to {self.root}: every chip was dropped (nodata/cloud "
                "fraction too high?) or no input was given"
            )
        stats = _streaming_stats(self.root, self._shards, self._chips, self.sensor.num_bands)
        self._write_manifest(complete=True, stats=stats)
        return ChipStore(self.root)

    def _write_manifest(self, *, complete: bool, stats: dict[str, Any] | None) -> None:
        atomic_write_json(
            self.root / MANIFEST,
            {
                "format": FORMAT,
                "version": VERSION,
                "complete": complete,
                "synthetic": self.synthetic,
                "chip_size": self.chip_size,
                "num_chips": len(self._chips),
                "dtype": "float16",
                "unit": "surface reflectance",
                "sensor": self.sensor.to_dict(),
                "labels": {k: v.to_dict() for k, v in self.labels.items()},
                "stats": stats,
                "attrs": self._attrs,
                "sources_done": self._sources_done,
                "shards": self._shards,
                "chips": self._chips,
            },
        )


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


def _streaming_stats(
    root: Path, shards: Sequence[Mapping[str, Any]], chips: Sequence[Mapping[str, Any]], bands: int
) -> dict[str, Any]:
    """Per-band mean/std over valid pixels, merging per-chip moments (Chan et al.)."""
    n_tot = 0
    mean = np.zeros(bands, dtype=np.float64)
    m2 = np.zeros(bands, dtype=np.float64)
    by_shard: dict[int, list[int]] = {}
    for c in chips:
        by_shard.setdefault(int(c["shard"]), []).append(int(c["row"]))
    for sidx, rows in sorted(by_shard.items()):
        stem = shards[sidx]["stem"]
        img = np.load(root / f"{stem}.image.npy", mmap_mode="r")
        val = np.load(root / f"{stem}.valid.npy", mmap_mode="r")
        for r in rows:
            v = val[r].astype(bool)
            n = int(v.sum())
            if n == 0:
                continue
            x = np.asarray(img[r], dtype=np.float64)[:, v]  # (C, n)
            cm = x.mean(axis=1)
            cm2 = ((x - cm[:, None]) ** 2).sum(axis=1)
            delta = cm - mean
            tot = n_tot + n
            mean = mean + delta * (n / tot)
            m2 = m2 + cm2 + delta**2 * (n_tot * n / tot)
            n_tot = tot
    std = np.sqrt(m2 / max(n_tot - 1, 1))
    return {"count": n_tot, "mean": mean.tolist(), "std": std.tolist()}


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        d = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read chip-store manifest ({exc})") from None
    if d.get("format") != FORMAT:
        raise DataError(f"{path}: not a hyperkd chip store (format {d.get('format')!r})")
    if int(d.get("version", 0)) > VERSION:
        raise DataError(
            f"{path}: chip store version {d['version']} is newer than this hyperkd reads ({VERSION}); "
            "upgrade hyperkd"
        )
    return d


class ChipStore(Sequence[dict[str, Any]]):
    """Read-only access to a sealed chip store; items are dicts of numpy arrays.

    ``store[i]`` gives ``{"image": (C,S,S) float32, "valid": (S,S) bool, <label>: (S,S), "index": i}``.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        path = self.root / MANIFEST
        if not path.exists():
            raise DataError(
                f"{self.root} is not a chip store (no {MANIFEST}); create one with "
                "`hyperkd data prepare` or `hyperkd data synth`"
            )
        self.manifest = _read_manifest(path)
        if not self.manifest.get("complete"):
            raise DataError(
                f"{self.root} is an unfinished chip store; finish it with `hyperkd data prepare ... --resume`"
            )
        self.sensor = Sensor.from_dict(self.manifest["sensor"])
        stats = self.manifest.get("stats") or {}
        if stats.get("mean") is not None:
            self.sensor = self.sensor.with_stats(stats["mean"], stats["std"])
        self.labels = {k: LabelSpec.from_dict(v) for k, v in self.manifest.get("labels", {}).items()}
        self.chips: list[dict[str, Any]] = self.manifest["chips"]
        self.chip_size = int(self.manifest["chip_size"])
        self.synthetic = bool(self.manifest.get("synthetic"))
        self._arrays: dict[tuple[int, str], np.ndarray] = {}

    def _array(self, shard: int, name: str) -> np.ndarray:
        key = (shard, name)
        if key not in self._arrays:
            stem = self.manifest["shards"][shard]["stem"]
            path = self.root / f"{stem}.{name}.npy"
            try:
                self._arrays[key] = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise DataError(f"{path}: cannot read chip-store shard ({exc})") from None
        return self._arrays[key]

    def __len__(self) -> int:
        return len(self.chips)

    def __getitem__(self, i: int) -> dict[str, Any]:  # type: ignore[override]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        meta = self.chips[i]
        s, r = int(meta["shard"]), int(meta["row"])
        item: dict[str, Any] = {
            "image": np.asarray(self._array(s, "image")[r], dtype=np.float32),
            "valid": np.asarray(self._array(s, "valid")[r]).astype(bool),
            "index": i % len(self),
        }
        for k in self.labels:
            item[k] = np.asarray(self._array(s, k)[r])
        return item

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            yield self[i]

    def __getstate__(self) -> dict[str, Any]:  # memmaps are reopened in worker processes
        d = self.__dict__.copy()
        d["_arrays"] = {}
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
