"""Scene geometry: field parcels, towns, roads and water on a supersampled grid.

:func:`draw_layout` draws every unit (a parcel, urban lot, street, road or water body) as
an integer map ``supersample`` times finer than the output pixels; :func:`pixel_units`
turns it into the (up to three) units covering each output pixel with their areal
fractions, which is how sub-pixel edges become linearly mixed pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hyperkd.synth.config import PARCEL_COVERS, RegionSpec, SceneConfig
from hyperkd.synth.draws import draw_uniform, smooth_field

PARCEL, LOT, STREET, ROAD, WATER = 0, 1, 2, 3, 4
"""Unit kinds: a unit's layout key is ``kind << 40 | instance``."""
KIND_NAMES = ("parcel", "lot", "street", "road", "water")


@dataclass
class Layout:
    """A scene's geometry on the supersampled grid: each cell's unit kind and instance."""

    kind: np.ndarray  # (N, N) int8
    inst: np.ndarray  # (N, N) int64
    parcel_class: np.ndarray  # cover index per parcel instance
    parcel_crop: np.ndarray  # crop index (1-based) per parcel instance, 0 if none
    theta: float
    has_water: bool
    has_urban: bool
    n_roads: int


def draw_layout(rng: np.random.Generator, cfg: SceneConfig, region: RegionSpec, size: int) -> Layout:
    """Draw the scene's geometry on the supersampled grid."""
    f = cfg.supersample
    n = size * f
    c1 = (np.arange(n, dtype=np.float64) + 0.5) / f - size / 2.0
    X, Y = np.meshgrid(c1, c1)
    R = 0.75 * size

    # field parcels: rotated columns, each cut into rows, some split in two
    theta = 0.0 if rng.random() < 0.35 else float(rng.uniform(-math.pi / 4, math.pi / 4))
    ct, st = math.cos(theta), math.sin(theta)
    u = X * ct + Y * st
    v = -X * st + Y * ct
    p0, p1 = cfg.parcel_px
    widths: list[float] = []
    start = -R - float(rng.uniform(0, p1))
    while start + sum(widths) < R:
        widths.append(draw_uniform(rng, (p0, p1)))
    col_edges = start + np.concatenate([[0.0], np.cumsum(widths)])
    n_cols = len(widths)
    rows: list[np.ndarray] = []
    for _ in range(n_cols):
        aspect = float(rng.uniform(1.0, 2.5))
        lengths: list[float] = []
        rstart = -R - float(rng.uniform(0, p1 * aspect))
        while rstart + sum(lengths) < R:
            lengths.append(draw_uniform(rng, (p0, p1)) * aspect)
        rows.append(rstart + np.concatenate([[0.0], np.cumsum(lengths)]))
    max_rows = max(len(r) - 1 for r in rows)
    row_edges = np.full((n_cols, max_rows + 1), np.inf)
    for i, r in enumerate(rows):
        row_edges[i, : len(r)] = r
    col = (np.searchsorted(col_edges, u, side="right") - 1).clip(0, n_cols - 1)
    row = np.zeros_like(col)
    for i in range(n_cols):
        m = col == i
        row[m] = (np.searchsorted(rows[i], v[m], side="right") - 1).clip(0, len(rows[i]) - 2)
    n_cells = n_cols * max_rows
    cell = col * max_rows + row
    split = rng.random(n_cells) < 0.2
    split_pos = rng.uniform(0.35, 0.65, n_cells)
    split_u = rng.random(n_cells) < 0.5
    u_rel = (u - col_edges[col]) / (col_edges[col + 1] - col_edges[col])
    lo = row_edges[col, row]
    v_rel = (v - lo) / (row_edges[col, row + 1] - lo)
    side = np.where(split_u[cell], u_rel, v_rel) > split_pos[cell]
    inst = cell + n_cells * (split[cell] & side)
    kind = np.zeros((n, n), dtype=np.int8)

    # land cover and crop of every possible parcel instance (drawn for all, so presence
    # does not shift the random stream)
    covers = cfg.cover_weights_in(region)
    crops = cfg.crop_weights_in(region)
    cover_names = [k for k in PARCEL_COVERS if covers[k] > 0]
    cw = np.array([covers[k] for k in cover_names])
    parcel_class = np.array(
        [
            PARCEL_COVERS.index(cover_names[i])
            for i in rng.choice(len(cover_names), 2 * n_cells, p=cw / cw.sum())
        ]
    )
    crop_names = [c.name for c in cfg.crops]
    crop_w = np.array([crops[c] for c in crop_names], dtype=np.float64)
    if crop_w.sum() > 0:
        parcel_crop = 1 + rng.choice(len(crop_names), 2 * n_cells, p=crop_w / crop_w.sum())
    else:
        parcel_crop = np.zeros(2 * n_cells, dtype=np.int64)
    parcel_crop = np.where(parcel_class == PARCEL_COVERS.index("cropland"), parcel_crop, 0)

    # built-up area: a blob with a rotated street grid, blocks split into lots
    has_urban = bool(rng.random() < cfg.p_urban)
    if has_urban:
        us = cfg.urban
        cx, cy = rng.uniform(-size / 2, size / 2, 2)
        radius = draw_uniform(rng, us.radius) * size
        blob = np.hypot(X - cx, Y - cy) / radius + 0.3 * _upsample_field(rng, size, f, size / 6)
        urban = blob < 1.0
        tu = theta if rng.random() < 0.5 else float(rng.uniform(-math.pi / 2, math.pi / 2))
        pu, pv = draw_uniform(rng, us.block_px), draw_uniform(rng, us.block_px)
        sw = draw_uniform(rng, us.street_px)
        uu = X * math.cos(tu) + Y * math.sin(tu) + rng.uniform(0, pu)
        vv = -X * math.sin(tu) + Y * math.cos(tu) + rng.uniform(0, pv)
        iu, iv = np.floor(uu / pu).astype(np.int64), np.floor(vv / pv).astype(np.int64)
        fu, fv = uu - iu * pu, vv - iv * pv
        iu0, iv0 = math.floor(-1.5 * size / pu) - 1, math.floor(-1.5 * size / pv) - 1
        n_iu, n_iv = int(3 * size / pu) + 4, int(3 * size / pv) + 4
        iu_o, iv_o = (iu - iu0).clip(0, n_iu - 1), (iv - iv0).clip(0, n_iv - 1)
        lots_u = rng.integers(1, 4, (n_iu, n_iv))
        lots_v = rng.integers(1, 4, (n_iu, n_iv))
        su, sv = fu < sw, fv < sw
        nu, nv = lots_u[iu_o, iv_o], lots_v[iu_o, iv_o]
        lu = np.floor((fu - sw) / (pu - sw) * nu).astype(np.int64).clip(0, 2)
        lv = np.floor((fv - sw) / (pv - sw) * nv).astype(np.int64).clip(0, 2)
        lot = ((iu_o * n_iv + iv_o) * 3 + lu) * 3 + lv
        street_id = np.where(su, 2 * iu_o, 2 * iv_o + 1)
        is_street = urban & (su | sv)
        is_lot = urban & ~(su | sv)
        kind[is_street], inst[is_street] = STREET, street_id[is_street]
        kind[is_lot], inst[is_lot] = LOT, lot[is_lot]

    # water: a lake (blob) or a meandering river
    has_water = bool(rng.random() < cfg.p_water)
    if has_water:
        ws = cfg.water
        if rng.random() < ws.lake:
            cx, cy = rng.uniform(-size / 2, size / 2, 2)
            radius = draw_uniform(rng, ws.lake_radius) * size
            water = np.hypot(X - cx, Y - cy) / radius + 0.4 * _upsample_field(rng, size, f, size / 6) < 1.0
        else:
            phi = float(rng.uniform(0, math.pi))
            a = X * math.cos(phi) + Y * math.sin(phi)
            b = -X * math.sin(phi) + Y * math.cos(phi)
            centre = (
                rng.uniform(-size / 4, size / 4)
                + rng.uniform(0, size / 8)
                * np.sin(2 * math.pi * a / rng.uniform(size / 2, 2 * size) + rng.uniform(0, 2 * math.pi))
                + rng.uniform(0, size / 20)
                * np.sin(2 * math.pi * a / rng.uniform(size / 6, size / 3) + rng.uniform(0, 2 * math.pi))
            )
            water = np.abs(b - centre) < draw_uniform(rng, ws.river_px) / 2
        kind[water], inst[water] = WATER, 0

    # rural roads: most along parcel boundaries, some at random angles (drawn over all)
    n_roads = int(rng.integers(cfg.roads[0], cfg.roads[1] + 1))
    for i in range(n_roads):
        width = float(rng.uniform(0.3, 1.0))
        if rng.random() < 0.7:
            dist = u - col_edges[int(rng.integers(0, len(col_edges)))]
        else:
            ang = float(rng.uniform(0, math.pi))
            dist = -X * math.sin(ang) + Y * math.cos(ang) - rng.uniform(-size / 2, size / 2)
        road = np.abs(dist) < width / 2
        kind[road], inst[road] = ROAD, i
    return Layout(kind, inst, parcel_class, parcel_crop, theta, has_water, has_urban, n_roads)


def _upsample_field(rng: np.random.Generator, size: int, f: int, scale: float) -> np.ndarray:
    """A smooth field drawn at pixel resolution and bilinearly upsampled f times."""
    g = smooth_field(rng, size, scale).astype(np.float64)
    pos = (np.arange(size * f) + 0.5) / f - 0.5
    i0 = np.floor(pos).astype(int).clip(0, size - 1)
    i1 = (i0 + 1).clip(0, size - 1)
    t = (pos - i0).clip(0, 1)
    rows = g[i0] * (1 - t)[:, None] + g[i1] * t[:, None]
    return rows[:, i0] * (1 - t)[None, :] + rows[:, i1] * t[None, :]


def pixel_units(key: np.ndarray, size: int, f: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``m`` units covering most of each output pixel: keys (m, P) and areal fractions (m, P).

    ``key`` is the (size*f, size*f) supersampled unit map. Fractions are sub-pixel counts
    over f*f, renormalised over the kept units (a fourth unit at a junction is dropped).
    Ties go to the smaller key, so the result is deterministic.
    """
    p, ff = size * size, f * f
    s = np.sort(key.reshape(size, f, size, f).transpose(0, 2, 1, 3).reshape(p, ff), axis=1)
    first = np.ones(s.shape, dtype=bool)
    first[:, 1:] = s[:, 1:] != s[:, :-1]
    starts = np.flatnonzero(first.ravel())
    counts = np.zeros(p * ff, dtype=np.int32)
    counts[starts] = np.diff(np.append(starts, p * ff))  # runs never cross rows: each row starts one
    counts = counts.reshape(p, ff)
    rows = np.arange(p)
    keys = np.empty((m, p), dtype=key.dtype)
    frac = np.zeros((m, p), dtype=np.float32)
    for j in range(m):
        best = counts.argmax(axis=1)
        c = counts[rows, best]
        keys[j] = np.where(c > 0, s[rows, best], keys[0] if j else s[rows, best])
        frac[j] = c
        counts[rows, best] = 0
    frac /= frac.sum(axis=0, keepdims=True)
    return keys, frac
