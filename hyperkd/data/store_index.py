"""The chip store's on-disk pieces: label specs, manifest header, per-shard index files, checks.

Kept apart from :mod:`hyperkd.data.store` (the writer and reader) so each stays short; the
layout and the reasons for it are described there.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hyperkd.core.errors import DataError

FORMAT = "hyperkd-chipstore"
VERSION = 2
MANIFEST = "manifest.json"
INDEX = "index.npy"
SHARD_INDEX = "index.json"
"""Suffix of a shard's metadata file: ``shard-00000.index.json``."""
FLOAT16_MAX = float(np.finfo(np.float16).max)
_HEADER_KEYS = ("format", "version", "complete", "chip_size", "sensor")
_SEALED_KEYS = {1: ("shards", "chips", "stats"), 2: ("shards", "num_chips", "stats")}
_SHARD_RE = re.compile(r"^shard-(\d{5,})\.index\.json$")


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


def shard_stem(idx: int) -> str:
    """The file stem of shard ``idx``."""
    return f"shard-{idx:05d}"


@dataclass
class IndexState:
    """What the shard index files of an unfinished store say (see :func:`read_index`)."""

    shards: list[dict[str, Any]]  # {"stem", "count"} per shard, in order
    chips: list[dict[str, Any]]  # flushed, not discarded chips' metadata with "shard" and "row"
    sources_done: list[str]
    source_info: dict[str, Any]


def streaming_stats(
    root: Path, shards: Sequence[Mapping[str, Any]], locs: np.ndarray, bands: int
) -> dict[str, Any]:
    """Per-band mean/std over valid pixels, merging per-chip moments (Chan et al.)."""
    n_tot = 0
    mean = np.zeros(bands, dtype=np.float64)
    m2 = np.zeros(bands, dtype=np.float64)
    by_shard = locs[np.argsort(locs[:, 0], kind="stable")]  # chip order kept within a shard
    starts = np.flatnonzero(np.diff(by_shard[:, 0], prepend=-1))
    for sidx, rows in zip(by_shard[starts, 0], np.split(by_shard[:, 1], starts[1:]), strict=True):
        stem = shards[int(sidx)]["stem"]
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


def damaged_store(path: Path, what: str) -> DataError:
    return DataError(
        f"{path}: {what}; the chip store is damaged or was not written by hyperkd: re-create it with "
        "`hyperkd data prepare` (or `data synth`)"
    )


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest's header, checked: format, version and the keys readers need."""
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read chip-store manifest ({exc})") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        fmt = d.get("format") if isinstance(d, dict) else type(d).__name__
        raise DataError(f"{path}: not a hyperkd chip store (format {fmt!r})")
    missing = [k for k in _HEADER_KEYS if k not in d]
    if missing:
        raise damaged_store(path, f"the manifest lacks the key(s) {', '.join(map(repr, missing))}")
    try:
        version = int(d["version"])
    except (TypeError, ValueError):
        raise damaged_store(path, f"key 'version' is {d['version']!r}, not a number") from None
    if version > VERSION:
        raise DataError(
            f"{path}: chip store version {version} is newer than this hyperkd reads ({VERSION}); upgrade hyperkd"
        )
    if d.get("complete"):
        missing = [k for k in _SEALED_KEYS.get(version, ()) if k not in d]
        if missing:
            raise damaged_store(path, f"the sealed manifest lacks the key(s) {', '.join(map(repr, missing))}")
    return d


def read_shard_index(root: Path, stem: str) -> dict[str, Any]:
    path = root / f"{stem}.{SHARD_INDEX}"
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise damaged_store(path, f"cannot read this shard's index ({exc})") from None
    if not isinstance(d, dict) or not isinstance(d.get("chips"), list) or "count" not in d:
        raise damaged_store(path, "this shard index lacks 'count' or 'chips'")
    return d


def scan_shards(root: Path, *, cleanup: bool = False) -> IndexState:
    """Read every shard index of an unfinished store: chips on disk (not discarded; those of
    sources not done are forgotten by a resumed writer), done sources, provenance.

    ``cleanup``: delete shard arrays that have no index file (a crash between the two
    writes) and temporary files, so a resumed writer starts clean.
    """
    found = sorted((int(m.group(1)), p) for p in root.iterdir() if (m := _SHARD_RE.match(p.name)))
    for k, (idx, path) in enumerate(found):
        if idx != k:
            raise damaged_store(path, f"shard index {shard_stem(k)}.{SHARD_INDEX} before it is missing")
    records = [read_shard_index(root, shard_stem(i)) for i in range(len(found))]
    done: list[str] = []
    finished: set[str] = set()
    info: dict[str, Any] = {}
    dead: set[tuple[int, int]] = set()
    for r in records:
        for src in r.get("done", []):
            if src not in finished:
                finished.add(src)
                done.append(src)
        info.update(r.get("info") or {})
        dead.update((int(a), int(b)) for a, b in r.get("dead", []))
    chips = [
        {"shard": i, "row": row, **meta}
        for i, r in enumerate(records)
        for row, meta in enumerate(r["chips"])
        if (i, row) not in dead
    ]
    if cleanup:
        for p in root.glob("shard-*.npy"):
            if int(p.name.split(".")[0].split("-")[1]) >= len(records):
                p.unlink(missing_ok=True)
        for p in root.glob(".*.tmp*"):
            p.unlink(missing_ok=True)
    shards = [{"stem": shard_stem(i), "count": int(r["count"])} for i, r in enumerate(records)]
    return IndexState(shards, chips, done, info)


def save_rows(path: Path, rows: Sequence[np.ndarray]) -> None:
    """``np.save(path, np.stack(rows))`` without the stacked copy: a shard's worth of chips is
    the writer's whole memory budget, so it is not held twice."""
    shape = (len(rows), *rows[0].shape)
    header = {"descr": np.lib.format.dtype_to_descr(rows[0].dtype), "fortran_order": False, "shape": shape}
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
        for r in rows:
            fh.write(np.ascontiguousarray(r).data)


def jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


def has_nonfinite(a: np.ndarray) -> bool:
    """Whether ``a`` holds NaN or inf; for float16 (the stored type) by its bits: exponent all
    ones, i.e. ``(bits & 0x7FFF) >= 0x7C00``, several times faster than numpy's float16 maths."""
    if a.dtype == np.float16:
        return bool(np.bitwise_and(a.view(np.uint16), 0x7FFF).max(initial=0) >= 0x7C00)
    return not np.isfinite(np.sum(a, dtype=np.float64 if a.dtype == np.float64 else np.float32))
