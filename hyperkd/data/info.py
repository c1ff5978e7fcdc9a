"""A summary of any chip store: what it holds, where it came from, what its labels look like.

:func:`store_info` backs ``hyperkd data info STORE [--json]``. It reads the manifest and,
streaming shard by shard through memory maps, the label and validity layers, and each
image once only to find NaN/inf (one reduction per chip; the per-band statistics are kept in
the store), so it stays small on stores of thousands of chips.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hyperkd.data.store import ChipStore

_PROVENANCE_KEYS = ("synthetic", "synth", "spectral_library", "paired_stores", "command", "products")


def store_info(store: ChipStore | str | Path) -> dict[str, Any]:
    """A JSON-friendly summary of a chip store.

    Keys: ``path``, ``synthetic``, ``chips``, ``chip_size``, ``dtype``, ``unit``, ``shards``,
    ``bytes`` (on disk), ``valid_fraction``, ``sensor`` (name, selection, band count, spectral
    span, GSD), ``stats`` (per-band mean/std over valid pixels, and their ranges), ``labels``
    (per layer: kind, unit, and per-class pixel counts or min/mean/max and NaN share of a
    continuous layer, over valid pixels) and ``provenance`` (the manifest's attrs that say how
    the store was made, e.g. a synthetic store's seed and config digest) and ``nonfinite``
    (chips holding NaN/inf: :meth:`~hyperkd.data.store.ChipStore.nonfinite_chips`).
    """
    if not isinstance(store, ChipStore):
        store = ChipStore(store)
    m = store.manifest
    shards = m["shards"]
    rows_by_shard: dict[int, list[int]] = {}
    for c in store.chips:
        rows_by_shard.setdefault(int(c["shard"]), []).append(int(c["row"]))

    n_valid = 0
    n_pix = 0
    class_counts: dict[str, np.ndarray] = {}
    cont: dict[str, dict[str, float]] = {}
    for name, spec in store.labels.items():
        if spec.kind == "class":
            class_counts[name] = np.zeros(len(spec.classes) + 1, dtype=np.int64)  # last: other / ignore
        else:
            cont[name] = {"n": 0, "nan": 0, "sum": 0.0, "min": np.inf, "max": -np.inf}
    for sidx, rows in sorted(rows_by_shard.items()):
        valid = np.asarray(store.shard_array(sidx, "valid")[rows]).astype(bool)
        n_valid += int(valid.sum())
        n_pix += valid.size
        for name, spec in store.labels.items():
            vals = np.asarray(store.shard_array(sidx, name)[rows])[valid]
            if spec.kind == "class":
                k = len(spec.classes)
                inside = (vals >= 0) & (vals < k)
                counts = class_counts[name]
                counts[:k] += np.bincount(vals[inside].astype(np.int64), minlength=k)[:k]
                counts[k] += int((~inside).sum())
            else:
                acc = cont[name]
                finite = np.isfinite(vals)
                acc["nan"] += int((~finite).sum())
                if finite.any():
                    v = vals[finite].astype(np.float64)
                    acc["n"] += int(v.size)
                    acc["sum"] += float(v.sum())
                    acc["min"] = min(acc["min"], float(v.min()))
                    acc["max"] = max(acc["max"], float(v.max()))

    labels: dict[str, Any] = {}
    for name, spec in store.labels.items():
        d: dict[str, Any] = {"kind": spec.kind, "description": spec.description}
        if spec.kind == "class":
            counts = class_counts[name]
            d["classes"] = {c: int(n) for c, n in zip(spec.classes, counts[:-1], strict=True)}
            d["unlabelled"] = int(counts[-1])
            d["ignore_index"] = spec.ignore_index
        else:
            acc = cont[name]
            total = acc["n"] + acc["nan"]
            d.update(
                unit=spec.unit,
                min=None if acc["n"] == 0 else acc["min"],
                mean=None if acc["n"] == 0 else acc["sum"] / acc["n"],
                max=None if acc["n"] == 0 else acc["max"],
                nan_fraction=acc["nan"] / total if total else None,
            )
        labels[name] = d

    sensor = store.sensor
    stats = dict(m.get("stats") or {})
    if stats.get("mean") is not None:
        mean, std = np.asarray(stats["mean"]), np.asarray(stats["std"])
        stats.update(
            mean_range=[float(mean.min()), float(mean.max())],
            std_range=[float(std.min()), float(std.max())],
        )
    attrs = m.get("attrs", {}) or {}
    return {
        "path": str(store.root),
        "synthetic": store.synthetic,
        "chips": len(store),
        "chip_size": store.chip_size,
        "dtype": m.get("dtype"),
        "unit": m.get("unit"),
        "shards": len(shards),
        "bytes": sum(p.stat().st_size for p in store.root.glob("*") if p.is_file()),
        "valid_fraction": n_valid / n_pix if n_pix else None,
        "sensor": {
            "name": sensor.name,
            "selection": sensor.selection,
            "num_bands": sensor.num_bands,
            "min_nm": min(sensor.centers_nm),
            "max_nm": max(sensor.centers_nm),
            "gsd_m": sensor.gsd_m,
            "bands": sensor.band_names,
        },
        "stats": stats,
        "labels": labels,
        "provenance": {k: attrs[k] for k in _PROVENANCE_KEYS if k in attrs},
        "nonfinite": store.nonfinite_chips(),  # chips holding NaN/inf (read as no data)
    }
