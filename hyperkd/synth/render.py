"""How a sensor records a scene: spectral response functions, ground footprint, PSF and noise (:func:`render`).

A scene that knows its pixel size (:attr:`Scene.gsd_m`) is rendered for each sensor at the
sensor's own GSD: a sensor with coarser pixels sees the area-weighted mean of the scene over each
of its pixel footprints (:mod:`hyperkd.core.ground`), before its PSF and noise, which act on its
own pixels; :func:`labels_at` gives the labels on that grid. A sensor finer than the scene is
refused (the detail would be invented).
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from hyperkd.core.errors import DataError, HyperKDError
from hyperkd.core.ground import resample_footprints, square_weights
from hyperkd.core.sensors import FWHM_TO_SIGMA, Band, Sensor
from hyperkd.synth.draws import rng_for
from hyperkd.synth.instrument import Instrument, atmospheric_transmittance
from hyperkd.synth.scene import Scene, mix_slots


def _explicit_range(band: Any) -> tuple[float, float] | None:
    return None if band.range_nm is None else (float(band.range_nm[0]), float(band.range_nm[1]))


EXTEND_NM = 100.0
"""How far (nm) beyond each end of the spectral library a band centre may lie. Such a band sees
the library *extended by its edge values*: reflectance held constant below the first and above
the last library wavelength (400 and 2450 nm for earthlib), so a sensor reaching 381-2500 nm
renders every band. Farther out (thermal, UV) there is no surface reflectance to extend."""


def extended_bands(sensor: Sensor, wavelengths_nm: np.ndarray) -> list[str]:
    """Names of ``sensor``'s bands centred outside ``wavelengths_nm`` (rendered by the :data:`EXTEND_NM` rule)."""
    wl = np.asarray(wavelengths_nm, dtype=np.float64)
    return [b.name for b in sensor.bands if not wl[0] <= b.center_nm <= wl[-1]]


def spectral_response(
    sensor: Sensor, wavelengths_nm: np.ndarray, mode: str = "auto", step_nm: float = 0.5
) -> np.ndarray:
    """Band responses (C, L) that turn spectra on ``wavelengths_nm`` into the sensor's bands.

    Each band's response is evaluated on a fine ``step_nm`` grid — a Gaussian of the band's
    FWHM, or flat-top over its explicit range (``mode="auto"`` picks the range when the band
    has one) — and folded back onto ``wavelengths_nm`` through linear interpolation, so
    ``spectra @ R.T`` equals interpolating the spectra to the fine grid and integrating
    there. Rows sum to 1. The part of a response beyond either end of the grid is given to
    that end's sample (the spectra held constant there), which lets bands centred up to
    :data:`EXTEND_NM` outside the grid render; bands centred farther out raise
    :class:`DataError`.
    """
    wl = np.asarray(wavelengths_nm, dtype=np.float64)
    out = np.zeros((sensor.num_bands, wl.size), dtype=np.float64)
    for i, band in enumerate(sensor.bands):
        if not wl[0] - EXTEND_NM <= band.center_nm <= wl[-1] + EXTEND_NM:
            raise DataError(
                f"sensor {sensor.name!r} band {band.name!r} is centred at {band.center_nm:g} nm, more than "
                f"{EXTEND_NM:g} nm outside the synthetic spectral library ({wl[0]:g}-{wl[-1]:g} nm), where "
                "there is no surface reflectance to render; choose a band selection without it"
            )
        rng_ = _explicit_range(band)
        use_range = rng_ is not None and mode in ("auto", "range")
        if mode == "range" and rng_ is None:
            rng_ = band.range
            use_range = True
        if use_range:
            assert rng_ is not None
            lo, hi = rng_
            fine = np.arange(lo + step_nm / 2, hi, step_nm)
            resp = np.ones_like(fine)
        else:
            sigma = band.fwhm_nm * FWHM_TO_SIGMA
            fine = np.arange(band.center_nm - 4 * sigma, band.center_nm + 4 * sigma + step_nm, step_nm)
            resp = np.exp(-0.5 * ((fine - band.center_nm) / sigma) ** 2)
        if fine.size == 0:
            fine, resp = np.array([band.center_nm]), np.array([1.0])
        pos = np.searchsorted(wl, fine).clip(1, wl.size - 1)
        t = ((fine - wl[pos - 1]) / (wl[pos] - wl[pos - 1])).clip(0.0, 1.0)
        np.add.at(out[i], pos - 1, resp * (1.0 - t))
        np.add.at(out[i], pos, resp * t)
        out[i] /= out[i].sum()
    return out


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of (C, H, W) float32 with mirrored borders (the PSF)."""
    if sigma <= 0:
        return img
    r = max(1, math.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k = (k / k.sum()).astype(np.float32)
    mode = "reflect" if min(img.shape[1:]) > r else "edge"
    p = np.pad(img, ((0, 0), (r, r), (0, 0)), mode=mode)
    h, w = img.shape[1:]
    acc = k[0] * p[:, 0:h]
    for j in range(1, 2 * r + 1):
        acc += k[j] * p[:, j : j + h]
    p = np.pad(acc, ((0, 0), (0, 0), (r, r)), mode=mode)
    acc = k[0] * p[:, :, 0:w]
    for j in range(1, 2 * r + 1):
        acc += k[j] * p[:, :, j : j + w]
    return acc


@functools.lru_cache(maxsize=32)
def _response_cached(bands: tuple[Band, ...], name: str, grid: bytes, mode: str) -> np.ndarray:
    sensor = Sensor(name=name, bands=bands, gsd_m=1.0)
    return spectral_response(sensor, np.frombuffer(grid, dtype=np.float64), mode)


def band_response(sensor: Sensor, wavelengths_nm: np.ndarray, mode: str) -> np.ndarray:
    grid = np.ascontiguousarray(wavelengths_nm, dtype=np.float64).tobytes()
    return _response_cached(tuple(sensor.bands), sensor.name, grid, mode)


def _per_band(resp: np.ndarray, spectra: np.ndarray) -> np.ndarray:
    """``resp @ spectra.T`` in float64, (C, L) x (K, L) -> (C, K), one band at a time.

    A BLAS matrix product picks its kernels and blocking by the matrix shapes, so a band's
    float32 values came out differently (by an ulp) depending on how many other bands were
    rendered with it. Here each band is a sum over its own (K, L) products (numpy's pairwise
    sum over the contiguous last axis), so a band selection keeps its bands' values exactly.
    """
    spectra = np.ascontiguousarray(spectra, dtype=np.float64)
    out = np.empty((resp.shape[0], spectra.shape[0]), dtype=np.float64)
    for b in range(resp.shape[0]):
        out[b] = (resp[b] * spectra).sum(axis=1)
    return out


def footprint(scene: Scene, sensor: Sensor) -> np.ndarray | None:
    """``(N, S)`` footprint weights from the scene's ``S`` pixels to ``sensor``'s ``N`` over the same
    ground, or ``None`` when the sensor records the scene pixel for pixel (same GSD, or a scene
    without :attr:`Scene.gsd_m`). Refuses a sensor finer than the scene, or a scene whose ground is
    not a whole number of the sensor's pixels, in one line."""
    g = scene.gsd_m
    if g is None or math.isclose(sensor.gsd_m, g, rel_tol=1e-9):
        return None
    if sensor.gsd_m < g:
        raise DataError(
            f"synth: sensor {sensor.name!r} has {sensor.gsd_m:g} m pixels, finer than the scene's {g:g} m; "
            "generate the scene at the finest sensor's GSD (synthesize does) so no detail is invented"
        )
    try:
        return square_weights(scene.size, g, sensor.gsd_m, f"synth: scene for {sensor.name!r}")
    except HyperKDError as exc:
        raise DataError(str(exc)) from None


def labels_at(scene: Scene, sensor: Sensor, kinds: Mapping[str, str] | None = None) -> dict[str, np.ndarray]:
    """The scene's labels on ``sensor``'s pixel grid (the scene's own when :func:`footprint` is ``None``).

    ``kinds`` maps a label layer to ``"class"`` (default: the area-weighted majority over each
    sensor pixel's footprint, ties to the lower class) or ``"continuous"`` (the area-weighted
    mean of the finite values; NaN where they cover less than half the footprint, the rule the
    scene itself uses for soil carbon).
    """
    w = footprint(scene, sensor)
    if w is None:
        return dict(scene.labels)
    out: dict[str, np.ndarray] = {}
    for name, lab in scene.labels.items():
        if (kinds or {}).get(name, "class") == "class":
            values = np.unique(lab)
            share = np.stack([resample_footprints((lab == v).astype(np.float64), w, w) for v in values])
            out[name] = values[share.argmax(0)].astype(lab.dtype)
        else:
            ok = np.isfinite(lab)
            area = resample_footprints(ok.astype(np.float64), w, w)
            total = resample_footprints(np.where(ok, lab, 0.0).astype(np.float64), w, w)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[name] = np.where(area >= 0.5, total / area, np.nan).astype(lab.dtype)
    return out


def render(scene: Scene, sensor: Sensor, instrument: Instrument | None = None) -> np.ndarray:
    """The scene as ``sensor`` records it: (C, N, N) float32 surface reflectance.

    Spectral response -> ground footprint (``N = S`` unless the scene's pixel size is known and
    the sensor's is coarser, see :func:`footprint`) -> PSF -> noise (see :class:`Instrument`).
    Deterministic: noise for a band depends only on the scene's seed and index, the sensor name
    and the band name.
    """
    ins = instrument or Instrument()
    w = footprint(scene, sensor)
    resp = band_response(sensor, scene.wavelengths_nm, ins.srf)
    table = _per_band(resp, scene.endmembers).astype(np.float32)  # (C, K)
    c = sensor.num_bands
    img = mix_slots(table, scene.slot_index, scene.slot_weight).reshape(c, scene.size, scene.size)
    if w is not None:  # the rendering is linear: aggregating reflectance = rendering aggregated spectra
        img = resample_footprints(img, w, w)
    s = img.shape[-1]
    img = _blur(np.ascontiguousarray(img, dtype=np.float32), ins.psf_sigma_px)
    if not ins.noise:
        return img
    snr = ins.band_snr(sensor)
    atmosphere = atmospheric_transmittance(scene.wavelengths_nm)
    trans = _per_band(resp, atmosphere[None])[:, 0] if ins.atmosphere else np.ones(c)
    z = np.empty((c, s, s), dtype=np.float32)
    stripes = np.empty((c, 1, s), dtype=np.float32)
    sensor_key = zlib.crc32(sensor.name.encode())
    for b, band in enumerate(sensor.bands):
        rng = rng_for(scene.seed, scene.index, 0x5E, sensor_key, zlib.crc32(band.name.encode()))
        rng.standard_normal(dtype=np.float32, out=stripes[b, 0])
        rng.standard_normal(dtype=np.float32, out=z[b])
    rho = img
    if ins.stripe > 0:
        stripes *= np.float32(ins.stripe)
        stripes += np.float32(1.0)
        rho *= stripes
    ref = ins.reference_reflectance
    t = trans.astype(np.float32)[:, None, None]
    sigma = rho * (t / np.float32(ref))  # signal relative to the reference
    np.maximum(sigma, 0.0, out=sigma)
    sigma *= np.float32(1.0 - ins.read_fraction)
    sigma += np.float32(ins.read_fraction)
    np.sqrt(sigma, out=sigma)
    sigma *= (ref / (snr[:, None, None] * trans[:, None, None])).astype(np.float32)
    sigma *= z
    rho += sigma
    return rho
